package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/topics"
)

var runs atomic.Int64

// uniq makes name unique in this test process, so that tests sharing the
// environment can run again (go test -count).
func uniq(name string) string { return fmt.Sprintf("%s-%d", name, runs.Add(1)) }

func newClient(t *testing.T, requester string, mod ...func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.Config{Brokers: env.Brokers, Requester: requester}
	for _, m := range mod {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.New(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// statusOf queries the lock and returns its status.
func statusOf(t *testing.T, c *client.Client, lock string) client.Status {
	t.Helper()
	info, err := c.Query(ctxT(t), lock)
	require.NoError(t, err)
	return info.Status
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Three requesters contend for one lock: the waiters are granted in the
// order they queued, tokens only grow, and no two ever hold it at once.
func TestContentionFIFO(t *testing.T) {
	ctx := ctxT(t)
	const lock = "fifo"
	a, b, c := newClient(t, "fifo-a"), newClient(t, "fifo-b"), newClient(t, "fifo-c")
	la, err := a.Acquire(ctx, lock)
	require.NoError(t, err)

	var (
		inside atomic.Int32
		mu     sync.Mutex
		order  []string
		tokens = []int64{la.Token}
	)
	hold := func(name string, cl *client.Client, queued chan<- int) <-chan error {
		done := make(chan error, 1)
		go func() {
			done <- client.WithLock(ctx, cl, lock, func(ctx context.Context, l *client.Lease) error {
				if n := inside.Add(1); n != 1 {
					return errors.New("two holders at once")
				}
				defer inside.Add(-1)
				mu.Lock()
				order, tokens = append(order, name), append(tokens, l.Token)
				mu.Unlock()
				return nil
			}, client.OnQueued(func(p int) { queued <- p }))
		}()
		return done
	}
	qb, qc := make(chan int, 1), make(chan int, 1)
	doneB := hold("b", b, qb)
	assert.Equal(t, 1, <-qb, "b's place in the queue")
	doneC := hold("c", c, qc)
	assert.Equal(t, 2, <-qc, "c's place in the queue")

	require.NoError(t, la.Release(ctx))
	require.NoError(t, <-doneB)
	require.NoError(t, <-doneC)
	assert.Equal(t, []string{"b", "c"}, order, "grant order")
	require.Len(t, tokens, 3)
	assert.Less(t, tokens[0], tokens[1])
	assert.Less(t, tokens[1], tokens[2])
}

func TestTryAcquireSaysWhoHoldsIt(t *testing.T) {
	ctx := ctxT(t)
	a, b := newClient(t, "try-a"), newClient(t, "try-b")
	la, err := a.Acquire(ctx, "try", client.WithOwner("holder-1"), client.WithLease(20*time.Second))
	require.NoError(t, err)
	defer la.Release(ctx)

	start := time.Now()
	_, err = b.TryAcquire(ctx, "try")
	require.Error(t, err)
	assert.Less(t, time.Since(start), 5*time.Second, "TryAcquire must not wait")
	assert.ErrorIs(t, err, client.ErrLockHeld)
	var e *client.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, topics.CodeLockHeld, e.Code)
	assert.Equal(t, "holder-1", e.Holder)
	assert.WithinDuration(t, la.ExpiresAt(), e.ExpiresAt, time.Millisecond)
	assert.Greater(t, e.RetryAfter, 15*time.Second)
	assert.Contains(t, err.Error(), `"holder-1"`)
	assert.Contains(t, err.Error(), "until "+la.ExpiresAt().Format(time.RFC3339Nano))
	t.Log(err)
}

// A holder that stops extending loses the lease by its expiry; Lost and
// Context tell it, and the worker agrees.
func TestLeaseLostWithoutKeepAlive(t *testing.T) {
	ctx := ctxT(t)
	expired := env.For(t).Watch(env.Names.Expired)
	c := newClient(t, "lost")
	const lease = time.Second
	start := time.Now()
	l, err := c.Acquire(ctx, "lost", client.WithLease(lease), client.WithoutKeepAlive())
	require.NoError(t, err)
	select {
	case <-l.Lost():
	case <-time.After(lease + time.Second):
		t.Fatal("Lost did not fire within the lease plus 1 s")
	}
	t.Logf("lost after %s: %v", time.Since(start), l.Err())
	require.Error(t, l.Context().Err(), "Context is cancelled when Lost fires")
	assert.ErrorIs(t, context.Cause(l.Context()), client.ErrLeaseLost)
	assert.ErrorIs(t, l.Err(), client.ErrLeaseLost)

	expired.WaitEvent(t, "the worker's lock.expired", func(r e2e.Received) bool {
		return r.Event.LockInfo != nil && r.Event.LockInfo.LockName == "lost" && r.Event.LockInfo.FencingToken == l.Token
	})
	err = l.Release(ctx)
	assert.ErrorIs(t, err, client.ErrLeaseLost, "Release of a lost lease returns the loss")
}

// Release of a lease known lost returns the loss at once, without waiting
// for a command that would wait the whole request timeout on brokers that
// are down.
func TestReleaseOfLostLeaseReturnsAtOnce(t *testing.T) {
	ctx := ctxT(t)
	e := e2e.New(t)
	e.StartWorker(e2e.WorkerOpts{Name: "release-lost"})
	outage := e2e.NewOutage(t, e.Cluster)
	const requestTimeout = 20 * time.Second
	c, err := client.New(ctx, client.Config{Brokers: e.Brokers, Requester: "release-lost", ReplyTimeout: 500 * time.Millisecond, RequestTimeout: requestTimeout})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	l, err := c.Acquire(ctx, "release-lost", client.WithLease(time.Second))
	require.NoError(t, err)

	outage.Down(true) // keep-alives stop reaching the worker: the lease runs out
	select {
	case <-l.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("Lost did not fire with the brokers down")
	}
	start := time.Now()
	err = l.Release(ctx)
	took := time.Since(start)
	assert.ErrorIs(t, err, client.ErrLeaseLost)
	assert.ErrorContains(t, err, "without a confirmed extension", "the cause is the loss itself")
	// A send would wait for the brokers while they are down, up to the
	// request timeout (20 s): half of it tells the two apart, with room
	// for a machine that stalls for seconds. It bounds no latency.
	assert.Less(t, took, requestTimeout/2, "Release of a lost lease must not wait for the brokers")
	t.Logf("Release of the lost lease took %s: %v", took, err)

	outage.Down(false)
	// What the worker holds now is its own business: the keep-alive gives
	// a lease lost with an extension unanswered back (a release by its
	// token, TestLeaseLostWithAnUnansweredExtensionIsGivenBack), which
	// Release, returning at once, does not wait for.
	info, err := c.Query(ctx, "release-lost")
	require.NoError(t, err)
	assert.Equal(t, l.Token, info.Token)
}

// Keep-alive holds a lease well past its duration, keeping its expiry about
// one lease ahead.
func TestKeepAlive(t *testing.T) {
	ctx := ctxT(t)
	c := newClient(t, "keepalive")
	replies := env.For(t).Watch(c.ReplyTopic())
	const lease = 3 * time.Second // room for a loaded machine: the lease is lost if no extension is confirmed within it
	l, err := c.Acquire(ctx, "keepalive", client.WithLease(lease))
	require.NoError(t, err)

	replies.WaitFor(t, 10*time.Second, "three keep-alive extensions", func(rs []e2e.Received) bool {
		n := 0
		for _, r := range rs {
			if r.Event.Type == topics.TypeExtended && r.Event.LockInfo.FencingToken == l.Token {
				n++
			}
		}
		return n >= 3
	})
	select {
	case <-l.Lost():
		t.Fatalf("lease lost although kept alive: %v", l.Err())
	default:
	}
	info, err := c.Query(ctx, "keepalive")
	require.NoError(t, err)
	assert.Equal(t, client.StatusAcquired, info.Status)
	assert.Equal(t, l.Token, info.Token)
	assert.GreaterOrEqual(t, info.Extensions, int64(3))
	assert.Less(t, time.Until(info.ExpiresAt), 2*lease, "keep-alive keeps the expiry about one lease ahead, not drifting")
	require.NoError(t, l.Release(ctx))
	assert.ErrorIs(t, context.Cause(l.Context()), client.ErrReleased)
}

// When the worker refuses a keep-alive (someone released the lock in the
// holder's name, as an operator breaking a stuck lock would, and the
// holder's lock.released was lost in transit), the lease is lost at once,
// well before its expiry.
func TestKeepAliveRefused(t *testing.T) {
	ctx := ctxT(t)
	c, admin := newClient(t, "keepalive-refused"), newClient(t, "keepalive-admin")
	// Long enough that no keep-alive's answer is the produce dropped: the
	// first keep-alive comes at lease/3 = 10 s, long after the operator's
	// release is applied and its notice to the holder dropped, even on a
	// loaded machine. Lost then comes with that keep-alive's refusal, well
	// before the expiry (ErrNotHeld below tells it from the expiry).
	const lease = 30 * time.Second
	l, err := c.Acquire(ctx, "keepalive-refused", client.WithLease(lease))
	require.NoError(t, err)

	dropped := dropNextProduce(t, env, c.ReplyTopic())
	_, err = admin.Do(ctx, topics.Command{Operation: topics.OpRelease, LockName: "keepalive-refused", OwnerID: l.Owner})
	require.NoError(t, err)
	select {
	case <-l.Lost():
	case <-time.After(lease):
		t.Fatal("Lost did not fire after the lock was released behind the holder's back")
	}
	require.EqualValues(t, 1, dropped.Load(), "the holder's lock.released was dropped")
	assert.ErrorIs(t, l.Err(), client.ErrNotHeld, "the refusal is the cause")
	assert.ErrorIs(t, context.Cause(l.Context()), client.ErrLeaseLost)
}

// dropNextProduce makes e's broker answer the next produce to topic with
// success without storing it: what was sent there is lost in transit. The
// other topics' records of that request are refused with a retriable error,
// so they are sent again and stored: only topic's are lost. It returns how
// many produces were dropped so far (0 or 1).
func dropNextProduce(t *testing.T, e *e2e.Env, topic string) *atomic.Int32 {
	t.Helper()
	return dropNextProduceThen(t, e, topic, nil)
}

// dropNextProduceThen is dropNextProduce, calling then (unless nil) once
// the produce is dropped, from the broker's goroutine: it must not block.
func dropNextProduceThen(t *testing.T, e *e2e.Env, topic string, then func()) *atomic.Int32 {
	t.Helper()
	is := topicIs(t, e, topic)
	var dropped atomic.Int32
	e.Cluster.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		req := kr.(*kmsg.ProduceRequest)
		if !producesTo(req, is) || dropped.Load() > 0 {
			return nil, nil, false
		}
		dropped.Add(1)
		e.Cluster.DropControl()
		if then != nil {
			then()
		}
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, tp := range req.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic, rt.TopicID = tp.Topic, tp.TopicID
			for _, p := range tp.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = p.Partition
				if !is(tp.Topic, tp.TopicID) {
					rp.ErrorCode = kerr.NotEnoughReplicas.Code
				}
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
	return &dropped
}

// holdProduces holds e's broker's next n produces to topic (every one when
// n is 0) for d each, as a broker frozen meanwhile (SIGSTOP) or far away
// would, and then stores them; the broker's other connections go on
// meanwhile. It returns how many produces were held so far. Not used up by
// the test's end, the hold is dropped, and holds no other test's produce.
func holdProduces(t *testing.T, e *e2e.Env, topic string, d time.Duration, n int32) *atomic.Int32 {
	t.Helper()
	is := topicIs(t, e, topic)
	var held atomic.Int32
	var over atomic.Bool
	t.Cleanup(func() { over.Store(true) })
	e.Cluster.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		if over.Load() {
			e.Cluster.DropControl()
			return nil, nil, false
		}
		e.Cluster.KeepControl()
		if !producesTo(kr.(*kmsg.ProduceRequest), is) {
			return nil, nil, false
		}
		if held.Add(1) == n {
			e.Cluster.DropControl()
		}
		e.Cluster.SleepControl(func() { time.Sleep(d) })
		return nil, nil, false
	})
	return &held
}

// topicIs says whether a produce request's topic, named or (Produce v13+)
// given by ID, is e's topic.
func topicIs(t *testing.T, e *e2e.Env, topic string) func(name string, id [16]byte) bool {
	t.Helper()
	details, err := kadm.NewClient(e.For(t).Producer()).ListTopics(ctxT(t), topic)
	require.NoError(t, err)
	id := details[topic].ID
	return func(n string, i [16]byte) bool { return n == topic || i == id }
}

// producesTo says whether req carries records for a topic is matches.
func producesTo(req *kmsg.ProduceRequest, is func(name string, id [16]byte) bool) bool {
	return slices.ContainsFunc(req.Topics, func(tp kmsg.ProduceRequestTopic) bool { return is(tp.Topic, tp.TopicID) })
}

// The relay's first produce to the reply topic is answered with success but
// not stored: the reply is lost in transit. The client sends the acquire
// again with the same request_id; the worker answers from its stored outcome
// and takes the lock once.
func TestLostReplyIsRetriedOnce(t *testing.T) {
	ctx := ctxT(t)
	lock := uniq("lost-reply")
	commands := env.For(t).Watch(env.Names.Commands)
	c := newClient(t, "lost-reply", func(cfg *client.Config) { cfg.ReplyTimeout = 500 * time.Millisecond })
	dropped := dropNextProduce(t, env, c.ReplyTopic())

	start := time.Now()
	l, err := c.Acquire(ctx, lock, client.WithoutKeepAlive())
	require.NoError(t, err)
	t.Logf("acquired after %s", time.Since(start))
	require.EqualValues(t, 1, dropped.Load(), "the first reply was dropped")
	defer l.Release(ctx)

	// The same acquire went to the commands topic twice, with one request_id.
	var sent []topics.Command
	commands.WaitFor(t, 10*time.Second, "two copies of the acquire", func(rs []e2e.Received) bool {
		sent = sent[:0]
		for _, r := range rs {
			var cmd topics.Command
			if json.Unmarshal(r.Record.Value, &cmd) == nil && cmd.LockName == lock && cmd.Operation == topics.OpAcquire {
				sent = append(sent, cmd)
			}
		}
		return len(sent) >= 2
	})
	assert.Equal(t, sent[0].RequestID, sent[1].RequestID)

	var acquisitions, history int
	require.NoError(t, env.Store.Pool.QueryRow(ctx,
		`SELECT acquisition_count FROM locks WHERE lock_name = $1`, lock).Scan(&acquisitions))
	require.NoError(t, env.Store.Pool.QueryRow(ctx,
		`SELECT count(*) FROM lock_events WHERE lock_name = $1 AND type = $2`, lock, topics.TypeAcquired).Scan(&history))
	assert.Equal(t, 1, acquisitions, "acquisition_count")
	assert.Equal(t, 1, history, "lock.acquired rows in lock_events")
}

// A waiter whose context ends leaves the queue (lock.withdrawn), so the next
// waiter gets the lock and the one that gave up never does.
func TestCancelWhileQueuedWithdraws(t *testing.T) {
	ctx := ctxT(t)
	const lock = "withdraw"
	a, b, c := newClient(t, "withdraw-a"), newClient(t, "withdraw-b"), newClient(t, "withdraw-c")
	bReplies := env.For(t).Watch(b.ReplyTopic())
	la, err := a.Acquire(ctx, lock)
	require.NoError(t, err)

	bctx, cancelB := context.WithCancel(ctx)
	qb, qc := make(chan int, 1), make(chan int, 1)
	doneB := make(chan error, 1)
	go func() {
		_, err := b.Acquire(bctx, lock, client.WithOwner("quitter"), client.OnQueued(func(p int) { qb <- p }))
		doneB <- err
	}()
	<-qb
	doneC := make(chan *client.Lease, 1)
	go func() {
		l, err := c.Acquire(ctx, lock, client.OnQueued(func(p int) { qc <- p }))
		assert.NoError(t, err)
		doneC <- l
	}()
	assert.Equal(t, 2, <-qc)

	cancelB()
	assert.ErrorIs(t, <-doneB, context.Canceled)
	bReplies.WaitEvent(t, "lock.withdrawn for the quitter", func(r e2e.Received) bool {
		return r.Event.Type == topics.TypeWithdrawn && r.Event.LockInfo.LockName == lock
	})

	require.NoError(t, la.Release(ctx))
	lc := <-doneC
	require.NotNil(t, lc)
	assert.Greater(t, lc.Token, la.Token)
	require.NoError(t, lc.Release(ctx))
	var quitterGrants int
	require.NoError(t, env.Store.Pool.QueryRow(ctx,
		`SELECT count(*) FROM lock_events WHERE lock_name = $1 AND owner_id = 'quitter'`, lock).Scan(&quitterGrants))
	assert.Zero(t, quitterGrants, "the owner that gave up was never granted the lock")
}

// unanswered returns a client on a broker of its own, which has the commands
// topic but no worker, and the count of produce requests the broker has
// received so far. A command the client sent would never be answered, so a
// refusal it returns was made in the client; and the count tells whether it
// sent anything at all, which no wall clock does.
func unanswered(t *testing.T, requester string) (*client.Client, func() int) {
	t.Helper()
	cluster := kafkatest.Cluster(t, kfake.SeedTopics(16, topics.DefaultNames().Commands))
	produced := cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Observe: true, Count: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Brokers: cluster.ListenAddrs(), Requester: requester})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c, produced.Hits
}

