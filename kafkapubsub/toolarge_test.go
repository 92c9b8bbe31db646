package kafkapubsub_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/kafkapubsub"
)

// skipLogger passes on what the subscriber logs, and sends each batch it
// logs as skipped (an error-level line naming the batch's offsets) to
// skipped.
type skipLogger struct {
	watermill.LoggerAdapter
	skipped chan *kgo.ErrDecompressTooLarge
}

func (l skipLogger) Error(msg string, err error, fields watermill.LogFields) {
	var b *kgo.ErrDecompressTooLarge
	if _, named := fields["last_offset"]; named && errors.As(err, &b) {
		l.skipped <- b
	}
	l.LoggerAdapter.Error(msg, err, fields)
}

// tooLargeFixture is a one-partition topic with a producer of single
// records and one of gzipped batches.
type tooLargeFixture struct {
	c              *kfake.Cluster
	plain, gzipped *kgo.Client
}

const tooLargeTopic = "locks.lock.acquired.v1"

func newTooLargeFixture(t *testing.T) tooLargeFixture {
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, tooLargeTopic))
	opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic(tooLargeTopic)}
	plain, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	t.Cleanup(plain.Close)
	gzipped, err := kgo.NewClient(append(opts, kgo.ProducerBatchCompression(kgo.GzipCompression()),
		kgo.ProducerLinger(200*time.Millisecond), kgo.ProducerBatchMaxBytes(64<<20))...)
	require.NoError(t, err)
	t.Cleanup(gzipped.Close)
	return tooLargeFixture{c: c, plain: plain, gzipped: gzipped}
}

// message produces a record of a watermill message named uuid and returns
// its offset.
func (f tooLargeFixture) message(t *testing.T, uuid string) int64 {
	t.Helper()
	r := &kgo.Record{Headers: []kgo.RecordHeader{{Key: kafkapubsub.UUIDHeader, Value: []byte(uuid)}}}
	require.NoError(t, f.plain.ProduceSync(context.Background(), r).FirstErr())
	return r.Offset
}

// bomb produces one gzipped batch of three records of size zero bytes
// each, which takes about a thousandth of that, and returns the offset of
// its first record and the one after its last.
func (f tooLargeFixture) bomb(t *testing.T, size int) (first, next int64) {
	t.Helper()
	zeros := make([]byte, size)
	rs := []*kgo.Record{{Value: zeros}, {Value: zeros}, {Value: zeros}}
	require.NoError(t, f.gzipped.ProduceSync(context.Background(), rs...).FirstErr())
	require.Equal(t, []int64{rs[0].Offset + 1, rs[0].Offset + 2}, []int64{rs[1].Offset, rs[2].Offset})
	return rs[0].Offset, rs[2].Offset + 1
}

func (f tooLargeFixture) subscriber(t *testing.T, group string, opts ...kgo.Opt) (*kafkapubsub.Subscriber, <-chan *kgo.ErrDecompressTooLarge) {
	t.Helper()
	skipped := make(chan *kgo.ErrDecompressTooLarge, 10)
	sub, err := kafkapubsub.NewSubscriber(kafkapubsub.SubscriberConfig{
		Brokers:       f.c.ListenAddrs(),
		ClientOpts:    append(testClientOpts(), opts...),
		ConsumerGroup: group,
	}, skipLogger{watermill.NopLogger{}, skipped})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sub.Close()) })
	return sub, skipped
}

// TestTooLargeBatchIsSkipped: a batch that decompresses past
// kgo.MaxDecompressBatchBytes, which kgo reports once and then fetches its
// partition no further, is skipped, with an error naming its offsets, and
// the message after it is delivered: with the subscriber's default bound,
// and with a caller's lower one (ClientOpts win over the default), alone
// and in a group.
func TestTooLargeBatchIsSkipped(t *testing.T) {
	for _, tc := range []struct {
		name  string
		group string
		opts  []kgo.Opt
		size  int // of each of the batch's three records
	}{
		{"the default bound", "", nil, 12 << 20},
		{"a caller's bound", "", []kgo.Opt{kgo.MaxDecompressBatchBytes(16 << 10)}, 20 << 10},
		{"a caller's bound, in a group", "too-large-group", []kgo.Opt{kgo.MaxDecompressBatchBytes(16 << 10)}, 20 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTooLargeFixture(t)
			f.message(t, "before")
			first, next := f.bomb(t, tc.size)
			f.message(t, "after")

			skipped := f.beforeAndAfter(t, first, next, tc.group, tc.opts...)
			require.Empty(t, skipped, "one batch, logged once")
		})
	}
}

