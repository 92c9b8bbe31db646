package worker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

// sequence returns fencing_tokens' last_value and is_called.
func sequence(t *testing.T, st *store.Store) (last int64, called bool) {
	t.Helper()
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT last_value, is_called FROM fencing_tokens`).Scan(&last, &called))
	return last, called
}

// forgetTokens sets the sequence back to its start, as a restore from a
// backup taken before any grant would.
func forgetTokens(t *testing.T, st *store.Store) {
	t.Helper()
	_, err := st.Pool.Exec(context.Background(), `SELECT setval('fencing_tokens', 1, false)`)
	require.NoError(t, err)
}

// The database loses the transactions of grants Kafka published (a
// restore, an asynchronous failover): its sequence goes back. RaiseTokenFloor
// moves it above every token published, so the next grant's token is above
// theirs; run again, it leaves the sequence alone.
func TestTokenFloorAfterLostTransactions(t *testing.T) {
	e := e2e.New(t)
	reply := "locks.replies.floor"
	lifecycle := e.Watch(e.Names.Acquired)
	replies := e.Watch(reply)
	w := e.StartWorker(e2e.WorkerOpts{Name: "before"})
	p := e.Producer()
	const locks = 5
	for i := range locks {
		e.Send(p, cmd("acquire", fmt.Sprintf("before-%d", i), fmt.Sprintf("lock-%d", i), "alice", reply))
	}
	var highest int64
	lifecycle.WaitFor(t, 20*time.Second, "every grant on the lifecycle topic", func(rs []e2e.Received) bool {
		highest = 0
		n := 0
		for _, r := range rs {
			if r.Event.Type == topics.TypeAcquired {
				n++
				highest = max(highest, r.Event.LockInfo.FencingToken)
			}
		}
		return n == locks
	})
	w.Stop()

	forgetTokens(t, e.Store)
	w = e.StartWorker(e2e.WorkerOpts{Name: "after"})
	f, err := w.W.RaiseTokenFloor(context.Background())
	require.NoError(t, err)
	require.True(t, f.Raised, "%+v", f)
	require.Equal(t, highest, f.Highest)
	require.Equal(t, int64(0), f.Was) // setval(1, false): no token handed out
	require.Equal(t, highest+worker.TokenFloorMargin, f.Floor)
	require.Equal(t, locks, f.Records)

	// The next grant's token is above every one published.
	e.Send(p, cmd("acquire", "after-0", "lock-after", "bob", reply))
	got := replies.WaitEvent(t, "the grant after the floor", e2e.ByRequest(reply, "after-0", topics.TypeAcquired))
	require.Greater(t, got.Event.LockInfo.FencingToken, highest+worker.TokenFloorMargin-1)

	last, _ := sequence(t, e.Store)
	f, err = w.W.RaiseTokenFloor(context.Background())
	require.NoError(t, err)
	require.False(t, f.Raised, "%+v", f)
	again, _ := sequence(t, e.Store)
	require.Equal(t, last, again)
}

// acquiredEvent is a lock.acquired event of token, as the relay publishes it.
func acquiredEvent(t *testing.T, token int64) []byte { return grantOf(t, "l", "o", token) }

// grantOf is a lock.acquired event of lock to owner with token.
func grantOf(t *testing.T, lock, owner string, token int64) []byte {
	t.Helper()
	ev := topics.NewEvent(topics.TypeAcquired, topics.OpAcquire, "", time.Now())
	ev.LockInfo = &topics.LockInfo{LockName: lock, OwnerID: owner, Status: topics.StatusAcquired, FencingToken: token}
	v, err := ev.Encode()
	require.NoError(t, err)
	return v
}

// floorTopic makes a lifecycle topic of partitions on e's broker and a worker
// (not run) that takes it as its Acquired topic, logging to log (nil: not).
func floorTopic(t *testing.T, e *e2e.Env, partitions int32, log io.Writer) (*worker.Worker, string) {
	t.Helper()
	topic := "floor.acquired"
	p := e.Producer()
	_, err := kadm.NewClient(p).CreateTopic(context.Background(), partitions, 1, nil, topic)
	require.NoError(t, err)
	names := e.Names
	names.Acquired = topic
	logger := zerolog.Nop()
	if log != nil {
		logger = zerolog.New(log)
	}
	return idleWorker(t, e.Cluster, worker.Config{Store: e.Store, Names: names, Logger: logger}), topic
}

// Only the newest records of each partition are read, however many
// partitions; records that are not events, and a grant in an aborted
// transaction (published: a consumer reading uncommitted saw it), are
// taken as they come. A sequence above every token read is left alone.
func TestTokenFloorReadsNewestRecordsOfEveryPartition(t *testing.T) {
	e := e2e.New(t)
	const partitions = 8
	w, topic := floorTopic(t, e, partitions, nil)
	var recs []*kgo.Record
	for part := range int32(partitions) {
		for i := range 150 {
			// Every partition's oldest records hold the highest tokens:
			// beyond the 100 newest, they are not read.
			token := int64(10_000_000 + i)
			if i >= 50 {
				token = int64(1000)*int64(part) + int64(i)
			}
			recs = append(recs, &kgo.Record{Topic: topic, Partition: part, Value: acquiredEvent(t, token)})
		}
	}
	recs = append(recs, &kgo.Record{Topic: topic, Partition: 2, Value: []byte("not an event")})
	pp, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer pp.Close()
	require.NoError(t, pp.ProduceSync(context.Background(), recs...).FirstErr())

	// The highest token read: partition 7's newest, 7149; in an aborted
	// transaction on partition 5, 9999.
	tx, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.TransactionalID("floor-test"))
	require.NoError(t, err)
	defer tx.Close()
	require.NoError(t, tx.BeginTransaction())
	require.NoError(t, tx.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Partition: 5, Value: acquiredEvent(t, 9999)}).FirstErr())
	require.NoError(t, tx.EndTransaction(context.Background(), kgo.TryAbort))

	// No loss: the sequence handed out the highest token read last.
	_, err = e.Store.Pool.Exec(context.Background(), `SELECT setval('fencing_tokens', $1)`, 9999)
	require.NoError(t, err)
	before, called := sequence(t, e.Store)
	f, err := w.RaiseTokenFloor(context.Background())
	require.NoError(t, err)
	require.False(t, f.Raised, "%+v", f)
	require.Equal(t, int64(9999), f.Highest)
	// The 100 newest offsets of each partition: partition 2's hold the
	// non-event, partition 5's the aborted grant and its abort marker,
	// which is not a record.
	require.Equal(t, partitions*100-1, f.Records)
	after, calledAfter := sequence(t, e.Store)
	require.Equal(t, before, after)
	require.Equal(t, called, calledAfter)

	// Lost: moved to the highest read plus the margin.
	forgetTokens(t, e.Store)
	f, err = w.RaiseTokenFloor(context.Background())
	require.NoError(t, err)
	require.True(t, f.Raised, "%+v", f)
	require.Equal(t, int64(9999+worker.TokenFloorMargin), f.Floor)
	var next int64
	require.NoError(t, e.Store.Pool.QueryRow(context.Background(), `SELECT nextval('fencing_tokens')`).Scan(&next))
	require.Equal(t, f.Floor+1, next)
	t.Logf("read %d records of %d partitions in %s", f.Records, partitions, f.Took)
}

// A lifecycle topic that is empty or missing, or none configured, leaves
// the sequence alone without an error.
func TestTokenFloorWithoutPublishedGrants(t *testing.T) {
	e := e2e.New(t)
	forgetTokens(t, e.Store)
	check := func(names topics.Names) {
		t.Helper()
		w := idleWorker(t, e.Cluster, worker.Config{Store: e.Store, Names: names})
		f, err := w.RaiseTokenFloor(context.Background())
		require.NoError(t, err)
		require.False(t, f.Raised, "%+v", f)
		require.Zero(t, f.Records)
		last, called := sequence(t, e.Store)
		require.Equal(t, int64(1), last)
		require.False(t, called)
	}
	names := e.Names
	check(names) // seeded, empty
	names.Acquired = "floor.missing"
	check(names)
	names.Acquired = ""
	check(names)
}

// Kafka that lists offsets but never serves the records: the start fails
// after a bounded wait, naming the topic and the partitions not read, and
// the sequence is left alone.
func TestTokenFloorKafkaNotServing(t *testing.T) {
	e := e2e.New(t)
	w, topic := floorTopic(t, e, 3, nil)
	pp, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer pp.Close()
	require.NoError(t, pp.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Partition: 1, Value: acquiredEvent(t, 42)}).FirstErr())
	forgetTokens(t, e.Store)
	e.Cluster.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.Cluster.KeepControl()
		return nil, errors.New("broker unreachable"), true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = w.RaiseTokenFloor(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, `topic "floor.acquired"`)
	require.ErrorContains(t, err, "partitions [1] not read to their end")
	last, called := sequence(t, e.Store)
	require.Equal(t, int64(1), last)
	require.False(t, called)
}

// PostgreSQL loses committed transactions while a replica runs (an
// asynchronous standby promoted): the partition's stored offset, the locks,
// the outcomes and the fencing token sequence go back. The replica's next
// batch on that partition finds the offset below the one it committed; it
// checks the token floor before the partition applies anything again, then
// applies the lost commands again from the stored offset: every token
// granted from then on is above every token published before.
func TestTokenFloorWhenStoredOffsetGoesBack(t *testing.T) {
	e := e2e.New(t)
	ctx := context.Background()
	reply := "locks.replies.back"
	lifecycle := e.Watch(e.Names.Acquired)
	replies := e.Watch(reply)
	var log testlog.Buffer
	logger := zerolog.New(&log)
	e.StartWorker(e2e.WorkerOpts{Name: "running", Logger: &logger})
	const partition = 3
	send := sendTo(t, e, partition)
	const locks = 5
	lease := func(c *topics.Command) { c.LeaseDuration = 300 }
	for i := range locks {
		send(cmd("acquire", fmt.Sprintf("before-%d", i), fmt.Sprintf("lock-%d", i), "alice", reply, lease))
	}
	var highest int64
	lifecycle.WaitFor(t, 20*time.Second, "every grant on the lifecycle topic", func(rs []e2e.Received) bool {
		highest = 0
		for _, r := range rs {
			highest = max(highest, r.Event.LockInfo.FencingToken)
		}
		return len(rs) == locks
	})

	// The loss: the partition's offset, the locks, the outcomes and the
	// sequence as before the grants.
	tx, err := e.Store.Pool.Begin(ctx)
	require.NoError(t, err)
	for _, q := range []string{
		`UPDATE consumer_offsets SET next_offset = 0 WHERE partition = ` + fmt.Sprint(partition),
		`DELETE FROM lock_holders`, `DELETE FROM lock_waiters`, `DELETE FROM locks`, `DELETE FROM processed_requests`,
		`SELECT setval('fencing_tokens', 1, false)`,
	} {
		_, err := tx.Exec(ctx, q)
		require.NoError(t, err, q)
	}
	require.NoError(t, tx.Commit(ctx))

	send(cmd("acquire", "after", "lock-after", "bob", reply, lease))
	got := replies.WaitFor(t, 20*time.Second, "the lost grants made again, and the new one", func(rs []e2e.Received) bool {
		n := 0
		for _, r := range rs {
			if r.Event.Type == topics.TypeAcquired {
				n++
			}
		}
		return n == 2*locks+1
	})
	// The reply topic's partitions do not keep one order between them: the
	// answers before the loss are told by their tokens, not their places.
	seen, before := map[string]int{}, 0
	for _, r := range got {
		require.Equal(t, topics.TypeAcquired, r.Event.Type)
		if r.Event.LockInfo.FencingToken <= highest {
			before++
			continue
		}
		seen[r.Event.RequestID]++
	}
	require.Equal(t, locks, before, "only the answers before the loss have tokens published before it")
	require.Len(t, seen, locks+1, "%v", seen)
	for id, n := range seen {
		require.Equal(t, 1, n, id)
	}
	require.Contains(t, log.String(), "stored offset went back, below the one this replica committed")
	require.Contains(t, log.String(), `"raised":true`)
	require.Contains(t, log.String(), `"expected_offset":5`)
	require.Contains(t, log.String(), `"stored_offset":0`)
	require.Contains(t, log.String(), "PostgreSQL is behind Kafka")
	// A restart, but no takeover: not logged nor counted as one.
	require.Contains(t, log.String(), "partition offset went back: restarting the partition from the stored offset")
	require.NotContains(t, log.String(), "partition offset moved by another replica")
}

// Records that are not lock.acquired events, or whose token no sequence
// can have handed out, do not move the sequence: a token of MaxInt64, a
// released event with a high token, a grant whose ce_type header says
// otherwise. The implausible token is warned of with its partition and
// offset; the floor comes from the one real grant.
func TestTokenFloorIgnoresForeignRecords(t *testing.T) {
	e := e2e.New(t)
	var log testlog.Buffer
	w, topic := floorTopic(t, e, 1, &log)
	released := topics.NewEvent(topics.TypeReleased, topics.OpRelease, "", time.Now())
	released.LockInfo = &topics.LockInfo{LockName: "l", OwnerID: "o", FencingToken: 9_000_000}
	rv, err := released.Encode()
	require.NoError(t, err)
	pp, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.DefaultProduceTopic(topic))
	require.NoError(t, err)
	defer pp.Close()
	require.NoError(t, pp.ProduceSync(context.Background(),
		&kgo.Record{Value: acquiredEvent(t, 42)},
		&kgo.Record{Value: acquiredEvent(t, math.MaxInt64)},
		&kgo.Record{Value: rv},
		&kgo.Record{Value: acquiredEvent(t, 8_000_000), Headers: []kgo.RecordHeader{{Key: topics.HeaderCEType, Value: []byte(topics.TypeReleased)}}},
	).FirstErr())
	forgetTokens(t, e.Store)
	f, err := w.RaiseTokenFloor(context.Background())
	require.NoError(t, err)
	require.Equal(t, 4, f.Records)
	require.Equal(t, 1, f.Tokens)
	require.Equal(t, int64(42), f.Highest)
	require.True(t, f.Raised, "%+v", f)
	require.Equal(t, int64(42+worker.TokenFloorMargin), f.Floor)
	require.Contains(t, log.String(), `"partition":0,"offset":1`)
	require.Contains(t, log.String(), "beyond any the sequence can have handed out")

	// Run again with the sequence at the floor (another replica's check
	// moved it, and logged the loss): not raised again, nor logged.
	before := len(log.String())
	f, err = w.RaiseTokenFloor(context.Background())
	require.NoError(t, err)
	require.False(t, f.Raised, "%+v", f)
	require.Equal(t, f.Floor, f.Was)
	require.NotContains(t, log.String()[before:], "PostgreSQL is behind Kafka")
}

// A topic whose newest records hold no lock.acquired event is warned of;
// TOKEN_FLOOR_CHECK=off and no topic configured are said at info level.
func TestTokenFloorNothingToRead(t *testing.T) {
	e := e2e.New(t)
	_, topic := floorTopic(t, e, 1, nil)
	pp, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.DefaultProduceTopic(topic))
	require.NoError(t, err)
	defer pp.Close()
	require.NoError(t, pp.ProduceSync(context.Background(), &kgo.Record{Value: []byte("not an event")}).FirstErr())
	for _, c := range []struct{ check, topic, says string }{
		{"", topic, `"message":"none of the newest records`},
		{worker.TokenFloorOff, topic, `{"level":"info","message":"the fencing token floor is not checked (TOKEN_FLOOR_CHECK=off)"`},
		{"", "", `{"level":"info","message":"the fencing token floor is not checked: no lock.acquired topic`},
	} {
		var log testlog.Buffer
		names := e.Names
		names.Acquired = c.topic
		w := idleWorker(t, e.Cluster, worker.Config{Store: e.Store, Names: names, TokenFloorCheck: c.check, Logger: zerolog.New(&log)})
		_, err := w.RaiseTokenFloor(context.Background())
		require.NoError(t, err)
		require.Contains(t, log.String(), c.says)
		if c.topic != "" && c.check == "" {
			require.Contains(t, log.String(), `"level":"warn"`)
		}
	}
}