// Bad input fails at once, in the client, with the contract's wording: the
// broker receives no command (and has no worker to answer one).
func TestBadInputRefusedByClient(t *testing.T) {
	ctx := ctxT(t)
	c, produced := unanswered(t, "bad-input")
	long := strings.Repeat("x", topics.MaxLockNameBytes+1)
	for _, tc := range []struct {
		name, lock string
		opts       []client.AcquireOption
		want       string
	}{
		{"empty name", "", nil, "lock_name is required"},
		{"long name", long, nil, "lock_name is 256 bytes"},
		{"control char", "a\nb", nil, "printable"},
		{"tiny lease", "ok", []client.AcquireOption{client.WithLease(time.Millisecond)}, "lease_duration"},
		{"long wait", "ok", []client.AcquireOption{client.WithWait(2 * time.Hour)}, "wait_timeout"},
		{"metadata not an object", "ok", []client.AcquireOption{client.WithMetadata("x")}, "owner_metadata must be a JSON object"},
		{"cleanup-only name", "*", nil, "only for cleanup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A command sent would wait for an answer that never comes:
			// the test fails on the error then, not on a wait of 30 s.
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err := c.Acquire(ctx, tc.lock, tc.opts...)
			assert.ErrorIs(t, err, client.ErrInvalidRequest)
			assert.ErrorContains(t, err, tc.want)
			assert.Zero(t, produced(), "refused without a round trip")
		})
	}
	_, err := c.Query(ctx, "")
	assert.ErrorIs(t, err, client.ErrInvalidRequest)
	_, err = c.Cleanup(ctx, "*", 20*365*24*time.Hour)
	assert.ErrorIs(t, err, client.ErrInvalidRequest)
	assert.Zero(t, produced(), "refused without a round trip")
}