// TestTooLargeBatchSkipIsCommitted: in a group, skipping a batch marks the
// offset past it for commit, as an ack would, so the group's next member
// starts after it even when no message followed it.
func TestTooLargeBatchSkipIsCommitted(t *testing.T) {
	const group = "too-large-commit"
	f := newTooLargeFixture(t)
	f.message(t, "before")
	_, next := f.bomb(t, 20<<10)

	sub, skipped := f.subscriber(t, group, kgo.MaxDecompressBatchBytes(16<<10))
	msgs, err := sub.Subscribe(context.Background(), tooLargeTopic)
	require.NoError(t, err)
	msg := receive(t, msgs)
	require.Equal(t, "before", msg.UUID)
	msg.Ack()
	select {
	case <-skipped:
	case <-time.After(10 * time.Second):
		t.Fatal("the batch was not skipped")
	}
	require.NoError(t, sub.Close()) // commits what is marked

	cl, err := kgo.NewClient(kgo.SeedBrokers(f.c.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	offsets, err := kadm.NewClient(cl).FetchOffsets(context.Background(), group)
	require.NoError(t, err)
	committed, ok := offsets.Lookup(tooLargeTopic, 0)
	require.True(t, ok, "an offset is committed")
	require.Equal(t, next, committed.At, "the committed offset is past the batch")
}

// TestCorruptBatchIsSkipped: a batch that cannot be decompressed (junk
// after its gzip member, its CRC matching, which kfake stores as it comes)
// is skipped as one past the bound is, with an error naming its offsets,
// and the message after it is delivered. kgo's own decompressor would
// fail on it on every fetch, and the partition would deliver nothing more.
func TestCorruptBatchIsSkipped(t *testing.T) {
	f := newTooLargeFixture(t)
	f.message(t, "before")
	corrupt := kafkatest.Corrupt(t, f.c, tooLargeTopic, 0, "corrupt")
	f.message(t, "after")

	f.beforeAndAfter(t, corrupt, corrupt+1, "")
}

// beforeAndAfter subscribes (in group, with opts) and asserts that the
// messages "before" and "after" are delivered, and that the batch between
// them, at offsets first..next-1, was skipped and logged so. It returns
// the skips logged after that one.
func (f tooLargeFixture) beforeAndAfter(t *testing.T, first, next int64, group string, opts ...kgo.Opt) <-chan *kgo.ErrDecompressTooLarge {
	t.Helper()
	sub, skipped := f.subscriber(t, group, opts...)
	msgs, err := sub.Subscribe(context.Background(), tooLargeTopic)
	require.NoError(t, err)
	for _, want := range []string{"before", "after"} {
		msg := receive(t, msgs)
		require.Equal(t, want, msg.UUID)
		msg.Ack()
	}
	select {
	case b := <-skipped:
		require.Equal(t, kgo.ErrDecompressTooLarge{Topic: tooLargeTopic, Partition: 0, Offset: first, Epoch: b.Epoch, NextOffset: next}, *b)
	default:
		t.Fatal("the skip was not logged")
	}
	return skipped
}

// TestTooLargeBatchesInARowDoNotPause: a batch skipped is progress, as a
// record is, so batches past the bound in a row are skipped one after the
// other, without the pause that follows a poll of fetch errors only
// (100 ms doubling to 1 s, 3.5 s for six): the subscription reads all its
// partitions in one loop, and a producer of such batches would hold back
// every reader of the topic.
func TestTooLargeBatchesInARowDoNotPause(t *testing.T) {
	const batches = 6
	f := newTooLargeFixture(t)
	f.message(t, "before")
	for range batches {
		f.bomb(t, 20<<10)
	}
	f.message(t, "after")

	sub, skipped := f.subscriber(t, "", kgo.MaxDecompressBatchBytes(16<<10))
	msgs, err := sub.Subscribe(context.Background(), tooLargeTopic)
	require.NoError(t, err)
	msg := receive(t, msgs)
	require.Equal(t, "before", msg.UUID)
	start := time.Now()
	msg.Ack()
	msg = receive(t, msgs)
	took := time.Since(start)
	require.Equal(t, "after", msg.UUID)
	msg.Ack()
	require.Len(t, skipped, batches, "every batch skipped")
	require.Less(t, took, 500*time.Millisecond, "%d batches skipped in a row", batches)
}
