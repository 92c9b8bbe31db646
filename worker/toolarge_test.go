package worker

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// skipMetrics counts what the batches skipped unread make the worker say.
type skipMetrics struct {
	noMetrics
	mu        sync.Mutex
	dead      map[string]int
	restarted int
}

func (m *skipMetrics) DeadLettered(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dead[reason]++
}

func (m *skipMetrics) PartitionRestarted() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.restarted++
}

func (m *skipMetrics) counts() (dead map[string]int, restarted int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dead = map[string]int{}
	for k, v := range m.dead {
		dead[k] = v
	}
	return dead, m.restarted
}

// runOneCommandsPartition runs a worker on c, with a commands topic of one
// partition and kafkaOpts after c's brokers, until the test ends, and waits
// until it owns the partition.
func runOneCommandsPartition(t *testing.T, c *kfake.Cluster, m Metrics, kafkaOpts ...kgo.Opt) (*Worker, *store.Store) {
	t.Helper()
	st := testdb.New(t)
	w, err := New(Config{KafkaOpts: append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, kafkaOpts...),
		CommandsPartitions: 1, Store: st, Relay: nopRelay{}, Metrics: m})
	require.NoError(t, err)
	require.NoError(t, w.EnsureTopics(context.Background()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		w.Close()
	})
	require.Eventually(t, func() bool { return len(w.Partitions()) == 1 }, 30*time.Second, 10*time.Millisecond,
		"the worker owns the commands partition")
	return w, st
}

// producers returns a client producing plain records to partition 0 of the
// commands topic, and one producing gzipped batches of what one
// ProduceSync call sends.
func producers(t *testing.T, c *kfake.Cluster) (plain, gzipped *kgo.Client) {
	t.Helper()
	opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic(topics.DefaultNames().Commands),
		kgo.RecordPartitioner(kgo.ManualPartitioner())}
	plain, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	t.Cleanup(plain.Close)
	gzipped, err = kgo.NewClient(append(opts, kgo.ProducerBatchCompression(kgo.GzipCompression()),
		kgo.ProducerLinger(200*time.Millisecond), kgo.ProducerBatchMaxBytes(32<<20))...)
	require.NoError(t, err)
	t.Cleanup(gzipped.Close)
	return plain, gzipped
}

// produce sends rs to partition 0 in one ProduceSync call (one batch, when
// cl lingers) and returns their offsets.
func produce(t *testing.T, cl *kgo.Client, rs ...*kgo.Record) []int64 {
	t.Helper()
	require.NoError(t, cl.ProduceSync(context.Background(), rs...).FirstErr())
	offs := make([]int64, len(rs))
	for i, r := range rs {
		offs[i] = r.Offset
	}
	return offs
}

// acquire is an acquire record answered on reply.
func acquire(t *testing.T, id, reply string) *kgo.Record {
	return &kgo.Record{Key: []byte(id), Value: command(t, topics.Command{RequestID: id, Operation: topics.OpAcquire,
		LockName: id, OwnerID: "o", ReplyTo: reply})}
}

// zeros is a record whose value is n zero bytes: a gzipped batch of them
// takes about a thousandth of that.
func zeros(n int) *kgo.Record { return &kgo.Record{Key: []byte("bomb"), Value: make([]byte, n)} }

// answered returns the request_ids answered on reply, in outbox order.
func answered(t *testing.T, st *store.Store, reply string) []string {
	var ids []string
	for _, r := range outboxRows(t, st, reply, 0) {
		id, _ := r.header(topics.HeaderRequestID)
		ids = append(ids, id)
	}
	return ids
}

// requireMarker checks that row is the dead-letter marker of the batch at
// offsets first..last of partition 0.
func requireMarker(t *testing.T, row outboxRow, first, last int64) {
	t.Helper()
	require.Nil(t, row.key)
	require.True(t, row.valueWasNull)
	for k, want := range map[string]string{
		topics.HeaderSourceTopic:     topics.DefaultNames().Commands,
		topics.HeaderSourcePartition: "0",
		topics.HeaderSourceOffset:    strconv.FormatInt(first, 10),
		HeaderSourceLastOffset:       strconv.FormatInt(last, 10),
	} {
		got, ok := row.header(k)
		require.True(t, ok, k)
		require.Equal(t, want, got, k)
	}
	msg, _ := row.header(topics.HeaderError)
	require.True(t, strings.HasPrefix(msg, DeadLetterBatchTooLarge+": "), msg)
	require.Contains(t, msg, "offsets "+strconv.FormatInt(first, 10)+".."+strconv.FormatInt(last, 10))
}