// TestNewRefusesItsConfig: a Config New cannot work with is refused before
// Kafka is asked, as ErrInvalidConfig (lockctl exits 2 on it).
func TestNewRefusesItsConfig(t *testing.T) {
	unsigned := func(sub string) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{
			Subject: sub, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)), // the workers require exp
		}).SignedString(jwt.UnsafeAllowNoneSignatureType)
		require.NoError(t, err)
		return tok
	}
	kc, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("t"))
	require.NoError(t, err)
	defer kc.Close()
	topicsKC, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.ConsumeTopics("t"))
	require.NoError(t, err)
	defer topicsKC.Close()
	partitions := kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"t": {0: kgo.NewOffset().AtStart()}})
	partitionsKC, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), partitions)
	require.NoError(t, err)
	defer partitionsKC.Close()
	for name, cfg := range map[string]client.Config{
		"requester not the token's subject":     {Requester: "billing", Token: unsigned("orders")},
		"reply topic Kafka refuses":             {Requester: "a b"},
		"commands topic Kafka refuses":          {Topics: topics.Names{Commands: "a/b"}},
		"token and signing key":                 {Token: unsigned("x"), SigningKeyFile: "/nonexistent"},
		"signing key unreadable":                {SigningKeyFile: filepath.Join(t.TempDir(), "missing")},
		"a group consumer as Config.Client":     {Client: kc},
		"a topic consumer as Config.Client":     {Client: topicsKC},
		"a partition consumer as Config.Client": {Client: partitionsKC},
		"reply topic replication factor":        {ReplyTopicReplicationFactor: -2},
		// One lock's commands would be spread over the commands topic's
		// partitions, and applied out of the order sent.
		"a partitioner in KafkaOpts": {KafkaOpts: []kgo.Opt{kgo.RecordPartitioner(kgo.RoundRobinPartitioner())}},
		// As in Config.Client: every reader built with them would consume
		// what they say besides its own topic.
		"a group consumer in KafkaOpts":     {KafkaOpts: []kgo.Opt{kgo.ConsumerGroup("g")}},
		"a topic consumer in KafkaOpts":     {KafkaOpts: []kgo.Opt{kgo.ConsumeTopics("t")}},
		"a partition consumer in KafkaOpts": {KafkaOpts: []kgo.Opt{partitions}},
		"KafkaOpts kgo refuses":             {KafkaOpts: []kgo.Opt{kgo.ConsumerGroup("g"), partitions}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.Brokers = []string{"127.0.0.1:1"} // never reached
			_, err := client.New(ctxT(t), cfg)
			require.ErrorIs(t, err, client.ErrInvalidConfig)
			require.NotErrorIs(t, err, client.ErrUnreachable)
		})
	}
}

// LOCKWORKER_REPLY_TOPIC_REPLICATION_FACTOR is refused like the workers'
// KAFKA_TOPIC_REPLICATION_FACTOR when not -1 or 1..32767, before Kafka is
// asked; a read-only client, which creates no reply topic, ignores it.
func TestNewRefusesItsReplyTopicReplicationFactor(t *testing.T) {
	for _, v := range []string{"0", "-2", "32768", "three", "3.0"} {
		t.Run(v, func(t *testing.T) {
			t.Setenv(client.EnvReplyTopicReplicationFactor, v)
			_, err := client.New(ctxT(t), client.Config{Brokers: []string{"127.0.0.1:1"}, Requester: "rf"})
			require.ErrorIs(t, err, client.ErrInvalidConfig)
			require.ErrorContains(t, err, fmt.Sprintf("%s: %q is not -1", client.EnvReplyTopicReplicationFactor, v))
			require.NotErrorIs(t, err, client.ErrUnreachable)
		})
	}
	t.Setenv(client.EnvReplyTopicReplicationFactor, "0")
	_, err := client.New(context.Background(), client.Config{Brokers: []string{"127.0.0.1:1"}, ReadOnly: true, RequestTimeout: time.Second})
	require.ErrorIs(t, err, client.ErrUnreachable, "not ErrInvalidConfig: the variable does not apply")
}

