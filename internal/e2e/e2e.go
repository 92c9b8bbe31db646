// Package e2e starts real lockworker pieces for end-to-end tests: a kfake
// broker, a fresh PostgreSQL schema, workers with their relays, and helpers
// to produce commands and wait for events on real topics.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/auth"
	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

// Env is one broker and one schema shared by the workers of a test.
//
// Its helpers (StartWorker, Producer, Send, SendRaw, Watch) register their
// cleanups with T and fail T. A test using an Env it did not create with
// New(t) — RunMain's shared one — calls them on For(t).
type Env struct {
	T       testing.TB
	Cluster *kfake.Cluster
	Brokers []string
	Schema  testdb.Schema
	Store   *store.Store
	Names   topics.Names
	Group   string
}

// New starts a kfake broker with the commands topic (16 partitions) and
// migrates a fresh schema.
func New(t testing.TB, opts ...kfake.Opt) *Env {
	names := topics.DefaultNames()
	c, err := kfake.NewCluster(append([]kfake.Opt{
		kfake.NumBrokers(1),
		kfake.SeedTopics(16, names.Commands),
		kfake.SeedTopics(1, names.Acquired, names.Released, names.Expired, names.Revoked, names.DeadLetter),
		kfake.GroupMinSessionTimeout(100 * time.Millisecond),
	}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	sch := testdb.NewSchema(t)
	st := sch.Open(t, store.Config{MaxConns: 8})
	require.NoError(t, st.Migrate(context.Background()))
	return &Env{T: t, Cluster: c, Brokers: c.ListenAddrs(), Schema: sch, Store: st, Names: names, Group: "lockworker"}
}

// For returns a copy of e whose helpers register their cleanups with t and
// fail t: what they start is closed when t ends, and a failure inside them
// is t's. It shares e's broker, schema and store; e itself is unchanged.
func (e *Env) For(t testing.TB) *Env {
	c := *e
	c.T = t
	return &c
}

// Worker is a running worker with its relay.
type Worker struct {
	W      *worker.Worker
	Store  *store.Store
	cancel context.CancelFunc
	done   chan struct{}
	runErr error // Run's error, once done is closed
	killed bool  // stopped by Kill, as a crash: Run's error is expected
	once   sync.Once
}

// consumingWait bounds StartWorker's wait for the worker's first partition.
// Joining takes a rebalance, two for a worker joining others (they give up
// partitions first, at their next heartbeat): seconds on a loaded machine.
const consumingWait = 30 * time.Second

// WorkerOpts tune StartWorker.
type WorkerOpts struct {
	Name           string
	SessionTimeout time.Duration
	// Static makes the worker a static group member, so Kill leaves no
	// trace in the group until its session times out.
	Static bool
	// Appliers is worker.Config.Appliers (0: its default).
	Appliers int
	// RequireFencingToken is worker.Config.RequireFencingToken.
	RequireFencingToken bool
	// Auth is worker.Config.Auth (nil: commands need no token).
	Auth   *auth.Verifier
	Logger *zerolog.Logger
	// KafkaOpts go to worker.Config.KafkaOpts after the harness's own
	// (seeds, InstanceID), so theirs win.
	KafkaOpts []kgo.Opt
}

// StartWorker starts a worker on its own pool (application_name = Name, so a
// test can kill its connections) and waits until it is consuming: until the
// group has assigned it at least one partition of the commands topic (Run
// joins the group, so that comes after Run starts). A worker joining others
// in the group gets its share once they gave it up; with up to 16 workers
// each gets one. It fails the test when that takes longer than 30 s, or
// when Run returns first.
func (e *Env) StartWorker(o WorkerOpts) *Worker {
	t := e.T
	if o.Name == "" {
		o.Name = "w"
	}
	log := zerolog.Nop()
	if o.Logger != nil {
		log = *o.Logger
	}
	sch := e.Schema
	sch.URL = connstr.WithParam(sch.URL, "application_name", o.Name) // a key=value TEST_DATABASE_URL too
	st := sch.Open(t, store.Config{MaxConns: 8})
	kopts := []kgo.Opt{kgo.SeedBrokers(e.Brokers...)}
	pub, pubClient, err := outbox.NewKafkaPublisher(kopts, 5*time.Second, e.Names.ReplyPrefix, true, -1)
	require.NoError(t, err)
	t.Cleanup(pubClient.Close)
	relay, err := outbox.New(outbox.Config{Publisher: pub, Pool: st.Pool, Logger: log})
	require.NoError(t, err)
	wopts := kopts
	if o.Static {
		wopts = append(wopts, kgo.InstanceID(o.Name))
	}
	wopts = append(wopts, o.KafkaOpts...)
	w, err := worker.New(worker.Config{
		KafkaOpts: wopts, Group: e.Group, Names: e.Names, Store: st, Relay: relay, Instance: o.Name,
		SessionTimeout: o.SessionTimeout, Appliers: o.Appliers, RequireFencingToken: o.RequireFencingToken, Auth: o.Auth, Logger: log,
	})
	require.NoError(t, err)
	require.NoError(t, w.EnsureTopics(context.Background()))
	ctx, cancel := context.WithCancel(context.Background())
	x := &Worker{W: w, Store: st, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(x.done)
		x.runErr = w.Run(ctx)
	}()
	t.Cleanup(func() {
		x.Stop()
		// A worker that died during the test would leave a test waiting
		// for events with a bare timeout, or one checking that nothing
		// happens passing: its error fails the test.
		if x.runErr != nil && !x.killed {
			t.Errorf("worker %q: Run returned during the test: %v", o.Name, x.runErr)
		}
	})
	x.waitConsuming(t, o.Name)
	return x
}

// waitConsuming waits until the worker owns a partition, or fails the test.
func (x *Worker) waitConsuming(t testing.TB, name string) {
	t.Helper()
	deadline := time.NewTimer(consumingWait)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for len(x.W.Partitions()) == 0 {
		select {
		case <-x.done:
			t.Fatalf("worker %q: Run returned before the group assigned it a partition: %v", name, x.runErr)
		case <-deadline.C:
			t.Fatalf("worker %q: no partition of the commands topic assigned within %s of starting it", name, consumingWait)
		case <-tick.C:
		}
	}
}

// Stop drains and leaves the group, as on SIGTERM.
func (x *Worker) Stop() {
	x.once.Do(func() {
		x.cancel()
		<-x.done
		x.W.Close()
	})
}

// Kill stops the worker as a crash would.
func (x *Worker) Kill() {
	x.once.Do(func() {
		select {
		case <-x.done: // died before: its error is reported
		default:
			x.killed = true
		}
		x.W.Kill()
		x.cancel()
		<-x.done
	})
}

// Producer returns a client for producing commands, closed with the test.
func (e *Env) Producer() *kgo.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.DefaultProduceTopic(e.Names.Commands))
	require.NoError(e.T, err)
	e.T.Cleanup(cl.Close)
	return cl
}

