package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/worker"
)

// cutShort compresses batches with codec, as kgo does, then drops their
// last byte: a producer of batches no reader can decompress, which kfake
// stores as they come (their CRC is computed after).
type cutShort struct{ codec kgo.CompressionCodec }

func (c cutShort) Compress(dst *bytes.Buffer, src []byte, flags ...kgo.CompressFlag) ([]byte, kgo.CompressionCodecType) {
	comp, err := kgo.DefaultCompressor(c.codec)
	if err != nil {
		panic(err)
	}
	out, codec := comp.Compress(dst, src, flags...)
	return bytes.Clone(out[:len(out)-1]), codec
}

// floorProducer returns a client producing to partition 0 of topic, with
// opts: what one ProduceSync call sends is one batch.
func floorProducer(t *testing.T, e *e2e.Env, topic string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(e.Brokers...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(200 * time.Millisecond),
		kgo.ProducerBatchMaxBytes(32 << 20)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// produceAt sends rs in one ProduceSync call and returns the offset of the
// first and of the last.
func produceAt(t *testing.T, cl *kgo.Client, rs ...*kgo.Record) (first, last int64) {
	t.Helper()
	require.NoError(t, cl.ProduceSync(context.Background(), rs...).FirstErr())
	return rs[0].Offset, rs[len(rs)-1].Offset
}

// grants are n lock.acquired records, the i-th of token(i).
func grants(t *testing.T, n int, token func(i int) int64) []*kgo.Record {
	rs := make([]*kgo.Record, n)
	for i := range rs {
		rs[i] = &kgo.Record{Value: grantOf(t, fmt.Sprint("lock-", token(i)), "o", token(i))}
	}
	return rs
}

// zeroRecords are n records of size zero bytes each: a gzipped batch of
// them takes about a thousandth of that.
func zeroRecords(n, size int) []*kgo.Record {
	rs := make([]*kgo.Record, n)
	for i := range rs {
		rs[i] = &kgo.Record{Value: make([]byte, size)}
	}
	return rs
}

// The newest records of a lock.acquired partition hold a record batch the
// worker's bounds refuse, or that cannot be decompressed at all (anyone
// with Write on the topic can write one): the check does not wait for it
// until its timeout, which under TOKEN_FLOOR_CHECK=require failed every
// start for as long as the batch stayed among the newest records. The
// batch is skipped unread, warned of with its partition and offsets; the
// grants around it are read, and as many offsets as it took from the
// newest 100 are read before them, so 100 readable offsets are read.
// The grant hidden in the batch is not read; neither is one before what
// is read back.
func TestTokenFloorSkipsUnreadableBatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  []kgo.Opt
		batch func(t *testing.T) []*kgo.Record
	}{
		{"gzip past the ratio bound", []kgo.Opt{kgo.ProducerBatchCompression(kgo.GzipCompression())}, func(t *testing.T) []*kgo.Record {
			// About 4 MiB of zeros in about 4 KB: far past 256-fold,
			// far under 16 MiB (which kgo's own decompressor allows).
			return append(grants(t, 1, func(int) int64 { return 8_000_000 }), zeroRecords(59, 64<<10)...)
		}},
		{"gzip past 16 MiB", []kgo.Opt{kgo.ProducerBatchCompression(kgo.GzipCompression())}, func(t *testing.T) []*kgo.Record {
			return append(grants(t, 1, func(int) int64 { return 8_000_000 }), zeroRecords(59, (16<<20)/59+1)...)
		}},
		{"gzip cut short", []kgo.Opt{kgo.WithCompressor(cutShort{kgo.GzipCompression()})}, func(t *testing.T) []*kgo.Record {
			return grants(t, 60, func(i int) int64 { return 8_000_000 + int64(i) })
		}},
		{"zstd cut short", []kgo.Opt{kgo.WithCompressor(cutShort{kgo.ZstdCompression()})}, func(t *testing.T) []*kgo.Record {
			return grants(t, 60, func(i int) int64 { return 8_000_000 + int64(i) })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e2e.New(t)
			var log testlog.Buffer
			w, topic := floorTopic(t, e, 1, &log)
			plain := floorProducer(t, e, topic)
			// Offsets 0..149: the highest readable token, 7000, at 70,
			// in the 60 offsets read back; 9,500,000 at 50, below them.
			first, _ := produceAt(t, plain, grants(t, 150, func(i int) int64 {
				switch i {
				case 50:
					return 9_500_000
				case 70:
					return 7000
				}
				return 1000 + int64(i)
			})...)
			require.Zero(t, first)
			// Offsets 150..209: the batch, its tokens above every other.
			bad, badLast := produceAt(t, floorProducer(t, e, topic, tc.opts...), tc.batch(t)...)
			require.Equal(t, []int64{150, 209}, []int64{bad, badLast})
			// Offsets 210..219.
			after, _ := produceAt(t, plain, grants(t, 10, func(i int) int64 { return 2000 + int64(i) })...)
			require.Equal(t, int64(210), after)

			forgetTokens(t, e.Store)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // below tokenFloorTimeout
			defer cancel()
			f, err := w.RaiseTokenFloor(ctx)
			require.NoError(t, err)
			require.Equal(t, int64(7000), f.Highest, "%+v", f)
			require.Equal(t, 100, f.Records, "30 + 10 around the batch, 60 before them")
			require.Equal(t, 1, f.BatchesSkipped)
			require.Equal(t, 100, f.Tokens)
			require.True(t, f.Raised, "%+v", f)
			require.Equal(t, int64(7000+worker.TokenFloorMargin), f.Floor)
			require.Contains(t, log.String(), `{"level":"warn","topic":"floor.acquired","partition":0,"offset":150,"last_offset":209,`)
			require.Contains(t, log.String(), "the fencing token check skips it unread")
			require.NotContains(t, log.String(), "reads no further back")
		})
	}
}