// A batch that decompresses past the bound (kgo reports it and fetches the
// partition no further until it is moved past the batch) is skipped whole:
// the commands before and after it on the same partition are answered, the
// stored offset moves past everything, and a marker naming the batch's
// offsets goes to the dead-letter topic, counted and logged. Nothing else
// is skipped or dead-lettered.
func TestBatchTooLargeIsSkipped(t *testing.T) {
	c := kafkatest.Cluster(t)
	m := &skipMetrics{dead: map[string]int{}}
	_, st := runOneCommandsPartition(t, c, m, kgo.MaxDecompressBatchBytes(16<<10))
	plain, gzipped := producers(t, c)
	reply := "locks.replies.too-large"
	before := produce(t, plain, acquire(t, "before-1", reply), acquire(t, "before-2", reply))
	bomb := produce(t, gzipped, zeros(20<<10), zeros(20<<10), zeros(20<<10))
	require.Equal(t, []int64{before[1] + 1, before[1] + 2, before[1] + 3}, bomb)
	after := produce(t, plain, acquire(t, "after-1", reply), acquire(t, "after-2", reply))

	require.Eventually(t, func() bool { return storedOffset(t, st, 0) == after[1]+1 }, 30*time.Second, 10*time.Millisecond,
		"the stored offset passes the batch and the commands after it")
	require.Equal(t, []string{"before-1", "before-2", "after-1", "after-2"}, answered(t, st, reply))
	for _, lock := range []string{"before-1", "before-2", "after-1", "after-2"} {
		require.EqualValues(t, 1, acquisitions(t, st, lock))
	}
	dlq := outboxRows(t, st, topics.DefaultNames().DeadLetter, 0)
	require.Len(t, dlq, 1, "one marker, no copy")
	requireMarker(t, dlq[0], bomb[0], bomb[2])
	dead, restarted := m.counts()
	require.Equal(t, map[string]int{DeadLetterBatchTooLarge: 1}, dead)
	require.Zero(t, restarted)
}

// The same without lowering the bound: a record of zeros past 16 MiB, a
// batch of about 17 KB, is skipped, and the command after it answered.
func TestBatchPastTheDefaultBoundIsSkipped(t *testing.T) {
	c := kafkatest.Cluster(t)
	_, st := runOneCommandsPartition(t, c, &skipMetrics{dead: map[string]int{}})
	plain, gzipped := producers(t, c)
	reply := "locks.replies.too-large-default"
	bomb := produce(t, gzipped, zeros(maxBatchBytes+1))
	after := produce(t, plain, acquire(t, "after", reply))
	requireSkipped(t, st, reply, after[0]+1, []string{"after"}, bomb[0], bomb[0])
}

// requireSkipped waits until the stored offset passes next-1, the last
// record produced after a skipped batch, and requires the commands
// answered on reply to be answers, and one marker, no copy, on the
// dead-letter topic for the batch at offsets first..last, which it returns.
func requireSkipped(t *testing.T, st *store.Store, reply string, next int64, answers []string, first, last int64) outboxRow {
	t.Helper()
	require.Eventually(t, func() bool { return storedOffset(t, st, 0) == next }, 30*time.Second, 10*time.Millisecond,
		"the stored offset passes the batch and the command after it")
	require.Equal(t, answers, answered(t, st, reply))
	dlq := outboxRows(t, st, topics.DefaultNames().DeadLetter, 0)
	require.Len(t, dlq, 1, "one marker, no copy")
	requireMarker(t, dlq[0], first, last)
	return dlq[0]
}

