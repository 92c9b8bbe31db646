// Package fetchbound bounds what the record batches a Kafka consumer
// fetches may inflate to, for every reader of topics others may produce
// to: the worker's commands consumer and fencing token check, the SDK's
// reply and lock state readers, and kafkapubsub's subscriber. kgo inflates
// every batch of a fetch response whole, in memory, before it hands out
// any record, and its own decompressor bounds only each batch, at
// kgo.MaxDecompressBatchBytes (1 GiB by default); it retries a batch it
// cannot decompress forever, which stops the partition for good. Options
// installs a Decompressor that bounds a response's batches by their
// compressed size as well, and refuses a corrupt batch as one past the
// bound, so that a reader can skip it (kgo.ErrDecompressTooLarge).
package fetchbound

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Ratio bounds what a fetched record batch may decompress to, as a
// multiple of its compressed size, below the absolute bound
// (kgo.MaxDecompressBatchBytes): its bytes, and the memory kgo takes to
// hand out its records, counted with them (recordsMemory). The absolute
// bound alone stops one batch: kgo inflates every batch of a fetch response
// before it hands out any of its records, and the records point into the
// inflated buffers, so a response of many small batches, each just under
// the bound, would hold thousands of times its size (gzip reaches about
// 1,000-fold, zstd far more). With the ratio a response's compressed
// batches, inflated and made records, take at most Ratio times its size,
// and responses are at most maxFetchBytes. (An uncompressed batch's bytes
// are its size; its records take at most about 24 times that, a kgo.Record
// for each of 7 bytes.) Lock commands compress about 5- to 20-fold in
// batches of a thousand (JSON with a fresh request id each), and their
// records take about twice their bytes; the same 4 KiB owner_metadata, the
// limit, in every command of a zstd batch reaches about 135-fold. Lock
// states, replies and events compress no better with the codecs the relay
// may use (KAFKA_COMPRESSION: snappy about 20-fold, gzip 120, lz4 140 on a
// lock.status of many holders sharing their owner_metadata); zstd, which
// reaches about 370 there, is refused for it.
const Ratio = 256

// maxFetchBytes bounds a fetch response (kgo.FetchMaxBytes; kgo's own
// default is 50 MiB), so that with Ratio one response from one broker
// takes at most 64 MiB inflated, its records and headers counted (besides
// a first batch larger than the response, at most the absolute bound). A
// response of 256 KiB holds thousands of commands, more than the worker's
// applier takes in one transaction, and hundreds of the lock states,
// replies or events of a few KiB each the other readers read; a broker
// still returns a larger batch whole when it comes first. (A reader
// catching up on a large topic takes a round trip per 256 KiB.)
const maxFetchBytes = 256 << 10

// Decompressor decompresses fetched batches as kgo's own decompressor
// does, with the same libraries, but bounds each batch at Ratio times its
// compressed size as well as at the client's kgo.MaxDecompressBatchBytes,
// and counts against that bound, besides the batch's bytes, what kgo
// allocates to hand out its records and headers (recordsMemory). A batch
// past either bound is refused with kgo.ErrMaxDecompress, which kgo
// reports as kgo.ErrDecompressTooLarge, and the reader skips it. So is a
// zstd frame whose window is past the absolute bound, which the decoder
// refuses, and so is a batch that cannot be decompressed at all
// (Decompress). What is returned is allocated to its length, as records
// point into it for as long as they live.
type Decompressor struct {
	// max is the absolute bound: the client's kgo.MaxDecompressBatchBytes,
	// known only once the client is made (Bind).
	max atomic.Int64
	// bound is closed by Bind: Decompress waits for it, as a client may
	// fetch before NewClient has returned to its caller.
	bound chan struct{}

	// log tells why a batch could not be decompressed: kgo reports only
	// the batch's offsets, the same as for one past the bound.
	log kgo.Logger

	buffers sync.Pool // *bytes.Buffer
	gzip    sync.Pool // *gzip.Reader
	lz4     sync.Pool // *lz4.Reader
	zstd    sync.Pool // *zstd.Decoder
}

