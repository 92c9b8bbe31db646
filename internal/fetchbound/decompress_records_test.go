package fetchbound

import (
	"bytes"
	"hash/crc32"
	"runtime"
	"strconv"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
)

// encodeRecords is n v2 records as kgo's producer writes them (kmsg's
// encoding), record i made by rec and given offset delta i.
func encodeRecords(n int, rec func(i int) kmsg.Record) []byte {
	var out []byte
	for i := range n {
		r := rec(i)
		r.OffsetDelta = int32(i)
		r.Length = 0
		r.Length = int32(len(r.AppendTo(nil)) - 1) // a zero length is one byte
		out = r.AppendTo(out)
	}
	return out
}

// fetchedBatch is a fetch response's partition holding one record batch of
// n records, compressed with codec to src, at offset 0.
func fetchedBatch(codec kgo.CompressionCodecType, n int, src []byte) *kmsg.FetchResponseTopicPartition {
	b := kmsg.RecordBatch{Magic: 2, Attributes: int16(codec), LastOffsetDelta: int32(n - 1), NumRecords: int32(n),
		ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1, Records: src}
	enc := b.AppendTo(nil)
	b.Length = int32(len(enc) - 12)
	b.CRC = int32(crc32.Checksum(enc[21:], crc32.MakeTable(crc32.Castagnoli))) // from the attributes on
	return &kmsg.FetchResponseTopicPartition{HighWatermark: int64(n), LastStableOffset: int64(n), RecordBatches: b.AppendTo(nil)}
}

// processFetched has kgo read the batch of fetchedBatch with decompressor d,
// as a fetch does.
func processFetched(codec kgo.CompressionCodecType, n int, src []byte, d kgo.Decompressor) kgo.FetchPartition {
	fp, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Topic: "t"},
		fetchedBatch(codec, n, src), d, nil)
	return fp
}

// kgoRecordsMemory is what kgo allocates to hand out the records of out, a
// decompressed v2 batch, counted the way kgo reads them
// (readRawRecordsDirect in kgo's source.go, transcribed): out itself, a
// kgo.Record and a pointer per record, the headers slice of each record as
// it is made, and each header key's string. The decompressor's bound is
// held to it.
func kgoRecordsMemory(out []byte) int {
	n := len(out)
	for in := out; ; {
		length, used := kbin.Varint(in)
		total := used + int(length)
		if used <= 0 || length < 0 || len(in) < total {
			return n
		}
		n += int(unsafe.Sizeof(kgo.Record{})) + 8
		b := kbin.Reader{Src: in[used:total]}
		b.Int8()
		b.Varlong()
		b.Varint()
		b.VarintBytes()
		b.VarintBytes()
		if nh := int(b.VarintArrayLen()); nh > 0 {
			n += nh * int(unsafe.Sizeof(kgo.RecordHeader{}))
			for range nh {
				n += len(b.VarintString())
				b.VarintBytes()
			}
		}
		if !b.Ok() {
			return n
		}
		in = in[total:]
	}
}

// bombs are batches within both byte bounds (at most maxBatchBytes, at
// most Ratio times their compressed size) whose records kgo would
// make into far more memory: one record of a million empty headers (2
// bytes each, a 40-byte kgo.RecordHeader), and a million records of no
// key, no value and no header (about 9 bytes each, a 168-byte kgo.Record
// and pointer). Each starts with a record of random bytes that keeps it
// within the ratio, as an attacker would pad it.
func bombs() []struct {
	name    string
	records int
	raw     []byte
} {
	const million = 1 << 20
	pad := func(n int) kmsg.Record { return kmsg.Record{Value: kafkatest.RandomBytes(n)} }
	return []struct {
		name    string
		records int
		raw     []byte
	}{
		{"a record of a million empty headers", 1, encodeRecords(1, func(int) kmsg.Record {
			r := pad(16 << 10)
			r.Headers = make([]kmsg.Header, million)
			return r
		})},
		{"a million empty records", million, encodeRecords(million, func(i int) kmsg.Record {
			if i == 0 {
				return pad(64 << 10)
			}
			return kmsg.Record{}
		})},
	}
}

