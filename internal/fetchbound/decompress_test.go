package fetchbound

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
)

// maxBatchBytes is the absolute bound these tests hold the decompressor
// to: the worker's.
const maxBatchBytes = 16 << 20

// commandsLike is n bytes of lock commands: JSON of the same shape with a
// fresh request id each, which compresses about as a real batch does.
func commandsLike(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `{"v":1,"request_id":"%016x%016x","operation":"acquire","lock_name":"orders/%d","owner_id":"billing-7f9c","reply_to":"locks.replies.billing"}`,
			rng.Uint64(), rng.Uint64(), i*7919%100000)
	}
	return b.Bytes()[:n]
}

// compressed is raw compressed with codec as a producer does; xerial
// frames snappy blocks as the Java client does.
func compressed(t testing.TB, codec kgo.CompressionCodec, raw []byte) []byte {
	t.Helper()
	c, err := kgo.DefaultCompressor(codec)
	require.NoError(t, err)
	var buf bytes.Buffer
	out, _ := c.Compress(&buf, raw)
	return bytes.Clone(out)
}

func xerial(raw []byte) []byte {
	out := append(bytes.Clone(xerialPrefix), 0, 0, 0, 1, 0, 0, 0, 1)
	for len(raw) > 0 {
		n := min(len(raw), 32<<10)
		block := s2.EncodeSnappy(nil, raw[:n])
		out = binary.BigEndian.AppendUint32(out, uint32(len(block)))
		out = append(out, block...)
		raw = raw[n:]
	}
	return out
}

var codecs = []struct {
	name  string
	codec kgo.CompressionCodecType
	pack  func(testing.TB, []byte) []byte
}{
	{"gzip", kgo.CodecGzip, func(t testing.TB, b []byte) []byte { return compressed(t, kgo.GzipCompression(), b) }},
	{"snappy", kgo.CodecSnappy, func(t testing.TB, b []byte) []byte { return compressed(t, kgo.SnappyCompression(), b) }},
	{"xerial", kgo.CodecSnappy, func(_ testing.TB, b []byte) []byte { return xerial(b) }},
	{"lz4", kgo.CodecLz4, func(t testing.TB, b []byte) []byte { return compressed(t, kgo.Lz4Compression(), b) }},
	{"zstd", kgo.CodecZstd, func(t testing.TB, b []byte) []byte { return compressed(t, kgo.ZstdCompression(), b) }},
	{"zstd stream", kgo.CodecZstd, func(t testing.TB, b []byte) []byte { return zstdStream(t, b) }},
}

// zstdStream is raw written through a streaming zstd writer, as Java's
// producer writes a batch: past its first block, the frame does not
// declare its size. opts are the writer's (a window within a small bound).
func zstdStream(t testing.TB, raw []byte, opts ...zstd.EOption) []byte {
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, opts...)
	require.NoError(t, err)
	_, err = w.Write(raw)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// What producers send reads back whole, for every codec, from a single
// small command to a batch of a megabyte.
func TestDecompressorReadsBatches(t *testing.T) {
	d := newDecompressor(maxBatchBytes)
	for _, c := range codecs {
		for _, n := range []int{150, 64 << 10, 1 << 20} {
			raw := commandsLike(n)
			for range 2 { // pooled readers are reused
				got, err := d.Decompress(c.pack(t, raw), c.codec)
				require.NoError(t, err, "%s %d", c.name, n)
				require.Equal(t, raw, got, "%s %d", c.name, n)
			}
		}
	}
	raw := commandsLike(100)
	got, err := d.Decompress(raw, kgo.CodecNone)
	require.NoError(t, err)
	require.Equal(t, raw, got)
}