// maxPooledBuffer is the largest read buffer kept for the next batch.
const maxPooledBuffer = 1 << 20

// Past is the position just after the batch b names: where its reader
// moves to skip it, as kgo fetches nothing more of its partition until the
// reader does.
func Past(b *kgo.ErrDecompressTooLarge) kgo.EpochOffset {
	return kgo.EpochOffset{Epoch: b.Epoch, Offset: b.NextOffset}
}

// Options are a consumer's fetch options that bound what the records
// anyone may produce inflate to: kgo.MaxDecompressBatchBytes(max),
// kgo.WithDecompressor of the Decompressor returned, and kgo.FetchMaxBytes
// of 256 KiB. They go before the caller's options, which may set others:
// a kgo.MaxDecompressBatchBytes there is the bound, and a
// kgo.WithDecompressor there replaces this one, and with it the ratio
// bound, the memory the records take and the skipping of corrupt batches.
// Once the client is made, Bind must be called with it: the decompressor
// decompresses nothing until then. It tells log at warning level why a
// batch it refuses could not be read; a nil log is the client's own
// (kgo.WithLogger).
func Options(max int, log kgo.Logger) (*Decompressor, []kgo.Opt) {
	d := &Decompressor{bound: make(chan struct{}), log: log}
	return d, []kgo.Opt{
		kgo.MaxDecompressBatchBytes(max),
		kgo.WithDecompressor(d),
		kgo.FetchMaxBytes(maxFetchBytes),
	}
}

// Bind takes the absolute bound from cl, the client made with d's Options
// (the last kgo.MaxDecompressBatchBytes of its options wins), and its
// logger if d has none, and lets d decompress. It is called once, at once
// after kgo.NewClient: until then cl's fetches wait.
func (d *Decompressor) Bind(cl *kgo.Client) {
	d.max.Store(int64(cl.OptValue(kgo.MaxDecompressBatchBytes).(int)))
	if d.log == nil {
		d.log, _ = cl.OptValue(kgo.WithLogger).(kgo.Logger)
	}
	close(d.bound)
}

// newDecompressor is a Decompressor bound at max, logging nowhere.
func newDecompressor(max int) *Decompressor {
	d := &Decompressor{bound: make(chan struct{})}
	d.max.Store(int64(max))
	close(d.bound)
	return d
}