// A batch too large to read found while the records before it still wait
// for their transaction (here held by a lock the test takes on the
// partition's offset row, as PostgreSQL not answering would) is skipped
// after them, in order: nothing moves the stored offset until the records
// before it are applied, nor the group's offset committed to Kafka (at a
// revoke, a withdrawal's too, or by the autocommit): the client is moved
// past the batch, a seek, which kgo marks for commit, only once its skip
// committed; else the partition's next owner would take Kafka's offset,
// ahead, for PostgreSQL having lost transactions. Then the batch is
// skipped and the command after it applied, without the partition being
// taken for moved by another replica.
func TestBatchTooLargeIsSkippedAfterTheRecordsBeforeIt(t *testing.T) {
	ctx := context.Background()
	h := skipQueuedBehindARecord(t, "locks.replies.too-large-order")
	w, st, m, tx, first, bomb, after, reply := h.w, h.st, h.m, h.tx, h.first, h.bomb, h.after, h.reply
	require.EqualValues(t, first[0]+1, storedOffset(t, st, 0), "nothing applied or skipped ahead of the record before the batch")
	require.Empty(t, outboxRows(t, st, topics.DefaultNames().DeadLetter, 0))
	w.commitMarks(ctx) // as a revoke does
	committed, err := kadm.NewClient(w.cl).FetchOffsets(ctx, w.cfg.Group)
	require.NoError(t, err)
	o, ok := committed.Lookup(topics.DefaultNames().Commands, 0)
	require.True(t, ok)
	require.LessOrEqual(t, o.At, first[0]+1, "the group's offset in Kafka is not ahead of the stored offset")

	require.NoError(t, tx.Rollback(ctx))
	marker := requireSkipped(t, st, reply, after[0]+1, []string{"first", "before", "after"}, bomb[0], bomb[1])
	rows := outboxRows(t, st, reply, 0)
	require.Less(t, rows[1].id, marker.id, "the marker after the answer before the batch")
	require.Less(t, marker.id, rows[2].id, "and before the answer after it")
	dead, restarted := m.counts()
	require.Equal(t, map[string]int{DeadLetterBatchTooLarge: 1}, dead)
	require.Zero(t, restarted, "the partition was not taken for moved")
}

// Driven directly: a skip queued with the records around it is applied in
// one transaction, its marker between their answers; a skip the stored
// offset already passed (redelivered after another replica skipped it) is
// not dead-lettered again.
func TestSkipAppliedWithTheRecordsAroundIt(t *testing.T) {
	w, st := newApplier(t)
	p := own(w, 2)
	topic := topics.DefaultNames().Commands
	skip := &kgo.ErrDecompressTooLarge{Topic: topic, Partition: 2, Offset: 1, NextOffset: 4, Epoch: 0}
	apply(w, seg(t, p, 0, "a"), segment{p: p, tooLarge: skip, polledAt: time.Now()}, seg(t, p, 4, "b"))
	require.EqualValues(t, 5, storedOffset(t, st, 2))
	require.EqualValues(t, 1, acquisitions(t, st, "a"))
	require.EqualValues(t, 1, acquisitions(t, st, "b"))
	dlq := outboxRows(t, st, topics.DefaultNames().DeadLetter, 0)
	require.Len(t, dlq, 1)
	part, _ := dlq[0].header(topics.HeaderSourcePartition)
	first, _ := dlq[0].header(topics.HeaderSourceOffset)
	last, _ := dlq[0].header(HeaderSourceLastOffset)
	require.Equal(t, []string{"2", "1", "3"}, []string{part, first, last})

	// Redelivered: the records and the skip are below the stored offset.
	apply(w, seg(t, p, 0, "a"), segment{p: p, tooLarge: skip, polledAt: time.Now()}, seg(t, p, 4, "b"))
	require.EqualValues(t, 5, storedOffset(t, st, 2))
	require.Len(t, outboxRows(t, st, topics.DefaultNames().DeadLetter, 0), 1)
	// A skip alone, as the first thing after them.
	apply(w, segment{p: p, tooLarge: &kgo.ErrDecompressTooLarge{Topic: topic, Partition: 2, Offset: 5, NextOffset: 9}, polledAt: time.Now()})
	require.EqualValues(t, 9, storedOffset(t, st, 2))
	require.Len(t, outboxRows(t, st, topics.DefaultNames().DeadLetter, 0), 2)
}