// A batch compressed past Ratio, or inflating past the absolute
// bound, is refused with kgo.ErrMaxDecompress, which kgo reports as
// kgo.ErrDecompressTooLarge; one just within both is read.
func TestDecompressorBounds(t *testing.T) {
	d := newDecompressor(maxBatchBytes)
	for _, c := range codecs {
		if c.codec == kgo.CodecSnappy || c.codec == kgo.CodecLz4 {
			continue // they compress at most about 21- and 255-fold; snappy's declared lengths are tested below
		}
		src := c.pack(t, make([]byte, 1<<20))
		_, err := d.Decompress(src, c.codec)
		require.ErrorIs(t, err, kgo.ErrMaxDecompress, "%s: 1 MiB of zeros in %d bytes", c.name, len(src))
	}
	small := newDecompressor(16 << 10)
	for _, c := range codecs {
		_, err := small.Decompress(c.pack(t, commandsLike(16<<10+1)), c.codec)
		require.ErrorIs(t, err, kgo.ErrMaxDecompress, c.name)
		got, err := small.Decompress(c.pack(t, commandsLike(16<<10)), c.codec)
		require.NoError(t, err, c.name)
		require.Len(t, got, 16<<10, c.name)
	}

	// A snappy block declares its length first: one declaring more than
	// the bound is refused before anything is allocated for it.
	lying := binary.AppendUvarint(nil, 1<<30)
	lying = append(lying, 0)
	_, err := d.Decompress(lying, kgo.CodecSnappy)
	require.ErrorIs(t, err, kgo.ErrMaxDecompress)
	chunks := xerial(commandsLike(20 << 10))
	_, err = small.Decompress(chunks, kgo.CodecSnappy)
	require.ErrorIs(t, err, kgo.ErrMaxDecompress, "xerial chunks summing past the bound")

	// A zstd frame whose window exceeds the absolute bound cannot be
	// decoded within it.
	// (Encoders shrink the window to a small input: the frame is made by
	// hand. Magic, a descriptor without content size, a 32 MiB window,
	// then one last raw block of three bytes.)
	frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 15 << 3, 3<<3 | 1, 0, 0, 'a', 'b', 'c'}
	got, err := newDecompressor(64<<20).Decompress(frame, kgo.CodecZstd)
	require.NoError(t, err, "the frame is valid")
	require.Equal(t, []byte("abc"), got)
	_, err = d.Decompress(frame, kgo.CodecZstd)
	require.ErrorIs(t, err, kgo.ErrMaxDecompress)
}

// FuzzDecompressor holds the decompressor to kgo's own, given any
// bytes under any codec: what it reads is what kgo reads, within its
// bounds, and it refuses nothing kgo reads but what is past its bounds
// (confirmed by pastBound; kgo's default, bounded at 2 GiB, is not asked
// then, as it could take that much memory to answer), or what kgo would
// make records of taking more than the bound (confirmed by
// kgoRecordsMemory). Every refusal is kgo.ErrMaxDecompress, past the
// bounds or not.
func FuzzDecompressor(f *testing.F) {
	for _, c := range codecs {
		f.Add(uint8(c.codec), c.pack(f, commandsLike(300)))
		f.Add(uint8(c.codec), c.pack(f, make([]byte, 4<<10)))
		f.Add(uint8(c.codec), c.pack(f, make([]byte, 80<<10)))
	}
	f.Add(uint8(kgo.CodecSnappy), []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0})
	f.Add(uint8(7), []byte("x"))
	const limit = 64 << 10
	ours := newDecompressor(limit)
	theirs := kgo.DefaultDecompressor()
	f.Fuzz(func(t *testing.T, codec uint8, src []byte) {
		ct := kgo.CompressionCodecType(codec % 6)
		bound := min(limit, Ratio*len(src))
		got, err := ours.Decompress(bytes.Clone(src), ct)
		if err != nil {
			require.ErrorIs(t, err, kgo.ErrMaxDecompress, "codec %d: every refusal lets the batch be skipped", ct)
			if errors.Is(err, errRecordsPastBound) {
				// Read within the bound: kgo reads it too, and would
				// make its records into more than the bound.
				want, wantErr := theirs.Decompress(bytes.Clone(src), ct)
				require.NoError(t, wantErr)
				require.Greater(t, kgoRecordsMemory(want), bound, "codec %d: refused for what its records take", ct)
				return
			}
			if pastBound(src, ct, limit, bound) {
				return
			}
			want, wantErr := theirs.Decompress(bytes.Clone(src), ct)
			require.Error(t, wantErr, "codec %d: kgo reads %d bytes within the bounds, ours refuses: %v", ct, len(want), err)
			return
		}
		want, wantErr := theirs.Decompress(bytes.Clone(src), ct)
		require.NoError(t, wantErr)
		require.True(t, bytes.Equal(want, got), "kgo reads %q, ours %q", want, got) // nil and empty alike
		require.LessOrEqual(t, len(got), max(len(src), bound))
	})
}