// Decompress implements kgo.Decompressor. A batch that cannot be
// decompressed (corrupt, or of a codec or codec variant this decompressor
// does not read) is refused with kgo.ErrMaxDecompress too, the only error kgo
// turns into one that names the batch and lets the partition be moved past
// it: any other error kgo keeps, fetching the same batch again forever, and
// the partition would stop for good. kgo decompresses a batch only once it
// is whole and its CRC matches (unless kgo.DisableFetchCRCValidation is
// set, which the worker refuses: a batch damaged in transit would then be
// skipped instead of fetched again), so such a batch fails the same way on
// every fetch, on every replica: it is skipped as one past the bound is,
// and the cause is logged here, where it is known.
//
// A batch is read whole or refused whole, never in part: kgo would hand
// out the records read and then, finding fewer than the batch holds, stop
// fetching its partition without an error to skip it by. So gzip is read
// with klauspost's multistream reader, as kgo reads it: bytes after a
// member that it does not read as another member (junk, zeros, a member
// with a reserved flag bit, which Java's GZIPInputStream ignores or reads)
// refuse the batch.
//
// A batch decompressed within the bound whose records and headers would
// take kgo more memory than the bound (recordsMemory) is refused as well,
// and logged too, as the readers' own logs (and the worker's marker) speak
// only of bytes.
func (d *Decompressor) Decompress(src []byte, codec kgo.CompressionCodecType) ([]byte, error) {
	<-d.bound
	max := int(d.max.Load())
	bound := min(max, Ratio*len(src))
	out, err := d.decompress(src, codec, max, bound)
	if bound < max && errors.Is(err, kgo.ErrMaxDecompress) && !errors.Is(err, zstd.ErrWindowSizeExceeded) {
		// kgo's error names MaxDecompressBatchBytes, and kgo reports the
		// skip with the batch's offsets alone: the bound that refused it
		// is said here.
		d.warn("a fetched record batch decompresses past the ratio bound (ratio times its compressed size), below kgo.MaxDecompressBatchBytes: it is skipped unread as one past the bound is (its reader reports its offsets)",
			"codec", int8(codec), "compressed_bytes", len(src), "ratio", Ratio, "bound", bound, "max_decompress_batch_bytes", max)
		err = &pastRatio{compressed: len(src), bound: bound}
	}
	if err == nil && codec != kgo.CodecNone {
		// An uncompressed batch is bounded by the fetch size (and the
		// broker's message.max.bytes), not by this bound.
		if mem := recordsMemory(out, bound); mem > bound {
			d.warn("a fetched record batch decompresses within the bound, but the records and headers the Kafka client makes of it would take more memory than the bound: it is skipped unread as one past the bound is (its reader reports its offsets)",
				"codec", int8(codec), "compressed_bytes", len(src), "decompressed_bytes", len(out),
				"bound", bound, "records_memory_at_least", mem)
			return nil, fmt.Errorf("%w: %w", kgo.ErrMaxDecompress, errRecordsPastBound)
		}
	}
	if err != nil && !errors.Is(err, kgo.ErrMaxDecompress) && !errors.Is(err, errNoZstdDecoder) {
		// Logged at warning level each time kgo decompresses the batch,
		// which may be twice for one skip: where batches before it in
		// the same fetch response were read, kgo drops the error, hands
		// out their records and meets the batch again first in the next
		// response, where the error stands and the reader skips it. Only
		// here is the cause known (kgo reports the batch's offsets alone,
		// which the reader reports), so it is not left to a debug log an
		// operator would not see.
		d.warn("a fetched record batch cannot be decompressed: it is skipped unread as one past the bound is (its reader reports its offsets)",
			"error", err, "codec", int8(codec), "compressed_bytes", len(src))
		err = fmt.Errorf("%w: %w", kgo.ErrMaxDecompress, err)
	}
	return out, err
}

// warn logs msg at warning level, if d has a logger that logs it.
func (d *Decompressor) warn(msg string, keyvals ...any) {
	if d.log != nil && d.log.Level() >= kgo.LogLevelWarn {
		d.log.Log(kgo.LogLevelWarn, msg, keyvals...)
	}
}

// pastRatio refuses a batch that decompresses past the ratio bound, below
// the absolute one: it is kgo.ErrMaxDecompress, whose own text names
// MaxDecompressBatchBytes.
type pastRatio struct{ compressed, bound int }

func (e *pastRatio) Error() string {
	return fmt.Sprintf("the batch decompresses past the ratio bound: %d times its %d compressed bytes (%d bytes)", Ratio, e.compressed, e.bound)
}

func (*pastRatio) Unwrap() error { return kgo.ErrMaxDecompress }

// errRecordsPastBound is why a batch within the bound in bytes is refused:
// its records and headers would take more (recordsMemory).
var errRecordsPastBound = errors.New("the records and headers of the batch would take more memory than the bound")

