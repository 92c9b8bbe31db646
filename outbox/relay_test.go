package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/internal/testport"
	"github.com/omninode/lockworker/kafkapubsub"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// rec is one outbox row to write and the record it must become.
type rec struct {
	topic, key, value, ceID string
}

func newCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// clientOpts make a dead broker show within a second instead of never.
func clientOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.RecordDeliveryTimeout(time.Second),
		kgo.ProduceRequestTimeout(time.Second),
		kgo.MetadataMinAge(50 * time.Millisecond),
		kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }),
	}
}

// recorder wraps a publisher and remembers what it was asked, in order.
type recorder struct {
	message.Publisher
	mu       sync.Mutex
	sent     []string // "topic/value" of every acknowledged message
	calls    atomic.Int64
	failures atomic.Int64
}

func (r *recorder) Publish(topic string, msgs ...*message.Message) error {
	r.calls.Add(1)
	err := r.Publisher.Publish(topic, msgs...)
	r.record(topic, msgs, err)
	return err
}

// PublishTopicsEach is the call the relay makes for topics published
// together (kafkapubsub.Publisher's), recorded like Publish as each topic's
// outcome comes.
func (r *recorder) PublishTopicsEach(done func(i int, err error), batches ...kafkapubsub.TopicMessages) {
	r.calls.Add(1)
	r.Publisher.(*kafkapubsub.Publisher).PublishTopicsEach(func(i int, err error) {
		r.record(batches[i].Topic, batches[i].Messages, err)
		done(i, err)
	}, batches...)
}

// record notes the messages of a publish that Kafka wrote: all of them, or
// those a partial failure (a *kafkapubsub.PublishError) does not list, as
// the relay deletes their rows.
func (r *recorder) record(topic string, msgs []*message.Message, err error) {
	failed := map[int]bool{}
	if err != nil {
		r.failures.Add(1)
		var pe *kafkapubsub.PublishError
		if !errors.As(err, &pe) || pe.Total != len(msgs) {
			return
		}
		for _, f := range pe.Failed {
			failed[f.Index] = true
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, m := range msgs {
		if !failed[i] {
			r.sent = append(r.sent, topic+"/"+string(m.Payload))
		}
	}
}

func (r *recorder) acked() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.sent...)
}

func newPublisher(t *testing.T, brokers []string, autoCreate bool, opts ...kgo.Opt) *recorder {
	t.Helper()
	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
		Brokers:          brokers,
		ClientOpts:       append(clientOpts(), opts...),
		AutoCreateTopics: autoCreate,
		TopicPartitions:  1,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		// Close waits for a Publish that kgo may hold while no broker
		// answers: do not let that hang the test binary.
		done := make(chan struct{})
		go func() { _ = pub.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Log("publisher did not close")
		}
	})
	return &recorder{Publisher: pub}
}

func newRelay(t *testing.T, st *store.Store, pub message.Publisher, mod func(*outbox.Config)) *outbox.Relay {
	t.Helper()
	cfg := outbox.Config{
		Publisher:      pub,
		Pool:           st.Pool,
		PollInterval:   50 * time.Millisecond,
		PublishTimeout: 3 * time.Second,
		RetryBase:      10 * time.Millisecond,
		RetryMax:       200 * time.Millisecond,
		Logger:         zerolog.New(zerolog.NewTestWriter(t)),
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := outbox.New(cfg)
	require.NoError(t, err)
	return r
}

// start runs fn in the background until the test ends.
func start(t *testing.T, fn func(ctx context.Context) error) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	stop := func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("relay goroutine did not stop")
		}
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(stop) })
	return func() { once.Do(stop) }
}

// insert writes rows the way handlers do, in one transaction (the relay finds
// them when woken, or at its next poll).
func insert(t *testing.T, st *store.Store, partition int32, rows ...rec) {
	t.Helper()
	err := st.InTx(context.Background(), func(tx pgx.Tx) error {
		b := handlers.NewBatch(tx, handlers.Env{Partition: partition})
		for _, r := range rows {
			b.Publish(r.topic, []byte(r.key), []byte(r.value), headersOf(r))
		}
		return b.Flush(context.Background())
	})
	require.NoError(t, err)
}

func headersOf(r rec) []topics.Header {
	h := []topics.Header{
		{Key: topics.HeaderContentType, Value: []byte("application/json")},
		{Key: "binary", Value: []byte{0, 0xff, '\n', 0x80}},
	}
	if r.ceID != "" {
		h = append(h, topics.Header{Key: topics.HeaderCEID, Value: []byte(r.ceID)})
	}
	return h
}

// consume reads topic from the start until want records arrived.
func consume(t *testing.T, brokers []string, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want && ctx.Err() == nil {
		out = append(out, cl.PollFetches(ctx).Records()...)
	}
	require.GreaterOrEqual(t, len(out), want, "records in %s", topic)
	return out
}

func values(rs []*kgo.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r.Value)
	}
	return out
}

func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

func count(t *testing.T, st *store.Store, where string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, st.Pool.QueryRow(context.Background(), "SELECT count(*) FROM outbox WHERE "+where, args...).Scan(&n))
	return n
}

// TestDeliversInOrder: rows of two topics, written in several transactions,
// reach Kafka in id order with key, value and headers intact, and are gone
// from the table afterwards.
func TestDeliversInOrder(t *testing.T) {
	t.Parallel()
	for _, concurrent := range []bool{false, true} {
		t.Run(fmt.Sprintf("OrderAcrossTopics=%v", !concurrent), func(t *testing.T) {
			t.Parallel()
			deliversInOrder(t, concurrent)
		})
	}
}