// pastBound tells, by other means than the decompressor's, whether src
// decompresses past bound or needs more than max to decode: a stream read
// to bound+1 bytes, or the lengths a snappy or zstd header declares.
func pastBound(src []byte, codec kgo.CompressionCodecType, max, bound int) bool {
	var r io.Reader
	switch codec {
	case kgo.CodecGzip:
		zr, err := gzip.NewReader(bytes.NewReader(src))
		if err != nil {
			return false
		}
		r = zr
	case kgo.CodecLz4:
		r = lz4.NewReader(bytes.NewReader(src))
	case kgo.CodecZstd:
		var h zstd.Header
		if h.Decode(src) == nil && (h.HasFCS && h.FrameContentSize > uint64(bound) || h.WindowSize > uint64(max)) {
			return true
		}
		zr, err := zstd.NewReader(bytes.NewReader(src), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(max)))
		if err != nil {
			return false
		}
		defer zr.Close()
		n, err := io.Copy(io.Discard, io.LimitReader(zr, int64(bound)+1))
		return n > int64(bound) || errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded)
	case kgo.CodecSnappy:
		total := 0
		blocks := [][]byte{src}
		if len(src) > 16 && bytes.HasPrefix(src, xerialPrefix) {
			blocks = nil
			for rest := src[16:]; len(rest) >= 4; {
				size := int(binary.BigEndian.Uint32(rest))
				rest = rest[4:]
				if size < 0 || size > len(rest) {
					return false
				}
				blocks, rest = append(blocks, rest[:size]), rest[size:]
			}
		}
		for _, b := range blocks {
			n, err := s2.DecodedLen(b)
			if err != nil {
				return false
			}
			total += n
		}
		return total > bound
	default:
		return false
	}
	n, _ := io.Copy(io.Discard, io.LimitReader(r, int64(bound)+1))
	return n > int64(bound)
}

// A reader left in the middle of a batch (refused past the bound) is not
// reused: a reset flate reader could still resolve the next batch's
// back-reference into the abandoned batch's window, and hand one batch's
// bytes to another. The corrupt batch here (found by the fuzzer) refers
// back past its own start.
func TestAbandonedReaderIsNotReused(t *testing.T) {
	corrupt := []byte("\x1f\x8b\b\x00000000\xec\xc0\x01\r\x00\x00\x00\x010\xfdS\xdb\xd4\xf0%000000000000000000000000000000000000000")
	d := newDecompressor(64 << 10)
	_, err := d.Decompress(compressed(t, kgo.GzipCompression(), make([]byte, 80<<10)), kgo.CodecGzip)
	require.ErrorIs(t, err, kgo.ErrMaxDecompress)
	_, err = d.Decompress(corrupt, kgo.CodecGzip)
	require.ErrorAs(t, err, new(flate.CorruptInputError), "the batch reads as corrupt, as with a fresh reader")
}

// corruptions are batches of each codec that the decompressor cannot
// decompress: corrupt ones, which a broker that does not decompress what
// it is produced (kfake, the embedded broker) passes on from a faulty or
// hostile producer, and ones Java's readers accept (lz4's content checksum
// is not checked there, GZIPInputStream ignores bytes after a member it
// cannot read as one), which pass Apache Kafka's broker too.
func corruptions(t testing.TB) []struct {
	name  string
	codec kgo.CompressionCodecType
	src   []byte
} {
	raw := commandsLike(4 << 10)
	gz := compressed(t, kgo.GzipCompression(), raw)
	lz := compressed(t, kgo.Lz4Compression(), raw)
	lz[len(lz)-1] ^= 0xff // the frame's content checksum
	sn := compressed(t, kgo.SnappyCompression(), raw)
	zs := compressed(t, kgo.ZstdCompression(), raw)
	return []struct {
		name  string
		codec kgo.CompressionCodecType
		src   []byte
	}{
		{"gzip cut short", kgo.CodecGzip, gz[:len(gz)-1]},
		{"gzip followed by a valid header and junk", kgo.CodecGzip, append(bytes.Clone(gz), gz[:10]...)},
		{"gzip followed by junk", kgo.CodecGzip, append(bytes.Clone(gz), "junk"...)},
		{"gzip member with a reserved flag bit", kgo.CodecGzip, append(bytes.Clone(gz), kafkatest.ReservedGzipFlag(gz)...)},
		{"lz4 content checksum", kgo.CodecLz4, lz},
		{"snappy cut short", kgo.CodecSnappy, sn[:len(sn)-1]},
		{"xerial chunk cut short", kgo.CodecSnappy, xerial(raw)[:40]},
		{"zstd cut short", kgo.CodecZstd, zs[:len(zs)-1]},
		{"codec 5", 5, gz},
	}
}