// recordsMemory is what kgo allocates for a decompressed v2 batch, out, to
// hand out its records, counted until it passes bound (then it returns a
// count past bound): out itself, which the records point into; a
// kgo.Record and a pointer to it for each record; a kgo.RecordHeader and a
// copy of its key (a string) for each header. Bounding a batch's bytes does
// not bound that (object amplification): kgo makes a kgo.Record (160
// bytes, and 8 for the pointer) of a record of 7 bytes (no key, no value,
// no header), and a kgo.RecordHeader (40 bytes) of an empty header of 2.
// 16 MiB of either, which a zstd batch of 64 KiB passes both byte bounds
// with, takes kgo about 400 or 335 MB, and a 256 KiB response holds four
// such batches: the replica would be killed for its memory before its
// offset moved, and so would every replica that took the partition over.
// (kgo sizes its records from the count the batch declares, capped at the
// bytes it has, not from the records it finds; a broker that validates
// what it is produced, as Apache Kafka's does, keeps the two equal.)
//
// It walks the records as kgo reads them (readRawRecordsDirect, with kbin):
// each a zigzag varint length and that many bytes, of int8 attributes, a
// varlong timestamp delta, a varint offset delta, a varint-length key and
// value (-1 for null), a varint header count, and each header's
// varint-length key and value. A header count past the bytes left in its
// record makes kgo stop, as kbin's VarintArrayLen refuses it, before it
// allocates the headers. Framing that kgo cannot read ends the walk there,
// as it ends kgo's reading: it is not a reason to refuse the batch (kgo
// hands out the records before it, and reports the rest itself).
func recordsMemory(out []byte, bound int) int {
	const (
		perRecord = int(unsafe.Sizeof(kgo.Record{})) + 8
		perHeader = int(unsafe.Sizeof(kgo.RecordHeader{}))
	)
	n := len(out)
	for in := out; len(in) > 0 && n <= bound; {
		length, used := kbin.Varint(in)
		total := used + int(length)
		if used <= 0 || length < 0 || len(in) < total {
			return n
		}
		n += perRecord
		b := kbin.Reader{Src: in[used:total]}
		in = in[total:]
		b.Int8()
		b.Varlong()
		b.Varint()
		b.VarintBytes()
		b.VarintBytes()
		headers := int(b.VarintArrayLen())
		if headers > 0 {
			if n += headers * perHeader; n > bound {
				return n
			}
			for range headers {
				n += len(b.VarintBytes()) // kgo copies the key into a string
				b.VarintBytes()
			}
		}
		if !b.Ok() {
			return n // kgo reads no record past this one
		}
	}
	return n
}

func (d *Decompressor) decompress(src []byte, codec kgo.CompressionCodecType, max, bound int) ([]byte, error) {
	switch codec {
	case kgo.CodecNone:
		return src, nil
	case kgo.CodecSnappy:
		return unsnappy(src, bound)
	case kgo.CodecGzip:
		r, _ := d.gzip.Get().(*gzip.Reader)
		if r == nil {
			r = new(gzip.Reader)
		}
		if err := r.Reset(bytes.NewReader(src)); err != nil {
			return nil, err
		}
		return d.readPooled(&d.gzip, r, bound)
	case kgo.CodecLz4:
		r, _ := d.lz4.Get().(*lz4.Reader)
		if r == nil {
			r = lz4.NewReader(nil)
		}
		r.Reset(bytes.NewReader(src))
		return d.readPooled(&d.lz4, r, bound)
	case kgo.CodecZstd:
		return d.unzstd(src, max, bound)
	default:
		return nil, fmt.Errorf("unknown compression codec %d", codec)
	}
}

// readPooled reads r with readBounded and puts it back in pool once it has
// read a batch to its end without error. One left in the middle of a
// stream (refused past the bound, or corrupt) is dropped: klauspost's
// flate reader, reset, can still resolve a back-reference of the next
// batch into the abandoned stream's window, handing one batch's bytes to
// another (found by FuzzRatioDecompressor, now FuzzDecompressor).
func (d *Decompressor) readPooled(pool *sync.Pool, r io.Reader, bound int) ([]byte, error) {
	out, err := d.readBounded(r, bound)
	if err == nil {
		pool.Put(r)
	}
	return out, err
}