func deliversInOrder(t *testing.T, concurrent bool) {
	const a, b, p = "locks.replies.svc", "locks.lock.acquired.v1", int32(2)
	c := newCluster(t, kfake.SeedTopics(1, a, b))
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	var published atomic.Int64
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) {
		cfg.BatchSize = 3 // several passes
		cfg.OrderAcrossTopics = !concurrent
		cfg.OnPublished = func(n int, oldest time.Duration) {
			published.Add(int64(n))
			assert.Positive(t, oldest)
		}
	})

	first := []rec{
		{a, "ns/l1", "a1", "e-a1"}, {a, "ns/l1", "a2", "e-a2"}, {b, "ns/l1", "b1", "e-b1"},
		{a, "ns/l2", "a3", "e-a3"},
	}
	second := []rec{{b, "ns/l2", "b2", "e-b2"}, {b, "ns/l1", "b3", "e-b3"}, {a, "ns/l1", "a4", "e-a4"}}
	insert(t, st, p, first...)
	insert(t, st, p, second...)
	insert(t, st, p+1, rec{a, "other", "other-partition", "e-x"})
	// A row as a dead-letter copy could look: no ce_id, NULL key.
	_, err := st.Pool.Exec(context.Background(), `INSERT INTO outbox (source_partition, topic, key, value) VALUES ($1, $2, NULL, 'dlq')`, p, a)
	require.NoError(t, err)

	n, err := relay.DrainOnce(context.Background(), p)
	require.NoError(t, err)
	require.Equal(t, 8, n)
	assert.EqualValues(t, 8, published.Load())
	assert.Equal(t, 0, count(t, st, "source_partition = $1", p), "published rows are deleted")
	assert.Equal(t, 1, count(t, st, "source_partition = $1", p+1), "other partitions are left alone")

	if !concurrent {
		// Acknowledged in id order across both topics.
		assert.Equal(t, []string{a + "/a1", a + "/a2", b + "/b1", a + "/a3", b + "/b2", b + "/b3", a + "/a4", a + "/dlq"}, pub.acked())
	}

	ra := consume(t, c.ListenAddrs(), a, 5)
	rb := consume(t, c.ListenAddrs(), b, 3)
	assert.Equal(t, []string{"a1", "a2", "a3", "a4", "dlq"}, values(ra))
	assert.Equal(t, []string{"b1", "b2", "b3"}, values(rb))
	want := map[string]rec{}
	for _, r := range append(first, second...) {
		want[r.value] = r
	}
	for _, r := range append(ra[:4], rb...) {
		w := want[string(r.Value)]
		assert.Equal(t, w.key, string(r.Key))
		ce, _ := header(r, topics.HeaderCEID)
		assert.Equal(t, w.ceID, ce)
		id, _ := header(r, kafkapubsub.UUIDHeader)
		assert.Equal(t, w.ceID, id, "the message UUID is the event id")
		ct, _ := header(r, topics.HeaderContentType)
		assert.Equal(t, "application/json", ct)
		bin, _ := header(r, "binary")
		assert.Equal(t, string([]byte{0, 0xff, '\n', 0x80}), bin, "binary header values survive")
	}
	dlq := ra[4]
	assert.Nil(t, dlq.Key)
	id, ok := header(dlq, kafkapubsub.UUIDHeader)
	assert.True(t, ok && id != "", "a row without ce_id gets a fresh UUID")

	n, err = relay.DrainOnce(context.Background(), p)
	require.NoError(t, err)
	assert.Zero(t, n)
}

// TestCopiedHeadersKeepTheirPlace: a dead-letter copy keeps its
// producer's headers, which may carry the names the publisher reads its
// key and message UUID from. They go out renamed: a copy of a record
// without a key has no key, and the record has one UUID header, the
// relay's.
func TestCopiedHeadersKeepTheirPlace(t *testing.T) {
	t.Parallel()
	const dlq, p = "locks.commands.dlq", int32(11)
	c := newCluster(t, kfake.SeedTopics(1, dlq))
	st := testdb.New(t)
	relay := newRelay(t, st, newPublisher(t, c.ListenAddrs(), false), nil)
	err := st.InTx(context.Background(), func(tx pgx.Tx) error {
		b := handlers.NewBatch(tx, handlers.Env{Partition: p})
		b.Publish(dlq, nil, []byte("copy"), []topics.Header{
			{Key: kafkapubsub.DefaultKeyMetadata, Value: []byte("client-key")},
			{Key: kafkapubsub.UUIDHeader, Value: []byte("client-uuid")},
			{Key: topics.HeaderError, Value: []byte("INVALID_REQUEST: no key")},
		})
		return b.Flush(context.Background())
	})
	require.NoError(t, err)
	n, err := relay.DrainOnce(context.Background(), p)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	rec := consume(t, c.ListenAddrs(), dlq, 1)[0]
	assert.Nil(t, rec.Key, "the copied record had none")
	got := map[string][]string{}
	for _, h := range rec.Headers {
		got[h.Key] = append(got[h.Key], string(h.Value))
	}
	require.Len(t, got[kafkapubsub.UUIDHeader], 1)
	assert.NotEqual(t, "client-uuid", got[kafkapubsub.UUIDHeader][0])
	assert.Empty(t, got[kafkapubsub.DefaultKeyMetadata])
	assert.Equal(t, []string{"client-key"}, got["original_"+kafkapubsub.DefaultKeyMetadata])
	assert.Equal(t, []string{"client-uuid"}, got["original_"+kafkapubsub.UUIDHeader])
	assert.Equal(t, []string{"INVALID_REQUEST: no key"}, got[topics.HeaderError])
}

// TestWakeWakesRelay: with a 30 s poll interval, only Wake can deliver
// within the test's patience.
func TestWakeWakesRelay(t *testing.T) {
	t.Parallel()
	const topic, p = "locks.lock.released.v1", int32(5)
	c := newCluster(t, kfake.SeedTopics(1, topic))
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) { cfg.PollInterval = 30 * time.Second })
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
	delivered := func(n int) func() bool {
		return func() bool { return len(pub.acked()) == n }
	}
	// Run drains at start; after that it sleeps until woken.
	insert(t, st, p, rec{topic, "k", "v1", "e1"})
	relay.Wake(p)
	require.Eventually(t, delivered(1), 10*time.Second, 10*time.Millisecond, "Wake must wake the relay")
	insert(t, st, p, rec{topic, "k", "v2", "e2"}, rec{topic, "k", "v3", "e3"})
	relay.Wake(p)
	require.Eventually(t, delivered(3), 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, []string{"v1", "v2", "v3"}, values(consume(t, c.ListenAddrs(), topic, 3)))
	require.Eventually(t, func() bool { return count(t, st, "true") == 0 }, 10*time.Second, 10*time.Millisecond, "published rows are deleted")
}

// hook runs a function before each Publish of the publisher it wraps.
type hook struct {
	message.Publisher
	before func()
}

func (h hook) Publish(topic string, msgs ...*message.Message) error {
	h.before()
	return h.Publisher.Publish(topic, msgs...)
}