// A batch that cannot be decompressed at all is refused as one past the
// bound (kgo.ErrMaxDecompress, the underlying error kept): kgo reports that
// one as kgo.ErrDecompressTooLarge, with the batch's offsets, and the
// reader skips it; any other error kgo keeps, fetching the batch again
// forever.
func TestDecompressorRefusesUnreadableBatches(t *testing.T) {
	d := newDecompressor(maxBatchBytes)
	for _, c := range corruptions(t) {
		_, err := d.Decompress(c.src, c.codec)
		require.ErrorIs(t, err, kgo.ErrMaxDecompress, c.name)
		_, kgoErr := kgo.DefaultDecompressor().Decompress(bytes.Clone(c.src), c.codec)
		require.Error(t, kgoErr, "%s: kgo cannot read it either", c.name)
		require.Greater(t, len(err.Error()), len(kgo.ErrMaxDecompress.Error()+": "), "%s: the cause is kept", c.name)
	}
}

// A gzip batch is read whole, member after member (klauspost's
// multistream reader, as kgo reads it), or refused whole: bytes after a
// member that are not a gzip member klauspost reads (junk, zeros, a member
// with a reserved flag bit set, all of which Java's GZIPInputStream
// ignores or reads) refuse the batch, never only the members before them.
// A batch read in part would hand out fewer records than it holds, and kgo
// would then stop fetching its partition without an error to skip it by.
func TestDecompressorReadsGzipWhole(t *testing.T) {
	d := newDecompressor(maxBatchBytes)
	raw := commandsLike(4 << 10)
	gz := compressed(t, kgo.GzipCompression(), raw)
	for range 2 { // the pooled reader is reused
		got, err := d.Decompress(append(bytes.Clone(gz), gz...), kgo.CodecGzip)
		require.NoError(t, err, "two members")
		require.Equal(t, append(bytes.Clone(raw), raw...), got, "two members")
	}
	for name, src := range map[string][]byte{
		"trailing junk":                      append(bytes.Clone(gz), "junk"...),
		"trailing zeros":                     append(bytes.Clone(gz), make([]byte, 512)...),
		"a lone magic byte":                  append(bytes.Clone(gz), 0x1f),
		"two members and junk":               append(append(bytes.Clone(gz), gz...), "junk"...),
		"a member with a reserved bit":       append(bytes.Clone(gz), kafkatest.ReservedGzipFlag(gz)...),
		"a first member with a reserved bit": kafkatest.ReservedGzipFlag(gz),
	} {
		got, err := d.Decompress(src, kgo.CodecGzip)
		require.ErrorIs(t, err, kgo.ErrMaxDecompress, name)
		require.Nil(t, got, "%s: nothing of it is read", name)
		got, err = d.Decompress(gz, kgo.CodecGzip)
		require.NoError(t, err, "%s: the next batch is read", name)
		require.Equal(t, raw, got, name)
	}
	// The ratio still bounds what the members add up to.
	small := newDecompressor(6 << 10)
	_, err := small.Decompress(append(bytes.Clone(gz), gz...), kgo.CodecGzip)
	require.ErrorIs(t, err, kgo.ErrMaxDecompress)
}