// readBounded reads r to its end, refusing more than bound bytes. It reads
// into a pooled buffer and returns a copy of its length: the buffer grows
// by doubling.
func (d *Decompressor) readBounded(r io.Reader, bound int) ([]byte, error) {
	out, _ := d.buffers.Get().(*bytes.Buffer)
	if out == nil {
		out = new(bytes.Buffer)
	}
	defer func() {
		// One batch near the bound (refused or not) would otherwise keep
		// twice the bound alive in the pool for as long as batches come.
		if out.Cap() <= maxPooledBuffer {
			d.buffers.Put(out)
		}
	}()
	out.Reset()
	n, err := out.ReadFrom(io.LimitReader(r, int64(bound)+1))
	if err != nil {
		return nil, err
	}
	if n > int64(bound) {
		return nil, kgo.ErrMaxDecompress
	}
	return slices.Clone(out.Bytes()), nil
}

// errNoZstdDecoder is the decompressor's own failure, not the batch's: it
// is not taken for a batch that cannot be read.
var errNoZstdDecoder = errors.New("creating a zstd decoder")

// unzstd decodes a zstd batch whole, as kgo does: decoding into the output
// keeps no window of the frame's declared size (a streaming zstd.Decoder
// allocates one up front: a 13-byte frame declaring a 16 MiB window costs
// 17 MB a batch). The decoder decodes no more than the output's capacity
// (WithDecodeAllCapLimit), so a frame that does not declare its size (Java's
// streaming writer's) is refused once it passes bound, not decoded to max
// first: it is decoded into zstdFirstRatio times its compressed size (at
// most maxPooledBuffer), and past that into four times more room
// (zstdPooled). A first frame that declares its size is decoded once into
// that size (more frames after it are decoded again, into bound). A first
// frame declaring more than bound is refused before it is decoded; the
// decoder refuses a frame declaring more than max, or a window past max.
func (d *Decompressor) unzstd(src []byte, max, bound int) ([]byte, error) {
	var h zstd.Header
	declared := h.Decode(src) == nil && h.HasFCS
	if declared && h.FrameContentSize > uint64(bound) {
		return nil, kgo.ErrMaxDecompress
	}
	r, _ := d.zstd.Get().(*zstd.Decoder)
	if r == nil {
		var err error
		if r, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxMemory(uint64(max)), zstd.WithDecodeAllCapLimit(true)); err != nil {
			return nil, fmt.Errorf("%w: %w", errNoZstdDecoder, err)
		}
	}
	var out []byte
	var err error
	if declared {
		size := int(h.FrameContentSize) + zstdSlack
		out, err = r.DecodeAll(src, make([]byte, 0, size))
		if err != nil && size < bound {
			out, err = d.zstdPooled(r, src, bound, bound)
		} else if err == nil && cap(out)-len(out) > len(out)/8 {
			// A small frame: records would keep the slack.
			out = slices.Clone(out)
		}
	} else {
		// The first room is not past what is kept for the next batch.
		out, err = d.zstdPooled(r, src, min(bound, zstdFirstRatio*len(src), maxPooledBuffer), bound)
	}
	if err == nil {
		d.zstd.Put(r)
	}
	switch {
	case errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return nil, fmt.Errorf("%w: %w", kgo.ErrMaxDecompress, err)
	case err != nil:
		return nil, err
	case len(out) > bound:
		return nil, kgo.ErrMaxDecompress
	}
	return out, nil
}