// TestAckedRowsDeletedByNextPass: rows acknowledged while the next pass is
// already due (a commit woke the relay during the publish) are deleted by
// that pass's query, before it selects: nothing is published twice, and the
// table is empty once the relay rests.
func TestAckedRowsDeletedByNextPass(t *testing.T) {
	t.Parallel()
	const topic, p = "locks.lock.acquired.v1", int32(2)
	c := newCluster(t, kfake.SeedTopics(1, topic))
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	var relay *outbox.Relay
	var published atomic.Int64
	wrapped := hook{Publisher: pub, before: func() {
		// Every publish but the last commits one more row and wakes the
		// relay, as a worker batch committing meanwhile does.
		if n := published.Add(1); n < 5 {
			insert(t, st, p, rec{topic, "k", fmt.Sprintf("v%d", n+1), fmt.Sprintf("e%d", n+1)})
			relay.Wake(p)
		}
	}}
	relay = newRelay(t, st, wrapped, func(cfg *outbox.Config) { cfg.PollInterval = time.Minute })
	insert(t, st, p, rec{topic, "k", "v1", "e1"})
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
	require.Eventually(t, func() bool { return len(pub.acked()) >= 5 && count(t, st, "true") == 0 }, 10*time.Second, 10*time.Millisecond)
	want := []string{"v1", "v2", "v3", "v4", "v5"}
	assert.Equal(t, want, values(consume(t, c.ListenAddrs(), topic, 5)))
	for i, w := range want {
		want[i] = topic + "/" + w
	}
	assert.Equal(t, want, pub.acked(), "each row published once")
}

// TestAckedRowsDeletedWhenResting: with no pass coming, acknowledged rows
// are deleted after DeleteDelay, and, whatever the delay, when Run stops.
func TestAckedRowsDeletedWhenResting(t *testing.T) {
	t.Parallel()
	const topic = "locks.lock.released.v1"
	c := newCluster(t, kfake.SeedTopics(1, topic))
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	for _, tc := range []struct {
		p     int32
		delay time.Duration
	}{{p: 3, delay: 50 * time.Millisecond}, {p: 4, delay: time.Hour}} {
		relay := newRelay(t, st, pub, func(cfg *outbox.Config) { cfg.PollInterval, cfg.DeleteDelay = time.Minute, tc.delay })
		insert(t, st, tc.p, rec{topic, "k", fmt.Sprint("r", tc.p), fmt.Sprint("e", tc.p)})
		stop := start(t, func(ctx context.Context) error { return relay.Run(ctx, tc.p) })
		require.Eventually(t, func() bool { return slices.Contains(pub.acked(), fmt.Sprint(topic, "/r", tc.p)) }, 10*time.Second, 10*time.Millisecond)
		if tc.delay < time.Minute {
			require.Eventually(t, func() bool { return count(t, st, "source_partition = $1", tc.p) == 0 }, 10*time.Second, 10*time.Millisecond)
			stop()
			continue
		}
		stop()
		assert.Equal(t, 0, count(t, st, "source_partition = $1", tc.p), "stopping deletes what was acknowledged")
	}
}

// TestAckedIDReusedAfterALossyFailover: rows acknowledged whose delete
// waits (DeleteDelay here stands for deletes failing through an outage)
// are deleted by id and created_at. After a failover that lost one, and
// the sequence's advance with it, the new primary gives its id to a new
// row: the relay's next read must not delete that row unpublished.
func TestAckedIDReusedAfterALossyFailover(t *testing.T) {
	t.Parallel()
	const topic, p = "locks.lock.released.v1", int32(9)
	ctx := context.Background()
	c := newCluster(t, kfake.SeedTopics(1, topic))
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) {
		cfg.PollInterval, cfg.DeleteDelay = time.Hour, time.Hour
		outbox.NoTakeoverReads(cfg)
	})
	insert(t, st, p, rec{topic, "k", "start", "e0"})
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
	require.Eventually(t, func() bool { return len(pub.acked()) == 1 }, 10*time.Second, 5*time.Millisecond, "Run's first read")
	id := write(t, st, p, rec{topic, "k", "old", "e1"})[0].ID
	relay.Wake(p)
	require.Eventually(t, func() bool { return len(pub.acked()) == 2 }, 10*time.Second, 5*time.Millisecond)
	// The failover: the row and the sequence's advance are lost.
	_, err := st.Pool.Exec(ctx, `DELETE FROM outbox WHERE id = $1`, id)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `SELECT setval(pg_get_serial_sequence('outbox', 'id'), $1, false)`, id)
	require.NoError(t, err)
	reused := write(t, st, p, rec{topic, "k", "new", "e2"})[0].ID
	require.Equal(t, id, reused, "the new row has the lost row's id")
	relay.Wake(p)
	require.Eventually(t, func() bool { return len(pub.acked()) == 3 }, 10*time.Second, 5*time.Millisecond,
		"the new row was not published")
	assert.Equal(t, []string{topic + "/start", topic + "/old", topic + "/new"}, pub.acked())
}

// TestParksUnwritableTopic: a topic Kafka refuses is parked after
// MaxAttempts while another topic's rows flow; its newer rows wait behind the
// parked ones, also for a relay that takes the partition over; once
// writable and past the park, all go in order.
func TestParksUnwritableTopic(t *testing.T) {
	t.Parallel()
	for _, concurrent := range []bool{false, true} {
		t.Run(fmt.Sprintf("OrderAcrossTopics=%v", !concurrent), func(t *testing.T) {
			t.Parallel()
			parksUnwritableTopic(t, concurrent)
		})
	}
}