// A batch within both byte bounds whose records and headers kgo would make
// into more memory than the bound (object amplification) is refused as one
// past the bound is: kgo reports it as kgo.ErrDecompressTooLarge, hands out
// none of its records, and the reader skips it. kgo's own decompressor
// reads it, and kgo then makes tens or hundreds of megabytes of it.
func TestDecompressorRefusesBatchesOfTinyRecordsOrHeaders(t *testing.T) {
	d := newDecompressor(maxBatchBytes)
	for _, b := range bombs() {
		for _, c := range []struct {
			name  string
			codec kgo.CompressionCodecType
			pack  func(testing.TB, []byte) []byte
		}{
			{"zstd", kgo.CodecZstd, func(t testing.TB, b []byte) []byte { return compressed(t, kgo.ZstdCompression(), b) }},
			{"gzip", kgo.CodecGzip, func(t testing.TB, b []byte) []byte { return compressed(t, kgo.GzipCompression(), b) }},
		} {
			name := b.name + ", " + c.name
			src := c.pack(t, b.raw)
			bound := min(maxBatchBytes, Ratio*len(src))
			require.LessOrEqual(t, len(b.raw), bound, "%s: %d bytes from %d, within both byte bounds", name, len(b.raw), len(src))
			got, err := kgo.DefaultDecompressor().Decompress(bytes.Clone(src), c.codec)
			require.NoError(t, err, name)
			require.Equal(t, b.raw, got, name)
			require.Greater(t, kgoRecordsMemory(b.raw), 2*bound, "%s: kgo's records take more than twice the bound", name)

			_, err = d.Decompress(src, c.codec)
			require.ErrorIs(t, err, kgo.ErrMaxDecompress, name)
			require.ErrorIs(t, err, errRecordsPastBound, name)

			fp := processFetched(c.codec, b.records, src, d)
			var tooLarge *kgo.ErrDecompressTooLarge
			require.ErrorAs(t, fp.Err, &tooLarge, "%s: kgo reports the batch as too large", name)
			require.Equal(t, int64(b.records), tooLarge.NextOffset, name)
			require.Empty(t, fp.Records, name)
		}
	}
}

// What kgo's own decompressor lets through of the header bomb, kgo makes
// into some 40 MB (a kgo.RecordHeader each), from 16 KiB fetched: the
// decompressor refuses it having allocated little past its bytes.
func TestDecompressorRefusesTheHeaderBombCheaply(t *testing.T) {
	b := bombs()[0]
	src := compressed(t, kgo.ZstdCompression(), b.raw)
	allocated := func(d kgo.Decompressor) (uint64, kgo.FetchPartition) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		fp := processFetched(kgo.CodecZstd, b.records, src, d)
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc, fp
	}
	theirs, fp := allocated(kgo.DefaultDecompressor())
	require.NoError(t, fp.Err)
	require.Len(t, fp.Records, 1)
	require.Len(t, fp.Records[0].Headers, 1<<20)
	require.Greater(t, theirs, uint64(40<<20), "kgo makes a kgo.RecordHeader of each empty header")
	d := newDecompressor(maxBatchBytes)
	ours, fp := allocated(d)
	require.ErrorAs(t, fp.Err, new(*kgo.ErrDecompressTooLarge))
	require.Less(t, ours, uint64(4*len(b.raw)), "refused at about the cost of decompressing it")
}