// A batch too large to read that the client reports while the partition is
// stopped to restart (takenOver) is left alone, and the client fetches the
// partition no further. The restart's seek, to the stored offset, is here
// where the client stands (the record polled last + 1, with its epoch), a
// seek kgo would not make: it is made anyway (refetch), the batch is met
// again and skipped, and the command after it answered.
func TestBatchTooLargeMetWhileRestartingIsSkipped(t *testing.T) {
	ctx := context.Background()
	c := kafkatest.Cluster(t)
	m := &skipMetrics{dead: map[string]int{}}
	w, st := runOneCommandsPartition(t, c, m, kgo.MaxDecompressBatchBytes(16<<10))
	plain, gzipped := producers(t, c)
	reply := "locks.replies.too-large-restart"
	first := produce(t, plain, acquire(t, "first", reply))
	require.Eventually(t, func() bool { return storedOffset(t, st, 0) == first[0]+1 }, 30*time.Second, 10*time.Millisecond)

	// Another replica applies the next record first: the stored offset
	// moves past it, with its epoch (that of the record before, on kfake).
	_, err := st.Pool.Exec(ctx, `UPDATE consumer_offsets SET next_offset = $1, leader_epoch_offset = $1 WHERE partition = 0`, first[0]+2)
	require.NoError(t, err)
	w.mu.Lock()
	w.restarts[0] = restartLog{at: time.Now(), delay: restartMaxDelay} // the next restart waits restartMaxDelay
	old := w.parts[0]
	w.mu.Unlock()
	taken := produce(t, plain, acquire(t, "taken", reply))
	require.Equal(t, first[0]+1, taken[0])
	require.Eventually(t, old.stopped, 10*time.Second, 5*time.Millisecond, "the partition is taken for moved")
	bomb := produce(t, gzipped, zeros(20<<10), zeros(20<<10))
	require.Equal(t, taken[0]+1, bomb[0], "the batch is at the stored offset")
	require.Eventually(t, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.parts[0] == old && old.refetch
	}, restartMaxDelay-500*time.Millisecond, 5*time.Millisecond, "the batch reported while the partition waits to restart")
	after := produce(t, plain, acquire(t, "after", reply))

	requireSkipped(t, st, reply, after[0]+1, []string{"first", "after"}, bomb[0], bomb[1])
	dead, restarted := m.counts()
	require.Equal(t, map[string]int{DeadLetterBatchTooLarge: 1}, dead)
	require.Equal(t, 1, restarted)
}

// A skip whose transaction committed but whose COMMIT's answer was lost is
// logged and counted once the retry learns it committed (settleMoved): the
// retry's offset guard fails before it writes anything.
func TestSkipFoundCommittedOnRetryIsCounted(t *testing.T) {
	ctx := context.Background()
	w, st := newApplier(t)
	m := &skipMetrics{dead: map[string]int{}}
	w.cfg.Metrics = m
	p := w.newPartition(w.hard, 0)
	apply(w, seg(t, p, 0, "a"))
	skip := &kgo.ErrDecompressTooLarge{Topic: topics.DefaultNames().Commands, Partition: 0, Offset: 1, NextOffset: 3}
	parts := group([]segment{{p: p, tooLarge: skip, polledAt: time.Now()}})
	var sent *sentAttempt
	_, err := w.applyTx(ctx, parts, &sent, nil, false) // commits; suppose its answer was lost
	require.NoError(t, err)
	require.EqualValues(t, 3, storedOffset(t, st, 0))

	_, err = w.applyTx(ctx, parts, &sent, nil, false) // InTx's retry
	var moved *store.OffsetMovedError
	require.ErrorAs(t, err, &moved)
	rest, err := w.settleMoved(ctx, parts, moved, &sent, time.Now())
	require.NoError(t, err)
	require.Empty(t, rest)
	require.Len(t, outboxRows(t, st, topics.DefaultNames().DeadLetter, 0), 1)
	dead, _ := m.counts()
	require.Equal(t, map[string]int{DeadLetterBatchTooLarge: 1}, dead)
}