// New creates the reply topic with Config.ReplyTopicReplicationFactor
// replicas, else LOCKWORKER_REPLY_TOPIC_REPLICATION_FACTOR's, else asks for
// the broker's default (-1): the workers' KAFKA_TOPIC_REPLICATION_FACTOR
// never reaches a topic New made. With 3 or more it sets
// min.insync.replicas=2, as the workers do on theirs; otherwise it is the
// broker's (kfake's: 1). More replicas than brokers fail New with the
// broker's refusal, ErrUnreachable as fewer brokers up than the factor is
// (lockctl's exit 3), in words that name the setting to check.
func TestReplyTopicReplicationFactor(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg, env  string // cfg: Config's value, "" none
		asked     int16
		replicas  int
		minInsync string
	}{
		{name: "broker's default", asked: -1, replicas: 3, minInsync: "1"}, // kfake's default: min(3, brokers)
		{name: "Config", cfg: "2", asked: 2, replicas: 2, minInsync: "1"},
		{name: "Config three", cfg: "3", asked: 3, replicas: 3, minInsync: "2"},
		{name: "variable", env: " 2\n", asked: 2, replicas: 2, minInsync: "1"},
		{name: "variable three", env: "3", asked: 3, replicas: 3, minInsync: "2"},
		{name: "variable -1", env: "-1", asked: -1, replicas: 3, minInsync: "1"},
		{name: "Config over the variable", cfg: "1", env: "2", asked: 1, replicas: 1, minInsync: "1"},
		{name: "more than the brokers", cfg: "4", asked: 4},
		{name: "variable more than the brokers", env: "4", asked: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(client.EnvReplyTopicReplicationFactor, tc.env)
			cluster := kafkatest.Cluster(t, kfake.NumBrokers(3))
			asked := kafkatest.ReplicationFactorsAsked(cluster)
			cfg := client.Config{Brokers: cluster.ListenAddrs(), Requester: "replicated"}
			if tc.cfg != "" {
				var n int
				_, err := fmt.Sscan(tc.cfg, &n)
				require.NoError(t, err)
				cfg.ReplyTopicReplicationFactor = int16(n)
			}
			c, err := client.New(ctxT(t), cfg)
			topic := topics.DefaultNames().ReplyTopic("replicated")
			require.Equal(t, map[string]int16{topic: tc.asked}, asked())
			if tc.replicas == 0 {
				require.ErrorIs(t, err, client.ErrUnreachable)
				require.ErrorContains(t, err, fmt.Sprintf(`creating reply topic %q: Kafka refused its replication factor 4 `+
					`(Config.ReplyTopicReplicationFactor, else %s): fewer brokers are up than that, or the cluster has fewer: INVALID_REPLICATION_FACTOR`,
					topic, client.EnvReplyTopicReplicationFactor))
				return
			}
			require.NoError(t, err)
			defer c.Close()
			kc, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
			require.NoError(t, err)
			defer kc.Close()
			adm := kadm.NewClient(kc)
			listed, err := adm.ListTopics(ctxT(t), topic)
			require.NoError(t, err)
			require.NotEmpty(t, listed[topic].Partitions)
			for _, p := range listed[topic].Partitions {
				require.Len(t, p.Replicas, tc.replicas, "partition %d", p.Partition)
			}
			require.Equal(t, tc.minInsync, kafkatest.TopicConfigs(t, ctxT(t), adm, topic)["min.insync.replicas"])
		})
	}
}

func TestWithLockReleasesAndReturnsFnError(t *testing.T) {
	ctx := ctxT(t)
	c := newClient(t, "withlock")
	boom := errors.New("boom")
	var token int64
	err := client.WithLock(ctx, c, "withlock", func(ctx context.Context, l *client.Lease) error {
		token = l.Token
		return boom
	})
	assert.ErrorIs(t, err, boom)
	info, err := c.Query(ctx, "withlock")
	require.NoError(t, err)
	assert.Equal(t, client.StatusReleased, info.Status)
	assert.Equal(t, token, info.Token)
}

func TestUnreachableAndNoReply(t *testing.T) {
	ctx := ctxT(t)
	// Refused: tried again until RequestTimeout, then the refusal.
	start := time.Now()
	_, err := client.New(context.Background(), client.Config{Brokers: []string{"127.0.0.1:1"}, Requester: "nobody",
		RequestTimeout: time.Second})
	assert.ErrorIs(t, err, client.ErrUnreachable)
	assert.Regexp(t, dialFailed, err.Error())
	assert.Less(t, time.Since(start), 5*time.Second)

	// A commands topic no worker reads: the command is sent, re-sent, and
	// given up with ErrNoReply.
	unread := uniq("locks.commands.unread")
	_, err = kadm.NewClient(env.For(t).Producer()).CreateTopic(ctx, 1, -1, nil, unread)
	require.NoError(t, err)
	c := newClient(t, "noreply", func(cfg *client.Config) {
		cfg.Topics.Commands = unread
		cfg.ReplyTimeout = 200 * time.Millisecond
		cfg.RequestTimeout = time.Second
	})
	_, err = c.Query(ctx, "anything")
	assert.ErrorIs(t, err, client.ErrNoReply)
	assert.ErrorContains(t, err, "sent 5 times")
}

// A waiting Acquire whose owner is released by another process (lockctl
// release, an operator) ends with ErrWithdrawn instead of waiting on.
func TestWithdrawnByAnotherProcess(t *testing.T) {
	ctx := ctxT(t)
	lock := uniq("withdrawn-elsewhere")
	holder, waiter, operator := newClient(t, "wde-holder"), newClient(t, "wde-waiter"), newClient(t, "wde-operator")
	l, err := holder.Acquire(ctx, lock)
	require.NoError(t, err)
	queued, done := make(chan int, 1), make(chan error, 1)
	go func() {
		_, err := waiter.Acquire(ctx, lock, client.WithOwner("batch-7"), client.OnQueued(func(p int) { queued <- p }))
		done <- err
	}()
	require.Equal(t, 1, <-queued)
	ev, err := operator.Do(ctx, topics.Command{Operation: topics.OpRelease, LockName: lock, OwnerID: "batch-7"})
	require.NoError(t, err)
	require.Equal(t, topics.TypeWithdrawn, ev.Type)
	require.ErrorIs(t, <-done, client.ErrWithdrawn)
	require.NoError(t, l.Release(ctx))
}

// Query returns typed fields: a Status, time.Time and time.Duration values,
// and the wire form in Info.
func TestQueryTyped(t *testing.T) {
	ctx := ctxT(t)
	c := newClient(t, "query-typed")
	lock := uniq("query-typed")
	before := time.Now()
	l, err := c.Acquire(ctx, lock, client.WithOwner("qt-1"), client.WithLease(time.Minute),
		client.WithMetadata(map[string]string{"job": "7"}), client.WithoutKeepAlive())
	require.NoError(t, err)
	st, err := c.Query(ctx, lock)
	require.NoError(t, err)
	assert.Equal(t, client.StatusAcquired, st.Status)
	assert.Equal(t, lock, st.Name)
	assert.Equal(t, "qt-1", st.Owner)
	assert.Equal(t, l.Token, st.Token)
	assert.Equal(t, time.Minute, st.LeaseDuration)
	assert.WithinDuration(t, before, st.AcquiredAt, 5*time.Second, "the worker's clock, close to ours")
	assert.Equal(t, time.Minute, st.ExpiresAt.Sub(st.AcquiredAt))
	assert.Equal(t, int64(1), st.Acquisitions)
	assert.JSONEq(t, `{"job":"7"}`, string(st.Metadata))
	assert.Equal(t, topics.StatusAcquired, st.Info.Status, "the wire form is kept")

	require.NoError(t, l.Release(ctx))
	st, err = c.Query(ctx, lock)
	require.NoError(t, err)
	assert.Equal(t, client.StatusReleased, st.Status)

	st, err = c.Query(ctx, uniq("never-held"))
	require.NoError(t, err)
	assert.Equal(t, client.StatusFree, st.Status)
	assert.True(t, st.AcquiredAt.IsZero() && st.ExpiresAt.IsZero(), "times the worker did not give are zero")
}