// A zstd frame that does not declare its size is refused once it decodes
// past the ratio, not decoded to the absolute bound first: 520 bytes of
// RLE blocks, 16 MiB decoded, are refused having allocated a few times the
// 130 KiB they may decompress to (decoded to the bound, they took about
// 94 MB; the threshold leaves room for what else the process allocates).
func TestZstdWithoutItsSizeIsRefusedAtTheRatio(t *testing.T) {
	// Magic, a descriptor without content size, a 128 KiB window, then
	// 128 RLE blocks of 128 KiB, the last marked so.
	frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3}
	for i := range 128 {
		h := 128<<10<<3 | 1<<1
		if i == 127 {
			h |= 1
		}
		frame = append(frame, byte(h), byte(h>>8), byte(h>>16), 'x')
	}
	zr, err := zstd.NewReader(nil)
	require.NoError(t, err)
	got, err := zr.DecodeAll(frame, nil)
	zr.Close()
	require.NoError(t, err, "the frame is valid")
	require.Len(t, got, 16<<20)

	d := newDecompressor(maxBatchBytes)
	_, err = d.Decompress(frame, kgo.CodecZstd)
	require.ErrorIs(t, err, kgo.ErrMaxDecompress)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const runs = 4
	for range runs {
		_, err = d.Decompress(frame, kgo.CodecZstd)
		require.ErrorIs(t, err, kgo.ErrMaxDecompress)
	}
	runtime.ReadMemStats(&after)
	perRun := (after.TotalAlloc - before.TotalAlloc) / runs
	require.Less(t, perRun, uint64(8<<20), "bytes allocated to refuse a batch that may decompress to %d", Ratio*len(frame))
}

// commandsSharingMetadata is n bytes of lock commands that all carry the
// same 4 KiB owner_metadata (the limit), which a zstd batch compresses
// about 135- to 175-fold.
func commandsSharingMetadata(n int) []byte {
	rnd := rand.New(rand.NewPCG(1, 2))
	hex := make([]byte, 4096)
	for i := range hex {
		hex[i] = "0123456789abcdef"[rnd.IntN(16)]
	}
	meta := `{"m":"` + string(hex) + `"}`
	var raw []byte
	for i := 0; len(raw) < n; i++ {
		raw = append(raw, fmt.Sprintf(`{"request_id":"r-%d","operation":"acquire","lock_name":"l-%d","owner_metadata":%s}`, i, i%7, meta)...)
	}
	return raw[:n]
}

// A zstd batch written as Java's producer writes it (no declared size) that
// decompresses to more than zstdFirstRatio times its compressed size, but
// within the ratio, is read whole: past the first pass's room inside a
// block the decoder fails with an error that does not say so, and the
// second pass must follow any first-pass error. Commands sharing one 4 KiB
// owner_metadata compress about 175-fold.
func TestZstdStreamPastTheFirstPassIsRead(t *testing.T) {
	raw := commandsSharingMetadata(480 << 10)
	src := zstdStream(t, raw)
	ratio := len(raw) / len(src)
	require.Greater(t, ratio, zstdFirstRatio, "the batch must need the second pass")
	require.Less(t, ratio, Ratio, "and fit the ratio")
	d := newDecompressor(maxBatchBytes)
	for range 2 { // the second time with the pooled buffer and decoder
		got, err := d.Decompress(src, kgo.CodecZstd)
		require.NoError(t, err)
		require.Equal(t, raw, got)
	}
}