// Real batches of commands, with the headers producers add, are read and
// handed out whole, for every codec, in batches of a thousand and in the
// worst ordinary batch (the 4 KiB owner_metadata, the limit, in every
// command, in a zstd stream as Java's producer writes it).
func TestDecompressorReadsBatchesOfCommandRecords(t *testing.T) {
	cmds := commandsLike(1000 * 150)
	thousand := encodeRecords(1000, func(i int) kmsg.Record {
		v := cmds[i*150 : (i+1)*150]
		return kmsg.Record{Key: []byte("orders/" + strconv.Itoa(i)), Value: v, Headers: []kmsg.Header{
			{Key: "traceparent", Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
			{Key: "content-type", Value: []byte("application/json")},
		}}
	})
	// One command of commandsSharingMetadata per record.
	shared := commandsSharingMetadata(480 << 10)
	var sharing [][]byte
	for rest := shared; ; {
		end := bytes.Index(rest[1:], []byte(`{"request_id"`)) + 1
		if end == 0 {
			break // the last is cut short
		}
		sharing, rest = append(sharing, rest[:end]), rest[end:]
	}
	metadata := encodeRecords(len(sharing), func(i int) kmsg.Record {
		return kmsg.Record{Key: []byte("l-" + strconv.Itoa(i%7)), Value: sharing[i]}
	})
	d := newDecompressor(maxBatchBytes)
	for _, batch := range []struct {
		name    string
		records int
		raw     []byte
	}{{"a thousand commands", 1000, thousand}, {"commands sharing 4 KiB of owner_metadata", len(sharing), metadata}} {
		for _, c := range codecs {
			name := batch.name + ", " + c.name
			src := c.pack(t, batch.raw)
			got, err := d.Decompress(src, c.codec)
			require.NoError(t, err, name)
			require.Equal(t, batch.raw, got, name)
			if c.codec == kgo.CodecZstd {
				t.Logf("%s: %d bytes, %d-fold; its records %d-fold", name, len(batch.raw), len(batch.raw)/len(src),
					kgoRecordsMemory(batch.raw)/len(src))
			}
			fp := processFetched(c.codec, batch.records, src, d)
			require.NoError(t, fp.Err, name)
			require.Len(t, fp.Records, batch.records, name)
		}
	}
}

// The walk counts what kgo reads and stops where kgo stops: framing kgo
// cannot read (a length past the batch, a header count past its record's
// bytes, junk after the records) is not a reason to refuse a batch, and
// kgo handles it itself. Its count is what kgo's reading allocates.
func TestDecompressorCountsRecordsAsKgoReadsThem(t *testing.T) {
	const perRecord, perHeader = int(unsafe.Sizeof(kgo.Record{})) + 8, int(unsafe.Sizeof(kgo.RecordHeader{}))
	three := encodeRecords(3, func(int) kmsg.Record {
		return kmsg.Record{Value: []byte("v"), Headers: []kmsg.Header{{Key: "key", Value: []byte("value")}}}
	})
	want := len(three) + 3*(perRecord+perHeader+len("key"))
	require.Equal(t, want, recordsMemory(three, 1<<30))
	require.Equal(t, want, kgoRecordsMemory(three))

	junk := append(bytes.Clone(three), 0xff, 0xff, 0xff)
	require.Equal(t, want+3, recordsMemory(junk, 1<<30), "junk after the records is not counted")
	require.Equal(t, len("{not records}"), recordsMemory([]byte("{not records}"), 1<<30))

	// A record declaring a million headers in 4 bytes: kgo refuses the
	// count (more than the bytes left) and reads no further; nothing is
	// allocated for it.
	body := []byte{0, 0, 0, 1, 1} // attributes, deltas, a null key and value
	body = kbin.AppendVarint(body, 1<<20)
	lying := append(kbin.AppendVarint(nil, int32(len(body))), body...)
	batch := append(bytes.Clone(three), lying...)
	batch = append(batch, three...)
	require.Equal(t, kgoRecordsMemory(batch), recordsMemory(batch, 1<<30))
	require.Equal(t, want+len(lying)+len(three)+perRecord, recordsMemory(batch, 1<<30), "counting stops at the record kgo stops at")

	// Past the bound, the count stops early, past the bound.
	require.Greater(t, recordsMemory(three, 100), 100)
}