// dialFailed is the dial's own error to 127.0.0.1:1: refused at once, or, on
// a machine loaded enough, cut by the deadline first.
const dialFailed = `dial tcp 127\.0\.0\.1:1: (connect: connection refused|i/o timeout)`

// NewSubscriber and Client.Subscriber fail like New when no broker answers:
// with ErrUnreachable and the cause, within the context's deadline, or the
// client's RequestTimeout when the context has none, naming the context's
// end once, on one line.
func TestSubscriberUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	sub, err := client.NewSubscriber(ctx, client.SubscriberConfig{Brokers: []string{"127.0.0.1:1"}})
	assert.Nil(t, sub)
	assert.ErrorIs(t, err, client.ErrUnreachable)
	assert.Regexp(t, dialFailed, err.Error(), "the cause is kept")
	assert.Less(t, time.Since(start), 5*time.Second)

	// A broker of its own (no worker needed), so the outage leaves the
	// shared worker alone.
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer cluster.Close()
	outage := e2e.NewOutage(t, cluster)
	c, err := client.New(ctxT(t), client.Config{Brokers: cluster.ListenAddrs(), Requester: "subscriber-unreachable",
		RequestTimeout: time.Second})
	require.NoError(t, err)
	defer c.Close()
	outage.Down(true)
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	_, err = c.Subscriber(ctx2)
	assert.ErrorIs(t, err, client.ErrUnreachable)

	// A broker that reads requests and never answers: the ping waits out
	// its context.
	outage.Down(false)
	cluster.ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		return nil, nil, true
	})
	start = time.Now()
	_, err = c.Subscriber(context.Background())
	assert.ErrorIs(t, err, client.ErrUnreachable)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotContains(t, err.Error(), "\n")
	assert.Less(t, time.Since(start), 5*time.Second, "RequestTimeout, not DefaultRequestTimeout")
}

// Client.Subscriber fails with ErrClosed after Close, as the client's other
// operations do, whether it made its Kafka client (closed then) or was
// given one (Config.Client, which Close leaves open).
func TestSubscriberOfAClosedClient(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer cluster.Close()
	c, err := client.New(ctxT(t), client.Config{Brokers: cluster.ListenAddrs(), Requester: "subscriber-closed"})
	require.NoError(t, err)
	require.NoError(t, c.Close())
	_, err = c.Subscriber(ctxT(t))
	require.ErrorIs(t, err, client.ErrClosed)

	kc, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	require.NoError(t, err)
	defer kc.Close()
	c, err = client.New(ctxT(t), client.Config{Client: kc, Requester: "subscriber-closed-given"})
	require.NoError(t, err)
	require.NoError(t, c.Close())
	_, err = c.Subscriber(ctxT(t))
	require.ErrorIs(t, err, client.ErrClosed)
}