// A batch that cannot be read begins before the newest 100 offsets and
// ends among them: the offsets it took from them are read before its
// start, not before theirs.
func TestTokenFloorReadsBackPastABatchAcrossTheNewest(t *testing.T) {
	e := e2e.New(t)
	var log testlog.Buffer
	w, topic := floorTopic(t, e, 1, &log)
	plain := floorProducer(t, e, topic)
	// Offsets 0..89: 7000 at 85, in the 10 offsets read back (80..89);
	// 9,500,000 at 70, below them.
	produceAt(t, plain, grants(t, 90, func(i int) int64 {
		switch i {
		case 70:
			return 9_500_000
		case 85:
			return 7000
		}
		return 1000 + int64(i)
	})...)
	// Offsets 90..129, of which the newest 100 (120..219) hold 10.
	bad, badLast := produceAt(t, floorProducer(t, e, topic, kgo.ProducerBatchCompression(kgo.GzipCompression())), zeroRecords(40, 128<<10)...)
	require.Equal(t, []int64{90, 129}, []int64{bad, badLast})
	// Offsets 130..219.
	produceAt(t, plain, grants(t, 90, func(i int) int64 { return 2000 + int64(i) })...)

	forgetTokens(t, e.Store)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f, err := w.RaiseTokenFloor(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(7000), f.Highest, "%+v", f)
	require.Equal(t, 100, f.Records, "90 after the batch, 10 before it")
	require.Equal(t, 1, f.BatchesSkipped)
	require.Contains(t, log.String(), `"partition":0,"offset":90,"last_offset":129,`)
}

// Past 10 batches skipped in a partition the check reads no further back:
// it reads the newest 100 offsets, but not as many again before them as
// the batches took, and says so.
func TestTokenFloorReadsNoFurtherBackPastManyBatches(t *testing.T) {
	e := e2e.New(t)
	var log testlog.Buffer
	w, topic := floorTopic(t, e, 1, &log)
	plain := floorProducer(t, e, topic)
	// Offsets 0..99: 9000 at 95, which reading back would find.
	produceAt(t, plain, grants(t, 100, func(i int) int64 {
		if i == 95 {
			return 9000
		}
		return 1000 + int64(i)
	})...)
	// Offsets 100..111: 12 batches of one record each.
	gzipped := floorProducer(t, e, topic, kgo.ProducerBatchCompression(kgo.GzipCompression()))
	for i := range 12 {
		off, _ := produceAt(t, gzipped, zeroRecords(1, 1<<20)...)
		require.Equal(t, int64(100+i), off)
	}
	// Offsets 112..199.
	produceAt(t, plain, grants(t, 88, func(i int) int64 { return 2000 + int64(i) })...)

	f, err := w.RaiseTokenFloor(context.Background())
	require.NoError(t, err)
	require.Equal(t, 88, f.Records)
	require.Equal(t, int64(2087), f.Highest)
	require.Equal(t, 12, f.BatchesSkipped)
	require.Contains(t, log.String(), `"partition":0,"batches_skipped":12,"lowest_offset_read":100,`)
	require.Contains(t, log.String(), "reads no further back past them")
}