// A token read in two lock.acquired events of different owners or locks
// was granted twice (a database that lost transactions handed it out
// again before the check): it is logged at error level, naming both. The
// same grant published twice (a relay's retry) is not.
func TestTokenFloorFindsATokenGrantedTwice(t *testing.T) {
	e := e2e.New(t)
	var log testlog.Buffer
	w, topic := floorTopic(t, e, 2, &log)
	pp, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer pp.Close()
	require.NoError(t, pp.ProduceSync(context.Background(),
		&kgo.Record{Partition: 0, Value: grantOf(t, "l", "alice", 42)},
		&kgo.Record{Partition: 1, Value: grantOf(t, "l", "alice", 42)}, // the same grant again
		&kgo.Record{Partition: 0, Value: grantOf(t, "l", "alice", 77)},
		&kgo.Record{Partition: 1, Value: grantOf(t, "m", "bob", 77)}, // after the loss
	).FirstErr())
	f, err := w.RaiseTokenFloor(context.Background())
	require.NoError(t, err)
	require.Equal(t, []int64{77}, f.GrantedTwice)
	require.Equal(t, 4, f.Tokens)
	require.Contains(t, log.String(), `"level":"error"`)
	require.Contains(t, log.String(), "fencing token 77 was granted twice")
	require.NotContains(t, log.String(), "fencing token 42 was granted twice")
	require.Contains(t, log.String(), `"owner":`)
	require.Contains(t, log.String(), `"other_owner":`)
}