// Client.Subscriber(FromEnd()) delivers only events published after it
// started: none of the lock's earlier history.
func TestSubscriberFromEnd(t *testing.T) {
	ctx := ctxT(t)
	c := newClient(t, "from-end")
	old, fresh := uniq("from-end-old"), uniq("from-end-new")
	l, err := c.Acquire(ctx, old)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))
	// The old acquire's event is on the topic before the subscription starts.
	env.For(t).Watch(env.Names.Acquired).WaitEvent(t, "the old lock.acquired", func(r e2e.Received) bool {
		return r.Event.LockInfo != nil && r.Event.LockInfo.LockName == old
	})

	sub, err := c.Subscriber(ctx, client.FromEnd())
	require.NoError(t, err)
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, c.Topics().Acquired)
	require.NoError(t, err)
	// The end is looked up a moment after Subscribe returns: take the new
	// lock until its event arrives.
	got := make(chan string, 1)
	go func() {
		for msg := range msgs {
			ev, err := client.DecodeMessage(msg)
			msg.Ack()
			if err == nil && (ev.LockInfo.LockName == old || ev.LockInfo.LockName == fresh) {
				got <- ev.LockInfo.LockName
				return
			}
		}
	}()
	for {
		l, err := c.Acquire(ctx, fresh)
		require.NoError(t, err)
		require.NoError(t, l.Release(ctx))
		select {
		case name := <-got:
			assert.Equal(t, fresh, name, "the first event seen is a new one, not the retained history")
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// A lease released by another requester (an operator, lockctl) is told on
// the holder's reply topic (lock.released): it is lost before the next owner
// can rely on the lock, and Release returns the loss without asking the
// worker. A lease's own Release is no loss.
func TestLeaseReleasedByAnotherRequesterIsLost(t *testing.T) {
	ctx := ctxT(t)
	lock := uniq("released-behind")
	c, admin, next := newClient(t, "released-behind"), newClient(t, "released-behind-admin"), newClient(t, "released-behind-next")
	l, err := c.Acquire(ctx, lock, client.WithLease(time.Minute))
	require.NoError(t, err)
	_, err = admin.Do(ctx, topics.Command{Operation: topics.OpRelease, LockName: lock, OwnerID: l.Owner})
	require.NoError(t, err)
	select {
	case <-l.Lost():
	case <-time.After(5 * time.Second):
		t.Fatalf("lease %d not lost 5 s after another requester released it: Err=%v", l.Token, l.Err())
	}
	assert.ErrorIs(t, l.Err(), client.ErrLeaseLost)
	assert.ErrorContains(t, l.Err(), "released")
	assert.ErrorIs(t, l.Release(ctx), client.ErrLeaseLost)

	l2, err := next.TryAcquire(ctx, lock)
	require.NoError(t, err)
	require.NoError(t, l2.Release(ctx))
	assert.ErrorIs(t, l2.Err(), client.ErrReleased)
	select {
	case <-l2.Lost():
		t.Fatal("a lease's own release lost it")
	default:
	}
}

// A lease the worker ended before the client knew (an operator released
// it, and the holder's lock.released was lost in transit) is refused on
// Release with ErrNotHeld and is lost from then on: a second Release
// returns the loss without asking the worker again.
func TestReleaseOfLeaseEndedBehindItsBack(t *testing.T) {
	ctx := ctxT(t)
	lock := uniq("ended-behind")
	c, admin := newClient(t, "ended-behind"), newClient(t, "ended-behind-admin")
	l, err := c.Acquire(ctx, lock, client.WithLease(time.Minute), client.WithoutKeepAlive())
	require.NoError(t, err)
	dropped := dropNextProduce(t, env, c.ReplyTopic())
	_, err = admin.Do(ctx, topics.Command{Operation: topics.OpRelease, LockName: lock, OwnerID: l.Owner})
	require.NoError(t, err)
	// The admin's answer and the holder's notice may go out in separate
	// produce requests: the notice's may come after admin.Do returns.
	require.Eventually(t, func() bool { return dropped.Load() == 1 }, 20*time.Second, 5*time.Millisecond,
		"the holder's lock.released was dropped")

	err = l.Release(ctx)
	assert.ErrorIs(t, err, client.ErrNotHeld)
	select {
	case <-l.Lost():
	default:
		t.Fatal("a refused release leaves the lease lost")
	}
	err = l.Release(ctx)
	assert.ErrorIs(t, err, client.ErrLeaseLost)
	assert.ErrorIs(t, err, client.ErrNotHeld, "the loss names the refusal")
}

// Read/write locks and semaphores through the SDK: readers hold together,
// a writer waits for the last of them and is served before a later reader;
// a semaphore of 2 admits two holders, and a different limit is refused.
func TestSharedLocksAndSemaphores(t *testing.T) {
	ctx := ctxT(t)
	c := newClient(t, "modes")
	lock := uniq("rw")
	r1, err := c.TryAcquire(ctx, lock, client.WithMode(client.Shared))
	require.NoError(t, err)
	r2, err := c.TryAcquire(ctx, lock, client.WithMode(client.Shared))
	require.NoError(t, err, "readers hold together")
	require.Equal(t, topics.ModeShared, r2.Info().Mode)
	_, err = c.TryAcquire(ctx, lock)
	require.ErrorIs(t, err, client.ErrLockHeld, "no writer beside readers")

	writer, late := make(chan *client.Lease, 1), make(chan *client.Lease, 1)
	queued := make(chan int, 2)
	go func() {
		l, err := c.Acquire(ctx, lock, client.OnQueued(func(p int) { queued <- p }))
		assert.NoError(t, err)
		writer <- l
	}()
	require.Equal(t, 1, <-queued)
	go func() {
		l, err := c.Acquire(ctx, lock, client.WithMode(client.Shared), client.OnQueued(func(p int) { queued <- p }))
		assert.NoError(t, err)
		late <- l
	}()
	require.Equal(t, 2, <-queued, "a later reader queues behind the waiting writer")
	require.NoError(t, r1.Release(ctx))
	select {
	case <-writer:
		t.Fatal("the writer was granted beside a reader")
	default:
	}
	require.NoError(t, r2.Release(ctx))
	w := <-writer
	require.NoError(t, w.Release(ctx))
	require.NoError(t, (<-late).Release(ctx))

	sem := uniq("sem")
	a, err := c.TryAcquire(ctx, sem, client.WithLimit(2))
	require.NoError(t, err)
	b, err := c.TryAcquire(ctx, sem, client.WithLimit(2))
	require.NoError(t, err)
	_, err = c.TryAcquire(ctx, sem, client.WithLimit(2))
	require.ErrorIs(t, err, client.ErrLockHeld, "a semaphore of 2 has 2 holders at most")
	_, err = c.TryAcquire(ctx, sem, client.WithLimit(3))
	require.ErrorIs(t, err, client.ErrLimitMismatch)
	require.NoError(t, a.Release(ctx))
	require.NoError(t, b.Release(ctx))

	ran := 0
	require.NoError(t, client.WithRLock(ctx, c, lock, func(ctx context.Context, l *client.Lease) error {
		ran++
		require.Equal(t, topics.ModeShared, l.Info().Mode)
		return nil
	}))
	require.Equal(t, 1, ran)
}

// givenUpBeforeReply runs an acquire with a ctx cancelled once its command is
// on the commands topic, while no worker runs; then starts a worker and
// fails if the lock was granted after its caller gave up (held for nobody,
// with no Lease to release it). setup runs with a worker up (it may open a
// session) and returns the acquire.
func givenUpBeforeReply(t *testing.T, requester string, setup func(c *client.Client, lock string) func(context.Context) error) {
	e := e2e.New(t)
	w := e.StartWorker(e2e.WorkerOpts{Name: requester + "-w1"})
	c, err := client.New(ctxT(t), client.Config{Brokers: e.Brokers, Requester: requester, ReplyTimeout: 20 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	lock := uniq(requester)
	commands := e.Watch(e.Names.Commands)
	run := setup(c, lock)
	w.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	commands.WaitEvent(t, "the acquire on the commands topic", func(r e2e.Received) bool {
		return r.Event.Operation == topics.OpAcquire && string(r.Record.Key) == lock
	})
	cancel()
	// A withdrawing release waits for its answer: a worker must be up.
	e.StartWorker(e2e.WorkerOpts{Name: requester + "-w2"})
	require.ErrorIs(t, <-done, context.Canceled)
	// Keyed by the lock, the query is applied after the acquire.
	st, err := c.Query(ctxT(t), lock)
	require.NoError(t, err)
	assert.NotEqual(t, client.StatusAcquired, st.Status, "granted to %q after its caller gave up", st.Owner)
}

// waitAcquires waits until n acquires of lock by owner are on the commands
// topic that commands watches.
func waitAcquires(t *testing.T, commands *e2e.Watcher, lock, owner string, n int) {
	t.Helper()
	commands.WaitFor(t, 20*time.Second, fmt.Sprintf("%d acquires of %s by %s on the commands topic", n, lock, owner), func(rs []e2e.Received) bool {
		got := 0
		for _, r := range rs {
			var cmd topics.Command
			if json.Unmarshal(r.Record.Value, &cmd) == nil && cmd.Operation == topics.OpAcquire && cmd.LockName == lock && cmd.OwnerID == owner {
				got++
			}
		}
		return got == n
	})
}

// An acquire of a generated owner given up before any reply is withdrawn.
func TestAcquireGivenUpBeforeReplyIsWithdrawn(t *testing.T) {
	givenUpBeforeReply(t, "given-up", func(c *client.Client, lock string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := c.Acquire(ctx, lock)
			return err
		}
	})
}

// An acquire WithOwner given up before it was seen queued is not withdrawn:
// its owner may hold the lock already, here by another client's lease,
// which the release would end.
func TestWithOwnerRenewalGivenUpKeepsTheLease(t *testing.T) {
	ctx := ctxT(t)
	holder, c := newClient(t, "owner-renewal-holder"), newClient(t, "owner-renewal")
	lock := uniq("owner-renewal")
	l, err := holder.Acquire(ctx, lock, client.WithOwner("shared-owner"))
	require.NoError(t, err)
	givenUpKeeps(t, c, l, client.WithOwner("shared-owner"))
	require.NoError(t, l.Release(ctx))
}

// givenUpKeeps gives up an acquire by c of l's lock, with opts, before any
// reply, and checks that l still holds the lock. Keyed by the lock, c's
// query is applied after that acquire, and after any release it sent.
func givenUpKeeps(t *testing.T, c *client.Client, l *client.Lease, opts ...client.AcquireOption) {
	t.Helper()
	ctx := ctxT(t)
	gone, cancel := context.WithCancel(ctx)
	cancel()
	_, err := c.Acquire(gone, l.Name, opts...)
	require.ErrorIs(t, err, context.Canceled)
	st, err := c.Query(ctx, l.Name)
	require.NoError(t, err)
	require.Equal(t, client.StatusAcquired, st.Status)
	require.Equal(t, l.Token, st.Token)
	require.NoError(t, l.Err())
}

// Two acquires WithOwner of one owner in one client, of a lock another
// holds: the first, queued, is given up once the second is on its way.
// Applied, the second takes the first's place in the queue; the first's
// withdrawal waits for it, and it is granted the lock when the holder
// releases it. Sent at once, the withdrawal would withdraw the second.
func TestWithOwnerGivenUpBesideAnotherWaitsForIt(t *testing.T) {
	ctx := ctxT(t)
	e := e2e.New(t)
	w := e.StartWorker(e2e.WorkerOpts{Name: "owner-twice-w1"})
	c, err := client.New(ctx, client.Config{Brokers: e.Brokers, Requester: "owner-twice", ReplyTimeout: 20 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	holder, err := client.New(ctx, client.Config{Brokers: e.Brokers, Requester: "owner-twice-holder"})
	require.NoError(t, err)
	t.Cleanup(func() { holder.Close() })
	lock := uniq("owner-twice")
	held, err := holder.Acquire(ctx, lock)
	require.NoError(t, err)

	gone, cancel := context.WithCancel(ctx)
	queued, first := make(chan int, 1), make(chan error, 1)
	go func() {
		_, err := c.Acquire(gone, lock, client.WithOwner("twice"), client.OnQueued(func(p int) { queued <- p }))
		first <- err
	}()
	require.Equal(t, 1, <-queued)
	commands := e.Watch(e.Names.Commands)
	w.Stop()
	var second *client.Lease
	var secondErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		second, secondErr = c.Acquire(ctx, lock, client.WithOwner("twice"))
	}()
	waitAcquires(t, commands, lock, "twice", 2)
	cancel()
	// A withdrawing release waits for its answer: a worker must be up.
	e.StartWorker(e2e.WorkerOpts{Name: "owner-twice-w2"})
	require.ErrorIs(t, <-first, context.Canceled)
	require.NoError(t, held.Release(ctx))
	<-done
	require.NoError(t, secondErr)
	st, err := c.Query(ctx, lock)
	require.NoError(t, err)
	require.Equal(t, client.StatusAcquired, st.Status)
	require.Equal(t, second.Token, st.Token)
	require.NoError(t, second.Release(ctx))
}

// Keep-alives, releases, sessions and Close together, for -race: Close
// comes once the callers have taken locks, and every call returns after it
// (ErrClosed) rather than hanging.
func TestCloseUnderLoad(t *testing.T) {
	ctx := ctxT(t)
	c := newClient(t, "close-load", func(cfg *client.Config) { cfg.ReplyTimeout = 300 * time.Millisecond })
	s, err := c.NewSession(ctx, time.Second)
	require.NoError(t, err)
	base := uniq("close-load")
	done := make(chan struct{})
	var acquired atomic.Int64
	for i := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := 0; ; j++ {
				opts := []client.AcquireOption{client.WithLease(300 * time.Millisecond), client.WithWait(time.Second)}
				if i%2 == 0 {
					opts = append(opts, client.WithSession(s))
				}
				l, err := c.Acquire(ctx, fmt.Sprintf("%s-%d", base, j%3), opts...)
				if errors.Is(err, client.ErrClosed) {
					return
				}
				if err != nil {
					continue
				}
				acquired.Add(1)
				time.Sleep(150 * time.Millisecond) // holding it, while others wait and extend
				_ = l.Extend(ctx, 0)
				_ = l.Release(ctx)
			}
		}()
	}
	require.Eventually(t, func() bool { return acquired.Load() >= 16 }, 30*time.Second, 10*time.Millisecond,
		"the callers take locks under load")
	require.NoError(t, c.Close())
	for range 8 {
		select {
		case <-done:
		case <-ctx.Done():
			t.Fatal("a call did not return after Close")
		}
	}
}

// A call given up while its command waits in the producer's buffer (Kafka
// refusing the partition for now) does not fail the commands of other calls
// buffered behind it: kgo fails every record buffered for a partition when
// one record's context ends, so the caller's ctx is not the record's.
func TestGivenUpCommandDoesNotFailOthers(t *testing.T) {
	ctx := ctxT(t)
	lock := uniq("buffered")
	c := newClient(t, "buffered", func(cfg *client.Config) {
		// Retried at once after each refusal, rather than at kgo's 5 s.
		cfg.KafkaOpts = append(cfg.KafkaOpts, kgo.MetadataMinAge(10*time.Millisecond))
	})
	_, err := c.Query(ctx, lock) // the client knows the topic
	require.NoError(t, err)

	details, err := kadm.NewClient(env.For(t).Producer()).ListTopics(ctx, env.Names.Commands)
	require.NoError(t, err)
	id := details[env.Names.Commands].ID
	var refused atomic.Int32
	var hold atomic.Bool
	hold.Store(true)
	defer hold.Store(false)
	env.Cluster.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		if !hold.Load() {
			env.Cluster.DropControl()
			return nil, nil, false
		}
		req := kr.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		ours := false
		for _, tp := range req.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic, rt.TopicID = tp.Topic, tp.TopicID
			ours = ours || tp.Topic == env.Names.Commands || tp.TopicID == id
			for _, p := range tp.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, kerr.NotLeaderForPartition.Code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		if !ours || len(req.Topics) != 1 {
			return nil, nil, false
		}
		env.Cluster.KeepControl()
		refused.Add(1)
		return resp, nil, true
	})

	gaveUp, cancel := context.WithCancel(ctx)
	acquired := make(chan error, 1)
	go func() {
		l, err := c.Acquire(gaveUp, lock)
		if err == nil {
			l.Release(ctx)
		}
		acquired <- err
	}()
	require.Eventually(t, func() bool { return refused.Load() > 0 }, 10*time.Second, time.Millisecond, "the acquire is refused for now")
	queried := make(chan error, 1)
	go func() {
		_, err := c.Query(ctx, lock)
		queried <- err
	}()
	n := refused.Load()
	require.Eventually(t, func() bool { return refused.Load() > n+1 }, 10*time.Second, time.Millisecond, "both wait in the buffer")
	cancel()
	hold.Store(false)
	require.NoError(t, <-queried, "the query behind the given-up acquire is answered")
	require.ErrorIs(t, <-acquired, context.Canceled)
}