// Batches far under the absolute bound but compressed past fetchbound.Ratio
// (a megabyte of zeros gzips to about a kilobyte) are skipped as well,
// each with its marker: a fetch response of many of them would otherwise
// inflate to a thousand times its size. A gzipped batch of commands, which
// compresses about tenfold, is read and answered.
func TestBatchesCompressedPastTheRatioAreSkipped(t *testing.T) {
	c := kafkatest.Cluster(t)
	m := &skipMetrics{dead: map[string]int{}}
	_, st := runOneCommandsPartition(t, c, m)
	_, gzipped := producers(t, c)
	reply := "locks.replies.too-large-ratio"
	var bombs []int64
	for range 20 {
		bombs = append(bombs, produce(t, gzipped, zeros(1<<20))...)
	}
	var cmds []*kgo.Record
	var ids []string
	for i := range 200 {
		id := "after-" + strconv.Itoa(i)
		cmds = append(cmds, acquire(t, id, reply))
		ids = append(ids, id)
	}
	after := produce(t, gzipped, cmds...)
	require.Eventually(t, func() bool { return storedOffset(t, st, 0) == after[len(after)-1]+1 }, 30*time.Second, 10*time.Millisecond,
		"the stored offset passes the batches and the commands after them")
	require.Equal(t, ids, answered(t, st, reply))
	dlq := outboxRows(t, st, topics.DefaultNames().DeadLetter, 0)
	require.Len(t, dlq, len(bombs), "one marker per batch, no copy")
	for i, off := range bombs {
		requireMarker(t, dlq[i], off, off)
	}
	dead, _ := m.counts()
	require.Equal(t, map[string]int{DeadLetterBatchTooLarge: len(bombs)}, dead)
}

// mangler compresses batches with codec, as kgo does, then hands them to
// mangle: a producer of batches that decompress wrong.
type mangler struct {
	codec  kgo.CompressionCodec
	mangle func([]byte) []byte
}

func (m mangler) Compress(dst *bytes.Buffer, src []byte, flags ...kgo.CompressFlag) ([]byte, kgo.CompressionCodecType) {
	c, err := kgo.DefaultCompressor(m.codec)
	if err != nil {
		panic(err)
	}
	out, codec := c.Compress(dst, src, flags...)
	return m.mangle(bytes.Clone(out)), codec
}

// mangling returns a client producing to partition 0 of the commands topic
// batches compressed with codec, then mangled.
func mangling(t *testing.T, c *kfake.Cluster, codec kgo.CompressionCodec, mangle func([]byte) []byte) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic(topics.DefaultNames().Commands),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(200*time.Millisecond),
		kgo.WithCompressor(mangler{codec: codec, mangle: mangle}))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// A batch that cannot be decompressed (corrupt, which kfake passes on, or
// one Java's readers accept and the worker's refuse) is skipped as one
// past the bound is, instead of stopping its partition: the commands
// before and after it are answered, and a marker naming its offsets goes
// to the dead-letter topic.
func TestUnreadableBatchIsSkipped(t *testing.T) {
	for _, tc := range []struct {
		name   string
		codec  kgo.CompressionCodec
		mangle func([]byte) []byte
	}{
		{"lz4 content checksum", kgo.Lz4Compression(), func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b }},
		{"snappy cut short", kgo.SnappyCompression(), func(b []byte) []byte { return b[:len(b)-1] }},
		{"gzip followed by a header and junk", kgo.GzipCompression(), func(b []byte) []byte { return append(b, b[:12]...) }},
		// Java's GZIPInputStream ignores both; a batch read only to
		// its first member would hand out part of its records and stop
		// the partition without an error.
		{"gzip followed by junk", kgo.GzipCompression(), func(b []byte) []byte { return append(b, "junk"...) }},
		{"gzip member with a reserved flag bit", kgo.GzipCompression(), func(b []byte) []byte { return append(b, kafkatest.ReservedGzipFlag(b)...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := kafkatest.Cluster(t)
			m := &skipMetrics{dead: map[string]int{}}
			_, st := runOneCommandsPartition(t, c, m)
			plain, _ := producers(t, c)
			reply := "locks.replies.unreadable"
			before := produce(t, plain, acquire(t, "before", reply))
			var cmds []*kgo.Record
			for i := range 5 {
				cmds = append(cmds, acquire(t, "corrupt-"+strconv.Itoa(i), reply))
			}
			bad := produce(t, mangling(t, c, tc.codec, tc.mangle), cmds...)
			require.Equal(t, before[0]+1, bad[0])
			after := produce(t, plain, acquire(t, "after", reply))

			marker := requireSkipped(t, st, reply, after[0]+1, []string{"before", "after"}, bad[0], bad[4])
			msg, _ := marker.header(topics.HeaderError)
			require.Contains(t, msg, "or cannot be decompressed")
			dead, _ := m.counts()
			require.Equal(t, map[string]int{DeadLetterBatchTooLarge: 1}, dead)
		})
	}
}