// A valid stream batch whose bound is within a zstd block under
// maxPooledBuffer is decoded within its bound, so the pooled buffer is kept
// for the next: only the copy returned is allocated. (A last pass past the
// bound taken before a pass at the bound failed grew the buffer past
// maxPooledBuffer, dropped after every such batch.)
func TestZstdStreamNearTheLargestPooledBufferKeepsIt(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	var src, record []byte
	for k := 3000; k < 4000; k += 20 { // random bytes to bring the ratio's bound within a block of 1 MiB
		v := make([]byte, 900<<10)
		for i := range k {
			v[i] = byte(rnd.Uint32())
		}
		for i := k; i < len(v); i++ {
			v[i] = 'a'
		}
		record = encodeRecords(1, func(int) kmsg.Record { return kmsg.Record{Value: v} })
		src = zstdStream(t, record)
		if bound := Ratio * len(src); bound > max(len(record), maxPooledBuffer-zstdBlockRoom) && bound <= maxPooledBuffer {
			break
		}
	}
	bound := Ratio * len(src)
	require.Greater(t, bound, maxPooledBuffer-zstdBlockRoom)
	require.LessOrEqual(t, bound, maxPooledBuffer)
	require.Less(t, len(record), bound)

	d := newDecompressor(maxBatchBytes)
	for range 3 { // the pools warmed
		out, err := d.Decompress(src, kgo.CodecZstd)
		require.NoError(t, err)
		require.Equal(t, record, out)
	}
	const n = 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		_, err := d.Decompress(src, kgo.CodecZstd)
		require.NoError(t, err)
	}
	runtime.ReadMemStats(&after)
	perBatch := int(after.TotalAlloc-before.TotalAlloc) / n
	require.Less(t, perBatch, 2*len(record), "allocated per batch, the content being %d bytes", len(record))
}

// BenchmarkDecompressZstdStream decompresses a zstd batch as Java's
// producer writes it (a streamed frame that does not declare its size):
// what it allocates per batch, past what its records keep.
func BenchmarkDecompressZstdStream(b *testing.B) {
	for _, bc := range []struct {
		name string
		raw  []byte
	}{
		{"128KiB", commandsLike(128 << 10)},
		{"256KiB", commandsLike(256 << 10)},
		{"1024KiB", commandsLike(1 << 20)},
		// Past zstdFirstRatio: one owner_metadata in every command, about
		// 100- and 170-fold (64 KiB of them is 27-fold).
		{"256KiB_shared_metadata", commandsSharingMetadata(256 << 10)},
		{"480KiB_shared_metadata", commandsSharingMetadata(480 << 10)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			n := len(bc.raw)
			src := zstdStream(b, bc.raw)
			var h zstd.Header
			require.NoError(b, h.Decode(src))
			require.False(b, h.HasFCS, "the frame does not declare its size")
			d := newDecompressor(maxBatchBytes)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				out, err := d.Decompress(src, kgo.CodecZstd)
				if err != nil || len(out) != n {
					b.Fatal(err, len(out))
				}
			}
		})
	}
}

// A batch refused by the ratio bound, below the absolute one, says so, with
// its compressed size, in its error and in the log (kgo's own error, and
// its report of the skip, name MaxDecompressBatchBytes alone): here one
// record of 16 KiB of one byte, which zstd compresses some 500-fold. One
// past the absolute bound keeps kgo's error.
func TestRatioRefusalNamesTheRatioBound(t *testing.T) {
	var logs bytes.Buffer
	d := newDecompressor(maxBatchBytes)
	d.log = kgo.BasicLogger(&logs, kgo.LogLevelWarn, nil)
	record := encodeRecords(1, func(int) kmsg.Record { return kmsg.Record{Value: bytes.Repeat([]byte{'a'}, 16<<10)} })
	src := compressed(t, kgo.ZstdCompression(), record)
	require.Less(t, Ratio*len(src), len(record), "past the ratio")

	_, err := d.Decompress(src, kgo.CodecZstd)
	require.ErrorIs(t, err, kgo.ErrMaxDecompress, "skipped as one past the bound")
	require.EqualError(t, err, fmt.Sprintf("the batch decompresses past the ratio bound: %d times its %d compressed bytes (%d bytes)", Ratio, len(src), Ratio*len(src)))
	require.Contains(t, logs.String(), "past the ratio bound")
	require.Contains(t, logs.String(), fmt.Sprint("compressed_bytes: ", len(src)))

	logs.Reset()
	_, err = newDecompressor(len(record)/2).Decompress(compressed(t, kgo.ZstdCompression(), commandsLike(len(record))), kgo.CodecZstd)
	require.ErrorIs(t, err, kgo.ErrMaxDecompress)
	require.NotContains(t, err.Error(), "ratio", "the absolute bound refused it")
}