// A Release that gave up before its answer (its ctx ended, the answer was
// lost) is sent again, with its request_id, by the next Release: the
// worker answers it from the outcome it stored, so the lease ends
// released, not lost, and no second release is applied.
func TestReleaseAfterAReleaseThatGaveUp(t *testing.T) {
	ctx := ctxT(t)
	lock := uniq("release-gave-up")
	c := newClient(t, "release-gave-up")
	l, err := c.Acquire(ctx, lock, client.WithLease(time.Minute), client.WithoutKeepAlive())
	require.NoError(t, err)
	dropped := dropNextProduce(t, env, c.ReplyTopic())
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, l.Release(short), context.DeadlineExceeded)
	require.Eventually(t, func() bool { return dropped.Load() == 1 }, 10*time.Second, 5*time.Millisecond, "its answer was dropped")

	require.NoError(t, l.Release(ctx))
	require.ErrorIs(t, l.Err(), client.ErrReleased)
	select {
	case <-l.Lost():
		t.Fatal("a released lease is not lost")
	default:
	}
	require.Equal(t, client.StatusReleased, statusOf(t, c, lock))
}

// WithLock releases the lock when fn panics, and the keep-alive stops.
func TestWithLockReleasesWhenFnPanics(t *testing.T) {
	ctx := ctxT(t)
	lock := uniq("withlock-panic")
	c := newClient(t, "withlock-panic")
	var l *client.Lease
	func() {
		defer func() { require.Equal(t, "boom", recover()) }()
		_ = client.WithLock(ctx, c, lock, func(_ context.Context, held *client.Lease) error {
			l = held
			panic("boom")
		})
	}()
	require.ErrorIs(t, l.Err(), client.ErrReleased)
	require.Equal(t, client.StatusReleased, statusOf(t, c, lock))
}

// An acquire whose context ended before it was sent sends nothing: no
// lease is granted that nobody tracks (an owner given WithOwner is not
// withdrawn, so it would be held for its whole lease).
func TestAcquireWithAnEndedContextSendsNothing(t *testing.T) {
	ctx := ctxT(t)
	lock := uniq("ended-ctx")
	c := newClient(t, "ended-ctx")
	ended, cancel := context.WithCancel(ctx)
	cancel()
	_, err := c.Acquire(ended, lock, client.WithOwner("svc"))
	require.ErrorIs(t, err, context.Canceled)
	// Queried after the acquire, had it been sent: same key, same partition.
	require.Equal(t, client.StatusFree, statusOf(t, c, lock))
}

// Config.Topics left empty takes every default name, lock.revoked's too.
func TestTopicsDefaulted(t *testing.T) {
	require.Equal(t, topics.DefaultNames(), newClient(t, "topics").Topics())
}