// The records left to read are removed (retention) after the offsets were
// listed: the check does not wait out its bound for them. The broker holds
// the fetches until they are gone; the client then finds its start out of
// range, resets to the newest offsets, of which there are none, brings
// nothing, and the offsets listed again show nothing left to read.
func TestTokenFloorPartitionEmptiedMeanwhile(t *testing.T) {
	e := e2e.New(t)
	w, topic := floorTopic(t, e, 1, nil)
	pp, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.DefaultProduceTopic(topic))
	require.NoError(t, err)
	defer pp.Close()
	require.NoError(t, pp.ProduceSync(context.Background(), &kgo.Record{Value: acquiredEvent(t, 42)}).FirstErr())
	forgetTokens(t, e.Store)
	removed := trimOnceListed(t, e, pp, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // below tokenFloorTimeout
	defer cancel()
	f, err := w.RaiseTokenFloor(ctx)
	require.NoError(t, err)
	require.True(t, removed.Load())
	require.Zero(t, f.Records)
	require.Zero(t, f.Highest)
	last, called := sequence(t, e.Store)
	require.Equal(t, int64(1), last)
	require.False(t, called)
}

// Retention moves the log's start into the range to read after the
// offsets were listed (the broker holds the fetches until then): the first
// fetch finds its start out of range, and the client resumes at the new
// start, not at the end, where a quiet partition brings nothing while the
// records left in the range are there to read, and the check waited out
// its bound for them.
func TestTokenFloorLogStartMovedIntoTheRange(t *testing.T) {
	e := e2e.New(t)
	w, topic := floorTopic(t, e, 1, nil)
	pp, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.DefaultProduceTopic(topic))
	require.NoError(t, err)
	defer pp.Close()
	require.NoError(t, pp.ProduceSync(context.Background(),
		&kgo.Record{Value: acquiredEvent(t, 40)}, &kgo.Record{Value: acquiredEvent(t, 41)}, &kgo.Record{Value: acquiredEvent(t, 42)}).FirstErr())
	forgetTokens(t, e.Store)
	trimmed := trimOnceListed(t, e, pp, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // below tokenFloorTimeout
	defer cancel()
	f, err := w.RaiseTokenFloor(ctx)
	require.NoError(t, err)
	require.True(t, trimmed.Load())
	require.Equal(t, 2, f.Records, "the two left in the range")
	require.Equal(t, int64(42), f.Highest)
	require.True(t, f.Raised, "%+v", f)
}

// trimOnceListed holds the fetches of topic's partition 0 until the check
// has listed its offsets, then deletes its records below offset 1 (as
// retention would) and lets the fetches through; the flag says it did.
func trimOnceListed(t *testing.T, e *e2e.Env, pp *kgo.Client, topic string) *atomic.Bool {
	t.Helper()
	var trimmed atomic.Bool
	fetching := make(chan struct{})
	var once sync.Once
	e.Cluster.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		if trimmed.Load() {
			return nil, nil, false // served from now on
		}
		e.Cluster.KeepControl()
		once.Do(func() { close(fetching) })
		return nil, errors.New("not yet"), true
	})
	go func() {
		<-fetching // the offsets were listed
		var o kadm.Offsets
		o.Add(kadm.Offset{Topic: topic, Partition: 0, At: 1})
		_, err := kadm.NewClient(pp).DeleteRecords(context.Background(), o)
		assert.NoError(t, err)
		trimmed.Store(true)
	}()
	return &trimmed
}