func parksUnwritableTopic(t *testing.T, concurrent bool) {
	const ok, denied, p = "locks.lock.acquired.v1", "locks.replies.denied", int32(1)
	c := newCluster(t, kfake.SeedTopics(1, ok, denied))
	fault := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: denied, Err: kerr.TopicAuthorizationFailed, Count: -1})
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) { cfg.MaxAttempts, cfg.OrderAcrossTopics = 3, !concurrent })

	insert(t, st, p, rec{denied, "k", "d1", "ed1"}, rec{ok, "k", "o1", "eo1"}, rec{denied, "k", "d2", "ed2"}, rec{ok, "k", "o2", "eo2"})
	stop := start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })

	require.Eventually(t, func() bool { return count(t, st, "parked_until > now()") == 2 }, 10*time.Second, 10*time.Millisecond)
	var attempts int
	var lastErr string
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT attempts, last_error FROM outbox WHERE value = 'd1'`).Scan(&attempts, &lastErr))
	assert.Equal(t, 3, attempts)
	assert.Contains(t, lastErr, "TOPIC_AUTHORIZATION_FAILED")
	require.Eventually(t, func() bool { return len(pub.acked()) == 2 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, []string{ok + "/o1", ok + "/o2"}, pub.acked(), "the other topic flows")

	// New rows: the writable one goes, the parked topic's is not even
	// tried, and a read parks it with the others, until the same time.
	insert(t, st, p, rec{denied, "k", "d3", "ed3"}, rec{ok, "k", "o3", "eo3"})
	require.Eventually(t, func() bool { return len(pub.acked()) == 3 }, 10*time.Second, 10*time.Millisecond)
	// The ack comes before the delete: wait for the row to go.
	require.Eventually(t, func() bool { return count(t, st, "true") == 3 }, 10*time.Second, 10*time.Millisecond)
	relay.Wake(p)
	require.Eventually(t, func() bool { return count(t, st, "parked_until > now()") == 3 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, 1, count(t, st, "value = 'd3' AND parked_until = (SELECT parked_until FROM outbox WHERE value = 'd1')"), "until the park's end")
	rows, parked, oldest, err := outbox.Backlog(context.Background(), st.Pool)
	require.NoError(t, err)
	assert.EqualValues(t, 3, rows)
	assert.EqualValues(t, 3, parked)
	assert.Zero(t, oldest, "none waits unparked")
	stop()

	// A relay that takes the partition over (or this one, restarted) reads
	// the parked topics back: d3 still must not overtake d1 and d2.
	fault.Remove()
	relay2 := newRelay(t, st, pub, nil)
	insert(t, st, p, rec{ok, "k", "o4", "eo4"})
	n, err := relay2.DrainOnce(context.Background(), p)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, ok+"/o4", pub.acked()[3])
	assert.Equal(t, 0, count(t, st, "value = 'd3' AND attempts > 0"), "d3 was never tried")

	// The park ends: everything goes, in order.
	_, err = st.Pool.Exec(context.Background(), `UPDATE outbox SET parked_until = now() - interval '1 second' WHERE parked_until IS NOT NULL`)
	require.NoError(t, err)
	relay3 := newRelay(t, st, pub, nil)
	n, err = relay3.DrainOnce(context.Background(), p)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	assert.Equal(t, []string{"d1", "d2", "d3"}, values(consume(t, c.ListenAddrs(), denied, 3)))
	assert.Equal(t, []string{"o1", "o2", "o3", "o4"}, values(consume(t, c.ListenAddrs(), ok, 4)))
	rows, parked, oldest, err = outbox.Backlog(context.Background(), st.Pool)
	require.NoError(t, err)
	assert.Zero(t, rows+parked)
	assert.Zero(t, oldest)
}

// TestReDriveParkedTopic: the README's re-drive of a parked topic (grant
// the ACL, then clear the park in the table) takes effect at the relay's
// next read, not when the park it knew of would have ended: the table says
// what is parked. The topic's rows go in id order, the newer ones that
// waited behind the parked ones last.
func TestReDriveParkedTopic(t *testing.T) {
	t.Parallel()
	const ok, denied, p = "locks.lock.acquired.v1", "locks.state.denied", int32(2)
	c := newCluster(t, kfake.SeedTopics(1, ok, denied))
	fault := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: denied, Err: kerr.TopicAuthorizationFailed, Count: -1})
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) { cfg.MaxAttempts, cfg.ParkFor = 2, time.Hour })
	insert(t, st, p, rec{denied, "k", "d1", "ed1"}, rec{ok, "k", "o1", "eo1"}, rec{denied, "k", "d2", "ed2"})
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
	require.Eventually(t, func() bool { return count(t, st, "parked_until > now()") > 0 }, 10*time.Second, 10*time.Millisecond)
	insert(t, st, p, rec{denied, "k", "d3", "ed3"}, rec{ok, "k", "o2", "eo2"})
	require.Eventually(t, func() bool { return slices.Contains(pub.acked(), ok+"/o2") }, 10*time.Second, 10*time.Millisecond)

	fault.Remove()
	_, err := st.Pool.Exec(context.Background(), `UPDATE outbox SET parked_until = NULL, park_reason = NULL, attempts = 0
		WHERE topic = $1 AND parked_until < 'infinity'`, denied)
	require.NoError(t, err)
	n, err := outbox.Parked(context.Background(), st.Pool)
	require.NoError(t, err)
	require.Zero(t, n, "/health's count")
	require.Eventually(t, func() bool { return count(t, st, "true") == 0 }, 10*time.Second, 10*time.Millisecond,
		"re-driven rows go at the next read")
	assert.Equal(t, []string{"d1", "d2", "d3"}, firstSeen(values(consume(t, c.ListenAddrs(), denied, 3))))
}

// TestParksRecordKafkaRefuses: rows Kafka refuses for good are parked at
// once, with their reason, and the rows after them on the same partition
// and topic are published. One is refused by the client (a 1,000,000-byte
// dead-letter copy, over kgo's 1 MB batch limit: it fails alone), one by the
// broker (over its message.max.bytes: the broker refuses the whole produce
// batch, so the relay must find the culprit by publishing the rows again
// in halves, down to it alone). A relay that takes the partition over does
// not hold the topic back behind them either.
func TestParksRecordKafkaRefuses(t *testing.T) {
	t.Parallel()
	for _, concurrent := range []bool{false, true} {
		t.Run(fmt.Sprintf("OrderAcrossTopics=%v", !concurrent), func(t *testing.T) {
			t.Parallel()
			parksRecordKafkaRefuses(t, concurrent)
		})
	}
}

func parksRecordKafkaRefuses(t *testing.T, concurrent bool) {
	const dlq, replies, p = "locks.commands.dlq", "locks.replies.svc", int32(3)
	c := newCluster(t, kfake.SeedTopics(1, dlq, replies), kfake.BrokerConfigs(map[string]string{"message.max.bytes": "100000"}))
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	var mu sync.Mutex
	parkedBy := map[string]int{}
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) {
		cfg.OrderAcrossTopics = !concurrent
		cfg.OnParked = func(reason string, n int) {
			mu.Lock()
			defer mu.Unlock()
			parkedBy[reason] += n
		}
	})

	// Random bytes: kgo compresses batches, and zeros would fit.
	noise := make([]byte, 1_000_000)
	_, _ = rand.NewChaCha8([32]byte{}).Read(noise)
	huge, big := string(noise), string(noise[:200_000])
	insert(t, st, p,
		rec{dlq, "k", "d1", ""}, rec{replies, "k", "r1", "er1"}, rec{dlq, "k", huge, ""},
		rec{dlq, "k", "d2", ""}, rec{replies, "k", "r2", "er2"}, rec{dlq, "k", big, ""}, rec{dlq, "k", "d3", ""})
	n, err := relay.DrainOnce(context.Background(), p)
	require.NoError(t, err, "parking settles the refused rows")
	assert.Equal(t, 5, n)
	assert.Equal(t, []string{"d1", "d2", "d3"}, firstSeen(values(consume(t, c.ListenAddrs(), dlq, 3))))
	assert.Equal(t, []string{"r1", "r2"}, firstSeen(values(consume(t, c.ListenAddrs(), replies, 2))))

	type parked struct {
		size     int
		reason   string
		forGood  bool
		attempts int
		lastErr  string
	}
	rows, err := st.Pool.Query(context.Background(), `
		SELECT length(value), park_reason, parked_until = 'infinity', attempts, last_error FROM outbox ORDER BY id`)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (parked, error) {
		var x parked
		return x, r.Scan(&x.size, &x.reason, &x.forGood, &x.attempts, &x.lastErr)
	})
	require.NoError(t, err)
	require.Len(t, got, 2, "only the refused rows stay")
	for i, size := range []int{1_000_000, 200_000} {
		assert.Equal(t, size, got[i].size)
		assert.Equal(t, "MESSAGE_TOO_LARGE", got[i].reason)
		assert.True(t, got[i].forGood, "parked for good")
		assert.Equal(t, 1, got[i].attempts, "parked at the first refusal")
		assert.Contains(t, got[i].lastErr, "MESSAGE_TOO_LARGE")
	}
	mu.Lock()
	assert.Equal(t, map[string]int{"MESSAGE_TOO_LARGE": 2}, parkedBy)
	mu.Unlock()
	_, nParked, _, err := outbox.Backlog(context.Background(), st.Pool)
	require.NoError(t, err)
	assert.EqualValues(t, 2, nParked)
	nParked, err = outbox.Parked(context.Background(), st.Pool)
	require.NoError(t, err)
	assert.EqualValues(t, 2, nParked)

	// Rows after them go at once, also through a relay that reads the
	// partition's parked topics afresh; the parked rows are not tried again.
	relay2 := newRelay(t, st, pub, nil)
	start(t, func(ctx context.Context) error { return relay2.Run(ctx, p) })
	insert(t, st, p, rec{dlq, "k", "d4", ""})
	relay2.Wake(p)
	assert.Equal(t, []string{"d1", "d2", "d3", "d4"}, firstSeen(values(consume(t, c.ListenAddrs(), dlq, 4))))
	require.Eventually(t, func() bool { return count(t, st, "true") == 2 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, 2, count(t, st, "attempts = 1"), "parked rows are not retried")
}

// TestRefusedBatchProbedAlone: when the broker refuses a whole produce
// batch as too large, the rows are published again (in halves), and those
// Kafka then takes are not parked.
func TestRefusedBatchProbedAlone(t *testing.T) {
	t.Parallel()
	const dlq, p = "locks.commands.dlq", int32(6)
	c := newCluster(t, kfake.SeedTopics(1, dlq))
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: dlq, Err: kerr.MessageTooLarge, Count: 1})
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	relay := newRelay(t, st, pub, nil)
	insert(t, st, p, rec{dlq, "k", "d1", ""}, rec{dlq, "k", "d2", ""}, rec{dlq, "k", "d3", ""})
	n, err := relay.DrainOnce(context.Background(), p)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	assert.EqualValues(t, 1, pub.failures.Load(), "one refused batch")
	assert.Equal(t, []string{"d1", "d2", "d3"}, firstSeen(values(consume(t, c.ListenAddrs(), dlq, 3))))
	assert.Equal(t, 0, count(t, st, "true"), "nothing parked")
}

// TestParksUnreadableHeaders: a row whose headers cannot be decoded can
// never become a record: it is parked at once and its topic goes on.
func TestParksUnreadableHeaders(t *testing.T) {
	t.Parallel()
	const topic, p = "locks.lock.released.v1", int32(8)
	c := newCluster(t, kfake.SeedTopics(1, topic))
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	relay := newRelay(t, st, pub, nil)
	insert(t, st, p, rec{topic, "k", "v1", "e1"})
	_, err := st.Pool.Exec(context.Background(), `INSERT INTO outbox (source_partition, topic, value, headers) VALUES ($1, $2, 'bad', '\x0000000561'::bytea)`, p, topic)
	require.NoError(t, err)
	// Headers to be derived from a value that is no event, or no
	// compacted event.
	for _, v := range []string{"bad", "\x01bad"} {
		_, err = st.Pool.Exec(context.Background(), `INSERT INTO outbox (source_partition, topic, value, headers) VALUES ($1, $2, $3, $4)`,
			p, topic, []byte(v), topics.EncodeEventHeaders(nil, "lockworker/x"))
		require.NoError(t, err)
	}
	insert(t, st, p, rec{topic, "k", "v2", "e2"})
	n, err := relay.DrainOnce(context.Background(), p)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Equal(t, []string{"v1", "v2"}, firstSeen(values(consume(t, c.ListenAddrs(), topic, 2))))
	assert.Equal(t, 3, count(t, st, "value LIKE '%bad' AND park_reason = 'UNREADABLE_HEADERS' AND parked_until = 'infinity'"))
	assert.Equal(t, 3, count(t, st, "true"))
}

// TestEventRowExpanded: an event's row stores the event compacted and only
// its source as headers (topics.EncodeEventHeaders); read back from the
// table, as after a crash, its record is the event with its CloudEvents
// headers.
func TestEventRowExpanded(t *testing.T) {
	t.Parallel()
	const topic, p = "locks.lock.acquired.v1", int32(10)
	c := newCluster(t, kfake.SeedTopics(1, topic))
	st := testdb.New(t)
	relay := newRelay(t, st, newPublisher(t, c.ListenAddrs(), false), nil)
	ev := topics.NewEvent(topics.TypeAcquired, topics.OpAcquire, "req-1", time.Now())
	ev.LockInfo = &topics.LockInfo{LockName: "a", OwnerID: "o", Status: "acquired", FencingToken: 7}
	v, err := ev.Encode()
	require.NoError(t, err)
	_, err = st.Pool.Exec(context.Background(), `INSERT INTO outbox (source_partition, topic, key, value, headers) VALUES ($1, $2, 'a', $3, $4)`,
		p, topic, topics.CompactEvent(nil, v), topics.EncodeEventHeaders(nil, "lockworker/x"))
	require.NoError(t, err)
	n, err := relay.DrainOnce(context.Background(), p)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	rec := consume(t, c.ListenAddrs(), topic, 1)[0]
	require.Equal(t, string(v), string(rec.Value), "the event, expanded")
	got := map[string]string{}
	for _, h := range rec.Headers {
		got[h.Key] = string(h.Value)
	}
	for _, h := range topics.EventHeaders(ev, "lockworker/x") {
		require.Equal(t, string(h.Value), got[h.Key], h.Key)
	}
}

// TestTransientErrorRetried: an error that says nothing about the record
// or the topic (here UNKNOWN_SERVER_ERROR) is retried after a backoff,
// neither counted nor parked.
func TestTransientErrorRetried(t *testing.T) {
	t.Parallel()
	const topic, p = "locks.lock.acquired.v1", int32(9)
	c := newCluster(t, kfake.SeedTopics(1, topic))
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.UnknownServerError, Count: 2})
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	relay := newRelay(t, st, pub, nil)
	insert(t, st, p, rec{topic, "k", "v1", "e1"}, rec{topic, "k", "v2", "e2"})
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
	require.Eventually(t, func() bool { return count(t, st, "true") == 0 }, 10*time.Second, 10*time.Millisecond)
	assert.GreaterOrEqual(t, pub.failures.Load(), int64(1), "the fault was met")
	assert.Equal(t, []string{"v1", "v2"}, firstSeen(values(consume(t, c.ListenAddrs(), topic, 2))))
}

// TestInvalidTimestampRetried: a record whose timestamp the broker refuses
// (this replica's clock outside log.message.timestamp.*.max.ms) is retried
// like Kafka being away, in order, and published once the broker takes it:
// not parked, and the retry's warning names the clock.
func TestInvalidTimestampRetried(t *testing.T) {
	t.Parallel()
	const topic, p = "locks.replies.svc", int32(10)
	c := newCluster(t, kfake.SeedTopics(1, topic))
	// Twice: a record refused for good would be published again alone
	// first, and parked at that second refusal.
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.InvalidTimestamp, Count: 2})
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	var logs testlog.Buffer
	var parked atomic.Int64
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) {
		cfg.Logger = zerolog.New(&logs)
		cfg.OnParked = func(_ string, n int) { parked.Add(int64(n)) }
	})
	insert(t, st, p, rec{topic, "k", "v1", "e1"}, rec{topic, "k", "v2", "e2"})
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
	require.Eventually(t, func() bool { return count(t, st, "true") == 0 }, 10*time.Second, 10*time.Millisecond)
	assert.EqualValues(t, 2, pub.failures.Load(), "the fault was met twice")
	assert.Zero(t, parked.Load(), "nothing parked")
	assert.Equal(t, []string{"v1", "v2"}, firstSeen(values(consume(t, c.ListenAddrs(), topic, 2))))
	level, reason := retryWarning(t, &logs)
	assert.Equal(t, "warn", level)
	assert.Equal(t, "INVALID_TIMESTAMP: check this replica's clock", reason)
}

// retryWarning is the level and reason of the first retry the relay logged
// to logs (JSON lines) for Kafka being away.
func retryWarning(t *testing.T, logs *testlog.Buffer) (level, reason string) {
	t.Helper()
	var warning struct {
		Level  string `json:"level"`
		Reason string `json:"reason"`
	}
	lines := strings.Split(logs.String(), "\n")
	i := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, "Kafka did not take the records") })
	require.GreaterOrEqual(t, i, 0, "the retry is logged: %s", logs.String())
	require.NoError(t, json.Unmarshal([]byte(lines[i]), &warning))
	return warning.Level, warning.Reason
}

// TestClassify pins down what the publisher returns for a topic that does
// not exist and cannot be created, for a record too large, and for a broker
// that is gone.
func TestClassify(t *testing.T) {
	t.Parallel()
	c := newCluster(t, kfake.SeedTopics(1, "locks.replies.big")) // kfake creates no other topics
	pub := newPublisher(t, c.ListenAddrs(), false)
	classify := func(err error) string {
		kind, reason := outbox.Classify(err)
		return fmt.Sprint(kind, " ", reason)
	}
	err := pub.Publish("locks.replies.missing", message.NewMessage("u", []byte("v")))
	require.Error(t, err)
	assert.Equal(t, fmt.Sprint(outbox.TopicRefused, " UNKNOWN_TOPIC_OR_PARTITION"), classify(err), "missing topic: %v", err)

	// Refused the right to create topics (which Kafka answers before it
	// looks whether the topic exists), the publisher produces anyway: a
	// topic made beforehand is written, a missing one stays missing.
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.CreateTopics}, Err: kerr.TopicAuthorizationFailed, Count: -1})
	creator := newPublisher(t, c.ListenAddrs(), true)
	require.NoError(t, creator.Publish("locks.replies.big", message.NewMessage("u", []byte("v"))), "made beforehand")
	err = creator.Publish("locks.replies.new", message.NewMessage("u", []byte("v")))
	require.Error(t, err)
	assert.Equal(t, fmt.Sprint(outbox.TopicRefused, " UNKNOWN_TOPIC_OR_PARTITION"), classify(err), "creation refused: %v", err)

	err = pub.Publish("locks.replies.big", message.NewMessage("u", make([]byte, 2_000_000)))
	require.Error(t, err)
	assert.Equal(t, fmt.Sprint(outbox.RecordRefused, " MESSAGE_TOO_LARGE"), classify(err), "too large: %v", err)

	// A timestamp outside the broker's window: this replica's clock, which
	// a retry outlives once corrected.
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "locks.replies.big", Err: kerr.InvalidTimestamp, Count: 1})
	err = pub.Publish("locks.replies.big", message.NewMessage("u", []byte("v")))
	require.Error(t, err)
	assert.Equal(t, fmt.Sprint(outbox.KafkaAway, " ", outbox.ReasonClock), classify(err), "timestamp refused: %v", err)

	c.Close()
	err = pub.Publish("locks.replies.missing", message.NewMessage("u", []byte("v")))
	require.Error(t, err)
	assert.Equal(t, fmt.Sprint(outbox.KafkaAway, " "), classify(err), "broker gone: %v", err)
}

// freePort is a port free now, which the test listens on again after it
// closed it (testport).
func freePort(t *testing.T) int {
	t.Helper()
	_, port, err := net.SplitHostPort(testport.Addr(t))
	require.NoError(t, err)
	n, err := strconv.Atoi(port)
	require.NoError(t, err)
	return n
}

// TestBrokerDownThenBack: while no broker answers, rows stay, are neither
// counted as attempts nor parked; when the broker is back on the same
// address (with its data, as after a restart) they all go, in order. An
// idempotent client holds the Publish call until then; a non-idempotent one
// fails it, and the relay keeps retrying.
func TestBrokerDownThenBack(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts []kgo.Opt
	}{
		{"idempotent", nil},
		{"not idempotent", []kgo.Opt{kgo.DisableIdempotentWrite()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const a, b, p = "locks.lock.acquired.v1", "locks.lock.released.v1", int32(7)
			port, dir := freePort(t), t.TempDir()
			cluster := func() *kfake.Cluster {
				return newCluster(t, kfake.Ports(port), kfake.DataDir(dir), kfake.SeedTopics(1, a, b))
			}
			c1 := cluster()
			st := testdb.New(t)
			pub := newPublisher(t, c1.ListenAddrs(), false, tc.opts...)
			relay := newRelay(t, st, pub, nil)
			start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })

			insert(t, st, p, rec{a, "k", "a0", "ea0"})
			require.Eventually(t, func() bool { return len(pub.acked()) == 1 }, 10*time.Second, 10*time.Millisecond)

			c1.Close()
			insert(t, st, p, rec{a, "k", "a1", "ea1"}, rec{b, "k", "b1", "eb1"})
			insert(t, st, p, rec{a, "k", "a2", "ea2"}, rec{b, "k", "b2", "eb2"})
			if tc.opts == nil {
				// The call is held: give the 1 s delivery timeout time
				// to show it does not fire.
				require.Eventually(t, func() bool { return pub.calls.Load() >= 2 }, 10*time.Second, 10*time.Millisecond)
				time.Sleep(2 * time.Second)
			} else {
				require.Eventually(t, func() bool { return pub.failures.Load() >= 3 }, 30*time.Second, 10*time.Millisecond, "failed publishes are retried")
			}
			assert.Equal(t, 4, count(t, st, "source_partition = $1", p), "nothing is lost while Kafka is away")
			assert.Equal(t, 0, count(t, st, "attempts > 0 OR parked_until IS NOT NULL"), "an unreachable broker parks nothing")

			c2 := cluster()
			require.Eventually(t, func() bool { return count(t, st, "true") == 0 }, 20*time.Second, 10*time.Millisecond)
			assert.Equal(t, []string{"a0", "a1", "a2"}, firstSeen(values(consume(t, c2.ListenAddrs(), a, 3))))
			assert.Equal(t, []string{"b1", "b2"}, firstSeen(values(consume(t, c2.ListenAddrs(), b, 2))))
		})
	}
}

// TestRunEndsWhilePublishHangs: revocation does not wait for Kafka longer
// than HandOverWait.
func TestRunEndsWhilePublishHangs(t *testing.T) {
	t.Parallel()
	const topic, p = "locks.lock.acquired.v1", int32(4)
	st := testdb.New(t)
	hang := &hangingPublisher{started: make(chan struct{}, 10), release: make(chan struct{})}
	defer close(hang.release)
	relay := newRelay(t, st, hang, func(c *outbox.Config) { c.HandOverWait = 100 * time.Millisecond })
	insert(t, st, p, rec{topic, "k", "v", "e"})
	stop := start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
	<-hang.started
	stop() // fails the test if Run does not return
	assert.Equal(t, 1, count(t, st, "true"), "the row stays for the next owner")
}

// TestRunWaitsForAPublishLeftBehind: a publish in flight when Run's context
// ends is waited for before Run returns, so the partition's next owner
// cannot publish before it (its records would land after the next
// owner's: the lock state topic's compaction would keep an older state);
// writers get no slot meanwhile.
func TestRunWaitsForAPublishLeftBehind(t *testing.T) {
	t.Parallel()
	const topic, p = "locks.lock.acquired.v1", int32(4)
	st := testdb.New(t)
	hang := &hangingPublisher{started: make(chan struct{}, 10), release: make(chan struct{})}
	var logs testlog.Buffer
	relay := newRelay(t, st, hang, func(c *outbox.Config) { c.Logger = zerolog.New(&logs) })
	insert(t, st, p, rec{topic, "k", "v", "e"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx, p) }()
	<-hang.started
	cancel()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "waiting for publishes Kafka has not answered") },
		10*time.Second, 5*time.Millisecond)
	select {
	case <-done:
		t.Fatal("Run returned with its publish still in flight")
	default:
	}
	// Meanwhile a writer gets no slot, as when Run has returned: it leaves
	// a mark for the partition's next owner instead, whose relay reads
	// the table before what it is handed. A slot here would be published
	// by no one, and its rows could go out after the next owner's.
	require.Nil(t, relay.Reserve(p), "a slot of a run whose context has ended")
	close(hang.release)
	require.NoError(t, <-done)
	require.NotContains(t, logs.String(), "left running")
}

type hangingPublisher struct {
	started, release chan struct{}
}

func (h *hangingPublisher) Publish(string, ...*message.Message) error {
	h.started <- struct{}{}
	<-h.release
	return nil
}

func (h *hangingPublisher) Close() error { return nil }

// firstSeen drops repeats: delivery is at least once, order is about first
// copies.
func firstSeen(vs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range vs {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

func TestNewNeedsPublisherAndPool(t *testing.T) {
	_, err := outbox.New(outbox.Config{})
	assert.ErrorContains(t, err, "Publisher")
}

// TestNoSlotOnceRunsContextEnded: from the moment Run's context ends, not
// only once Run returns (which a query waiting on the database may hold
// for seconds), a writer gets no slot: it leaves a mark for the
// partition's next owner instead, which may already run on another
// replica. A slot then would be published by no pass here, and its rows,
// without a mark, could go out after a later transaction's on the same
// lock, handed over to the next owner.
func TestNoSlotOnceRunsContextEnded(t *testing.T) {
	t.Parallel()
	const topic, p = "locks.lock.acquired.v1", int32(6)
	ctx := context.Background()
	c := newCluster(t, kfake.SeedTopics(1, topic))
	st := testdb.NewWith(t, store.Config{LockTimeout: -1}) // the query waits on the test's table lock
	pub := newPublisher(t, c.ListenAddrs(), false)
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) { cfg.PollInterval = time.Hour })
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx, p) }()
	require.Eventually(t, func() bool {
		s := relay.Reserve(p)
		s.Dirty()
		return s != nil
	}, 10*time.Second, 5*time.Millisecond, "Run to start")

	holder, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer holder.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	_, err = holder.Exec(ctx, `LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	var holderPID int
	require.NoError(t, holder.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&holderPID))
	relay.Reserve(p).Dirty() // a pass reads the table, and waits on the lock
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, holderPID).Scan(&n))
		return n > 0
	}, 10*time.Second, 5*time.Millisecond, "the relay's query to wait on the table")

	cancel()
	require.Eventually(t, func() bool { return relay.Reserve(p) == nil }, 10*time.Second, time.Millisecond, "a slot after Run's context ended")
	select {
	case <-done:
		t.Fatal("Run returned while its query waited: the test shows nothing")
	default:
	}
	require.NoError(t, holder.Rollback(ctx))
	require.NoError(t, <-done)
}