// A requester that may not create topics (Kafka ACLs) still starts when
// its reply topic exists, made by an operator: Kafka refuses the creation
// before it looks whether the topic exists. Without the topic, New fails
// at once with ErrForbidden.
func TestNewWithoutTheRightToCreateTopics(t *testing.T) {
	ctx := ctxT(t)
	deny := func(requester string) {
		env.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.CreateTopics}, Topic: topics.DefaultNames().ReplyTopic(requester),
			Err: kerr.TopicAuthorizationFailed, Count: -1})
	}
	requester := uniq("no-create")
	_, err := kadm.NewClient(env.For(t).Producer()).CreateTopic(ctx, 1, -1, nil, topics.DefaultNames().ReplyTopic(requester))
	require.NoError(t, err, "made by an operator")
	deny(requester)
	c := newClient(t, requester)
	lock := uniq("no-create")
	l, err := c.Acquire(ctx, lock)
	require.NoError(t, err, "its replies come")
	require.NoError(t, l.Release(ctx))

	without := uniq("no-create-no-topic")
	deny(without)
	start := time.Now()
	_, err = client.New(ctx, client.Config{Brokers: env.Brokers, Requester: without})
	require.ErrorIs(t, err, client.ErrForbidden)
	require.ErrorContains(t, err, "TOPIC_AUTHORIZATION_FAILED")
	require.Less(t, time.Since(start), 5*time.Second, "at once, not at the context's end")
}

// Under REQUIRE_FENCING_TOKEN an acquire given up after it was granted (its
// answer lost) is still released: the SDK's withdrawal, which has no
// token, only withdraws a wait there and is refused for the lease, so the
// SDK reads the token with a query and releases with it. Without that the
// lease would be held for nobody until it ran out. The query names every
// holder: of a shared lock, the given-up lease may not be the newest.
func TestGivenUpGrantReleasedUnderRequireFencingToken(t *testing.T) {
	e := fencedWorker(t)
	// With room for each round trip of the withdrawal (ReplyTimeout bounds
	// each): the relay's producer recovers from the lost record's sequence
	// gap first, which takes seconds on kfake.
	fenced := func(t *testing.T, requester string) *client.Client {
		c, err := client.New(ctxT(t), client.Config{Brokers: e.Brokers, Requester: requester, ReplyTimeout: 15 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	t.Run("exclusive", func(t *testing.T) {
		ctx := ctxT(t)
		c := fenced(t, "fenced")
		// The grant's answer is lost: the acquire gives up once it is (not
		// at a fixed deadline, which a loaded machine may reach before the
		// grant).
		gone, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		dropped := dropNextProduceThen(t, e, c.ReplyTopic(), cancel)
		_, err := c.Acquire(gone, "fenced", client.WithLease(time.Minute))
		require.EqualValues(t, 1, dropped.Load(), "the grant was answered, and its answer lost")
		require.ErrorIs(t, err, context.Canceled, "given up when its answer was lost")
		info, err := c.Query(ctx, "fenced")
		require.NoError(t, err)
		require.Equal(t, client.StatusReleased, info.Status, "released with its token")
	})

	t.Run("shared, granted before another reader", func(t *testing.T) {
		ctx := ctxT(t)
		const lock = "fenced-shared"
		writer, c, other := fenced(t, "fenced-writer"), fenced(t, "fenced-reader"), fenced(t, "fenced-other")
		w, err := writer.Acquire(ctx, lock, client.WithLease(time.Minute))
		require.NoError(t, err)
		// Both readers wait behind the writer, so its release grants them
		// together: the given-up one first, then the other, the newest.
		queued := make(chan int, 1)
		read := func(ctx context.Context, cl *client.Client, done chan<- error) {
			_, err := cl.Acquire(ctx, lock, client.WithMode(client.Shared), client.WithLease(time.Minute),
				client.OnQueued(func(p int) { queued <- p }))
			done <- err
		}
		gone, cancel := context.WithCancel(ctx)
		defer cancel()
		mine, others := make(chan error, 1), make(chan error, 1)
		go read(gone, c, mine)
		require.Equal(t, 1, <-queued)
		go read(ctx, other, others)
		require.Equal(t, 2, <-queued)
		dropped := dropNextProduceThen(t, e, c.ReplyTopic(), cancel) // its next answer is its grant
		require.NoError(t, w.Release(ctx))
		require.ErrorIs(t, <-mine, context.Canceled, "given up when its answer was lost")
		require.EqualValues(t, 1, dropped.Load())
		require.NoError(t, <-others)
		info, err := c.Query(ctx, lock)
		require.NoError(t, err)
		var holders []string
		for _, h := range info.Info.Holders {
			holders = append(holders, h.OwnerID)
		}
		require.Len(t, holders, 1, "the given-up lease was released with its token: %v", holders)
	})
}

// An OnQueued callback that panics (its caller recovers, as an HTTP server
// does) gives the acquire up after it was seen queued: one WithOwner is then
// withdrawn too, so the owner is not granted the lock for nobody when the
// holder releases it.
func TestAcquireWithOwnerWhoseOnQueuedPanicsIsWithdrawn(t *testing.T) {
	ctx := ctxT(t)
	holder, c := newClient(t, "owner-panic-holder"), newClient(t, "owner-panic")
	lock := uniq("owner-panic")
	held, err := holder.Acquire(ctx, lock)
	require.NoError(t, err)
	func() {
		defer func() { require.NotNil(t, recover()) }()
		_, _ = c.Acquire(ctx, lock, client.WithOwner("svc"), client.OnQueued(func(int) { panic("the caller's callback") }))
	}()
	require.NoError(t, held.Release(ctx))
	st, err := c.Query(ctx, lock)
	require.NoError(t, err)
	require.NotEqual(t, client.StatusAcquired, st.Status, "granted to %q after its caller ended", st.Owner)
}

// A broker that refuses topic configs (a managed Kafka that fixes them
// refuses min.insync.replicas, POLICY_VIOLATION or INVALID_CONFIG) gets the
// reply topic asked again without them: New works there as at factor 2.
func TestReplyTopicConfigsRefused(t *testing.T) {
	for _, refusal := range []*kerr.Error{kerr.PolicyViolation, kerr.InvalidConfig} {
		t.Run(refusal.Message, func(t *testing.T) {
			cluster := kafkatest.Cluster(t, kfake.NumBrokers(3))
			asked := kafkatest.RefuseTopicConfigs(cluster, refusal.Code, func(string) bool { return true })
			warned := &warnLog{}
			c, err := client.New(ctxT(t), client.Config{Brokers: cluster.ListenAddrs(), Requester: "fixed", ReplyTopicReplicationFactor: 3,
				KafkaOpts: []kgo.Opt{kgo.WithLogger(warned)}})
			require.NoError(t, err)
			defer c.Close()
			require.Len(t, asked()[topics.DefaultNames().ReplyTopic("fixed")], 2, "asked with its configs first, then without")
			require.Contains(t, warned.String(), "the broker refused the reply topic's min.insync.replicas=2", "and said so")
			kc, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
			require.NoError(t, err)
			defer kc.Close()
			topic := topics.DefaultNames().ReplyTopic("fixed")
			listed, err := kadm.NewClient(kc).ListTopics(ctxT(t), topic)
			require.NoError(t, err)
			require.NotEmpty(t, listed[topic].Partitions)
			for _, p := range listed[topic].Partitions {
				require.Len(t, p.Replicas, 3, "partition %d", p.Partition)
			}
		})
	}
}

// warnLog is a kgo.Logger keeping the messages logged at LogLevelWarn.
type warnLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *warnLog) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l *warnLog) Log(level kgo.LogLevel, msg string, _ ...any) {
	if level == kgo.LogLevelWarn {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.msgs = append(l.msgs, msg)
	}
}

func (l *warnLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.msgs, "\n")
}