// zstdPooled decodes src into a pooled buffer (d.buffers, as readBounded
// reads into) and returns a copy of its length: records point into what is
// returned for as long as they live, so the pooled buffer never is. It
// decodes into room bytes, or into as much as the pooled buffer already
// holds, up to bound, and, out of room, again into four times the room,
// up to bound, and once a pass at bound fails, into zstdBlockRoom past it:
// a batch past room is decoded two or three times, until the pooled buffer
// has grown to it (one past maxPooledBuffer is not kept for the next
// batch), and refusing one costs decodes within a block of bound.
//
// The last pass tells a batch past the bound from a corrupt one, which the
// decoder's error does not: out of room inside a block it fails as it does
// on a corrupt block ("output bigger than max block size"), and a batch
// past the bound would be logged as one that cannot be decompressed, the
// log being all that tells the two apart. The decoder fails inside a
// block, returning the blocks before it, and no block decodes to more than
// zstdBlockRoom: with that room past the bound, a batch that fails having
// decoded no more than bound failed with room to spare, and is corrupt;
// one that decoded past the bound is refused as such, whatever follows.
// (Were the decoder to return nothing on failure, batches past the bound
// would be taken for corrupt again, not the other way round;
// TestZstdStreamPastTheRatioIsNotTakenForCorrupt would tell.)
func (d *Decompressor) zstdPooled(r *zstd.Decoder, src []byte, room, bound int) ([]byte, error) {
	b, _ := d.buffers.Get().(*bytes.Buffer)
	if b == nil {
		b = new(bytes.Buffer)
	}
	defer func() {
		if b.Cap() <= maxPooledBuffer {
			d.buffers.Put(b)
		}
	}()
	b.Reset()
	last := bound + zstdBlockRoom
	room = min(bound, max(room, b.Cap()))
	for {
		b.Grow(room)
		out, err := r.DecodeAll(src, b.AvailableBuffer()[:0:room])
		switch {
		case len(out) > bound:
			return nil, kgo.ErrMaxDecompress
		case err == nil:
			return slices.Clone(out), nil
		case room == last:
			return nil, err
		}
		// Out of room, whatever the error says: past the room inside a
		// block, the assembly decoder reports "output bigger than max
		// block size", not ErrDecoderSizeExceeded. A batch that is
		// corrupt fails again, until the last pass. Only a pass at bound
		// that failed takes the last, past it: a valid batch is decoded
		// within bound, so a pooled buffer up to maxPooledBuffer serves it.
		if room == bound {
			room = last
		} else {
			room = min(bound, 4*room)
		}
	}
}

// zstdFirstRatio is the room, as a multiple of its compressed size, a zstd
// batch that does not declare its size is first decoded into (at most
// maxPooledBuffer, and all the pooled buffer holds): batches of commands
// compress about 5- to 20-fold, so most take one pass.
// zstdSlack is the room left past a declared size (the decoder's own
// allocation leaves as much).
// zstdBlockRoom is the most one zstd block decodes to (the format's
// Block_Maximum_Size, 128 KiB), and the 16 bytes the decoder's fast copies
// may write past it.
const (
	zstdFirstRatio = 32
	zstdSlack      = 64
	zstdBlockRoom  = 128<<10 + 16
)

// xerialPrefix starts a snappy batch the Java client framed (xerial
// snappy-java's stream: this prefix, a version and a compatible version,
// then chunks of a big-endian length and a raw snappy block); any other
// snappy batch is one raw block.
var xerialPrefix = []byte{130, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

var errXerial = errors.New("malformed xerial snappy framing")

// unsnappy decodes a snappy batch, raw or xerial-framed, once the lengths
// its blocks declare are found within bound: a block's length is read
// before it is decoded, and decoding checks it.
func unsnappy(src []byte, bound int) ([]byte, error) {
	if len(src) <= 16 || !bytes.HasPrefix(src, xerialPrefix) {
		n, err := s2.DecodedLen(src)
		if err != nil {
			return nil, err
		}
		if n > bound {
			return nil, kgo.ErrMaxDecompress
		}
		return s2.Decode(nil, src)
	}
	var chunks [][]byte
	total := 0
	for rest := src[16:]; len(rest) > 0; {
		if len(rest) < 4 {
			return nil, errXerial
		}
		size := binary.BigEndian.Uint32(rest)
		rest = rest[4:]
		if uint64(size) > uint64(len(rest)) {
			return nil, errXerial
		}
		n, err := s2.DecodedLen(rest[:size])
		if err != nil {
			return nil, err
		}
		if total += n; total > bound {
			return nil, kgo.ErrMaxDecompress
		}
		chunks = append(chunks, rest[:size])
		rest = rest[size:]
	}
	out := make([]byte, 0, total)
	for _, c := range chunks {
		block, err := s2.Decode(out[len(out):cap(out)], c)
		if err != nil {
			return nil, err
		}
		out = out[:len(out)+len(block)]
	}
	return out, nil
}