// Send produces commands keyed by their lock key and waits for the acks.
func (e *Env) Send(cl *kgo.Client, cmds ...topics.Command) {
	recs := make([]*kgo.Record, len(cmds))
	for i, c := range cmds {
		v, err := c.Encode()
		require.NoError(e.T, err)
		recs[i] = &kgo.Record{Key: []byte(c.Key()), Value: v}
	}
	require.NoError(e.T, cl.ProduceSync(context.Background(), recs...).FirstErr())
}

// SendRaw produces one raw record value with a key.
func (e *Env) SendRaw(cl *kgo.Client, key string, value []byte) {
	require.NoError(e.T, cl.ProduceSync(context.Background(), &kgo.Record{Key: []byte(key), Value: value}).FirstErr())
}

// Received is one record read from a topic.
type Received struct {
	Record *kgo.Record
	Event  topics.Event
}

// Header returns a record header's value.
func (r Received) Header(k string) string {
	for _, h := range r.Record.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// Watcher collects every record of some topics from their start.
type Watcher struct {
	mu   sync.Mutex
	recs []Received
	cond chan struct{}
	done chan struct{} // closed once the watcher stopped reading, at its test's end
}

// Watch starts reading topics (created when missing, so a test can watch a
// reply topic before anything is written there).
func (e *Env) Watch(ts ...string) *Watcher {
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.ConsumeTopics(ts...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AllowAutoTopicCreation(), kgo.MetadataMinAge(100*time.Millisecond))
	require.NoError(e.T, err)
	w := &Watcher{cond: make(chan struct{}), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			var got []Received
			fs.EachRecord(func(r *kgo.Record) {
				var ev topics.Event
				_ = json.Unmarshal(r.Value, &ev)
				got = append(got, Received{Record: r, Event: ev})
			})
			if len(got) > 0 {
				w.mu.Lock()
				w.recs = append(w.recs, got...)
				close(w.cond)
				w.cond = make(chan struct{})
				w.mu.Unlock()
			}
		}
	}()
	e.T.Cleanup(func() { cancel(); cl.Close(); <-w.done })
	return w
}

// All returns what was read so far.
func (w *Watcher) All() []Received {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Received(nil), w.recs...)
}

// WaitFor waits until match holds for what was read, or fails the test.
func (w *Watcher) WaitFor(t testing.TB, timeout time.Duration, what string, match func([]Received) bool) []Received {
	t.Helper()
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		recs, cond := append([]Received(nil), w.recs...), w.cond
		w.mu.Unlock()
		if match(recs) {
			return recs
		}
		select {
		case <-cond:
		case <-deadline:
			t.Fatalf("timed out after %s waiting for %s; got %d records: %s", timeout, what, len(recs), summary(recs))
		}
	}
}

// WaitEvent waits for an event matching match and returns it.
func (w *Watcher) WaitEvent(t testing.TB, what string, match func(Received) bool) Received {
	t.Helper()
	var found Received
	w.WaitFor(t, 20*time.Second, what, func(rs []Received) bool {
		for _, r := range rs {
			if match(r) {
				found = r
				return true
			}
		}
		return false
	})
	return found
}

// ByRequest matches the event answering a request on a topic.
func ByRequest(topic, requestID, typ string) func(Received) bool {
	return func(r Received) bool {
		return r.Record.Topic == topic && r.Event.RequestID == requestID && (typ == "" || r.Event.Type == typ)
	}
}

func summary(rs []Received) string {
	s := ""
	for i, r := range rs {
		if i == 20 {
			return s + "..."
		}
		s += fmt.Sprintf("[%s %s %s] ", r.Record.Topic, r.Event.Type, r.Event.RequestID)
	}
	return s
}