// heldSkip is a partition whose skip of a batch too large to read is
// queued behind a record the applier holds (skipQueuedBehindARecord).
type heldSkip struct {
	w     *Worker
	st    *store.Store
	m     *skipMetrics
	tx    pgx.Tx // holds the partition's offset row
	reply string
	// first was applied; before waits for the row tx holds; bomb is the
	// batch's first and last offsets; after follows it.
	first, before, bomb, after []int64
}

// skipQueuedBehindARecord runs one commands partition, applies a command,
// holds the partition's offset row (as PostgreSQL not answering would)
// while a command, a batch too large to read and another command are
// produced, and returns once the batch's skip is queued behind the held
// command. The row stays held until h.tx ends.
func skipQueuedBehindARecord(t *testing.T, reply string) *heldSkip {
	t.Helper()
	ctx := context.Background()
	c := kafkatest.Cluster(t)
	h := &heldSkip{m: &skipMetrics{dead: map[string]int{}}, reply: reply}
	h.w, h.st = runOneCommandsPartition(t, c, h.m, kgo.MaxDecompressBatchBytes(16<<10))
	plain, gzipped := producers(t, c)
	h.first = produce(t, plain, acquire(t, "first", reply))
	require.Eventually(t, func() bool { return storedOffset(t, h.st, 0) == h.first[0]+1 }, 30*time.Second, 10*time.Millisecond)

	tx, err := h.st.Pool.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.WithoutCancel(ctx)) })
	h.tx = tx
	_, err = tx.Exec(ctx, `SELECT FROM consumer_offsets WHERE partition = 0 FOR UPDATE`)
	require.NoError(t, err)
	h.before = produce(t, plain, acquire(t, "before", reply))
	waitForARowLock(t, h.st, "the applier waits for the partition's row with the record before the batch")
	h.bomb = produce(t, gzipped, zeros(20<<10), zeros(20<<10))
	require.Equal(t, h.before[0]+1, h.bomb[0])
	h.after = produce(t, plain, acquire(t, "after", reply))

	q := h.w.lanes[0]
	require.Eventually(t, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		for _, s := range q.pending {
			if s.tooLarge != nil && s.tooLarge.Offset == h.bomb[0] {
				return true
			}
		}
		return false
	}, 30*time.Second, 5*time.Millisecond, "the skip queued")
	return h
}

// A skip queued (the client stopped at the batch until the skip commits)
// whose partition is restarted before the skip commits (another replica
// applied exactly the records before the batch): the restart's seek to the
// stored offset is where the client stands, which kgo does not make, so
// the partition is marked refetch when the skip is queued; else it was
// fetched no further, for ever, and nothing said so.
func TestRestartWhileSkipQueuedGoesOn(t *testing.T) {
	ctx := context.Background()
	h := skipQueuedBehindARecord(t, "locks.replies.restart-skip")
	// Another replica (a stale owner) applies the record before the batch,
	// and only it: the stored offset moves past it, keeping its epoch.
	_, err := h.tx.Exec(ctx, `UPDATE consumer_offsets SET next_offset = $1, leader_epoch_offset = $1 WHERE partition = 0`, h.before[0]+1)
	require.NoError(t, err)
	require.NoError(t, h.tx.Commit(ctx))

	require.Eventually(t, func() bool { _, r := h.m.counts(); return r == 1 }, 10*time.Second, 5*time.Millisecond, "taken for moved")
	require.Eventually(t, func() bool { return storedOffset(t, h.st, 0) == h.after[0]+1 }, 20*time.Second, 20*time.Millisecond,
		"the batch is skipped and the command after it applied")
}