// TestRunHeldPublishesOnlyOnceLetThrough: RunHeld asks hold before each
// pass and each call to the publisher. While it refuses (a stalled worker
// not yet confirmed the partition's owner), nothing is published, nothing
// counted as failed (no topic parked), the rows stay in the table, and the
// table is not read (its read takes the marks other replicas' writers left
// for the owner); once it lets them through they go out, in order.
func TestRunHeldPublishesOnlyOnceLetThrough(t *testing.T) {
	t.Parallel()
	const topic, p = "locks.lock.acquired.v1", int32(4)
	c := newCluster(t, kfake.SeedTopics(1, topic))
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) { cfg.PollInterval = 20 * time.Millisecond })
	asked := make(chan struct{}, 1)
	var open atomic.Bool
	hold := func(context.Context) error {
		select {
		case asked <- struct{}{}:
		default:
		}
		if !open.Load() {
			return errors.New("held")
		}
		return nil
	}
	insert(t, st, p, rec{topic, "k", "v1", "e1"}, rec{topic, "k", "v2", "e2"})
	// Another replica's writer left a mark for the partition's owner.
	_, err := st.Pool.Exec(context.Background(), `INSERT INTO outbox_marks (source_partition) VALUES ($1)`, p)
	require.NoError(t, err)
	start(t, func(ctx context.Context) error { return relay.RunHeld(ctx, p, hold) })
	for range 2 { // a second pass is held too: the first's rows were not published behind it
		select {
		case <-asked:
		case <-time.After(10 * time.Second):
			t.Fatal("the relay published without asking hold")
		}
	}
	require.Empty(t, pub.acked(), "published while held")
	require.Zero(t, pub.calls.Load(), "the publisher was called while held")
	require.Equal(t, 2, count(t, st, "true"), "the rows held stay in the table")
	var marks int
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox_marks WHERE source_partition = $1`, p).Scan(&marks))
	require.Equal(t, 1, marks, "a held relay read the table, taking the mark left for the partition's owner")
	open.Store(true)
	require.Eventually(t, func() bool { return len(pub.acked()) == 2 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, []string{"v1", "v2"}, values(consume(t, c.ListenAddrs(), topic, 2)))
}

// TestRunHeldStopsReadingMidDrain: a hold that begins while a pass
// publishes (the process stalled in it) keeps the next pass of the same
// drain from reading the table: that read would delete the mark another
// replica's writer left meanwhile for the partition's new owner.
func TestRunHeldStopsReadingMidDrain(t *testing.T) {
	t.Parallel()
	const topic, p = "locks.lock.acquired.v1", int32(5)
	c := newCluster(t, kfake.SeedTopics(1, topic))
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	var held atomic.Bool
	var rd reads
	var readsAtHold atomic.Int64
	wrapped := hook{Publisher: pub, before: func() {
		if held.Swap(true) {
			return
		}
		// The first pass publishes: the stall begins, and another
		// replica's writer leaves a mark for the partition's new owner.
		readsAtHold.Store(int64(rd.count()))
		_, err := st.Pool.Exec(context.Background(), `INSERT INTO outbox_marks (source_partition) VALUES ($1)`, p)
		assert.NoError(t, err)
	}}
	relay := newRelay(t, st, wrapped, func(cfg *outbox.Config) {
		cfg.Pool = tracedPool(t, st, &rd)
		cfg.BatchSize = 2 // four rows: more than one pass
		cfg.PollInterval = 20 * time.Millisecond
		outbox.NoTakeoverReads(cfg)
	})
	asked := make(chan struct{}, 1)
	hold := func(context.Context) error {
		if held.Load() {
			select {
			case asked <- struct{}{}:
			default:
			}
			return errors.New("held")
		}
		return nil
	}
	insert(t, st, p, rec{topic, "k", "v1", "e1"}, rec{topic, "k", "v2", "e2"}, rec{topic, "k", "v3", "e3"}, rec{topic, "k", "v4", "e4"})
	start(t, func(ctx context.Context) error { return relay.RunHeld(ctx, p, hold) })
	for range 3 { // the drain's next pass, and later drains
		select {
		case <-asked:
		case <-time.After(10 * time.Second):
			t.Fatal("hold was not asked")
		}
	}
	require.Equal(t, []string{topic + "/v1", topic + "/v2"}, pub.acked(), "the first pass's rows only")
	require.Equal(t, readsAtHold.Load(), int64(rd.count()), "a held relay read the table")
	var marks int
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox_marks WHERE source_partition = $1`, p).Scan(&marks))
	require.Equal(t, 1, marks, "a held relay took the mark left for the partition's owner")
	// The first pass's rows may be gone (its delete does not wait for the
	// hold), the held pass's stay.
	require.GreaterOrEqual(t, count(t, st, "true"), 2, "the rows of the pass held stay")
}