// decompressLogged is what d, logging at warning level, returns and logs
// for src.
func decompressLogged(d *Decompressor, src []byte, codec kgo.CompressionCodecType) (error, string) {
	var logs bytes.Buffer
	d.log = kgo.BasicLogger(&logs, kgo.LogLevelWarn, nil)
	_, err := d.Decompress(src, codec)
	return err, logs.String()
}

// A zstd batch written as librdkafka (kcat -z zstd) and Java's producer
// write it (a streamed frame that does not declare its size) that
// decompresses past the ratio bound is refused and logged as past the
// ratio bound, not as one that cannot be decompressed: the log is all that
// tells an operator the cause (kgo, and the worker's dead-letter marker,
// say the same of both). Out of room inside a block, the decoder fails
// with an error that does not say so ("output bigger than max block
// size"). Here one record of 900 KiB of one byte, far past the ratio.
func TestZstdStreamPastTheRatioIsNotTakenForCorrupt(t *testing.T) {
	record := encodeRecords(1, func(int) kmsg.Record { return kmsg.Record{Value: bytes.Repeat([]byte{'a'}, 900<<10)} })
	src := zstdStream(t, record)
	require.Less(t, Ratio*len(src), len(record), "past the ratio")
	err, logs := decompressLogged(newDecompressor(maxBatchBytes), src, kgo.CodecZstd)
	require.ErrorAs(t, err, new(*pastRatio), "refused as past the ratio bound")
	require.Contains(t, logs, "past the ratio bound")
	require.NotContains(t, logs, "cannot be decompressed")
}

// So is one past the absolute bound, which kgo's error names: 17 MiB of
// commands, within the ratio, in blocks that do not end at the 16 MiB
// bound, so that the decoder runs out of room inside one. (A zstd block may
// end anywhere; this writer ends its 128 KiB blocks at multiples of
// 128 KiB, the bound among them, unless flushed: here after 150 bytes.)
func TestZstdStreamPastTheAbsoluteBoundIsNotTakenForCorrupt(t *testing.T) {
	raw := commandsLike(17 << 20)
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf)
	require.NoError(t, err)
	_, err = w.Write(raw[:150])
	require.NoError(t, err)
	require.NoError(t, w.Flush())
	_, err = w.Write(raw[150:])
	require.NoError(t, err)
	require.NoError(t, w.Close())
	src := buf.Bytes()
	require.GreaterOrEqual(t, Ratio*len(src), maxBatchBytes, "within the ratio")

	err, logs := decompressLogged(newDecompressor(maxBatchBytes), src, kgo.CodecZstd)
	require.ErrorIs(t, err, kgo.ErrMaxDecompress)
	require.NotErrorAs(t, err, new(*pastRatio), "refused by the absolute bound")
	require.NotContains(t, logs, "cannot be decompressed")
}

// A zstd batch that is corrupt, as a stream frame that does not declare
// its size, is still refused and logged as one that cannot be
// decompressed, not as past the bound: even one whose content checksum
// alone is wrong, read to exactly the bound (with a window within it).
func TestCorruptZstdStreamIsLoggedAsCorrupt(t *testing.T) {
	raw := commandsSharingMetadata(480 << 10)
	stream := zstdStream(t, raw, zstd.WithWindowSize(256<<10))
	badSum := bytes.Clone(stream)
	badSum[len(badSum)-1] ^= 0xff
	require.GreaterOrEqual(t, Ratio*len(badSum), len(raw), "its bound is its size")
	for name, src := range map[string][]byte{
		"cut short":        stream[:len(stream)*2/3],
		"a wrong checksum": badSum,
	} {
		_, kgoErr := kgo.DefaultDecompressor().Decompress(bytes.Clone(src), kgo.CodecZstd)
		require.Error(t, kgoErr, "%s: kgo cannot read it either", name)
		for _, d := range []*Decompressor{newDecompressor(maxBatchBytes), newDecompressor(len(raw))} {
			err, logs := decompressLogged(d, src, kgo.CodecZstd)
			require.ErrorIs(t, err, kgo.ErrMaxDecompress, "%s: skipped as one past the bound", name)
			require.Contains(t, logs, "cannot be decompressed", name)
			require.NotContains(t, logs, "past the ratio bound", name)
		}
	}
}
