package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/childproc"
	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/internal/kcattest"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testport"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// freeAddr is an address free now, which a test may listen on again after
// it closed it (testport).
func freeAddr(t *testing.T) string { return testport.Addr(t) }

// start runs the real service wiring with the embedded broker and returns a
// stop function that drains it as SIGTERM would.
func start(t *testing.T, dbURL, addr, dir string) (*Main, func()) {
	return startWith(t, dbURL, func(c *config.Config) { c.Embedded.Addr, c.Embedded.Dir = addr, dir })
}

// startEmbedded runs the real service wiring on a fresh schema and an
// embedded broker of its own, with what configure adds, and returns the
// broker's address.
func startEmbedded(t *testing.T, configure func(*config.Config)) string {
	addr := freeAddr(t)
	startWith(t, testdb.NewSchema(t).URL, func(c *config.Config) {
		c.Embedded.Addr, c.Embedded.Dir = addr, t.TempDir()
		configure(c)
	})
	return addr
}

// externalKafka starts a kfake broker of the test's own, which outlives the
// workers started on it with the option it returns.
func externalKafka(t *testing.T) (*kfake.Cluster, func(*config.Config)) {
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "locks.commands"))
	require.NoError(t, err)
	t.Cleanup(kafka.Close)
	brokers := kafka.ListenAddrs()
	return kafka, func(c *config.Config) { c.Kafka.BootstrapServers = brokers }
}

// startWith runs the real service wiring on the configuration that
// configure leaves.
func startWith(t *testing.T, dbURL string, configure func(*config.Config)) (*Main, func()) {
	m, run, stop := launch(t, dbURL, configure)
	run.await(t, m.Ready)
	return m, stop
}

// running is a Run in progress: done is closed when it returns, err is then
// what it returned.
type running struct {
	done chan struct{}
	err  error
}

// runWait bounds a wait for a step of Run's start, or for its drain.
const runWait = 30 * time.Second

// await waits until step (Main.Serving or Main.Ready) is closed, or fails
// the test when Run returns first or runWait passes.
func (r *running) await(t *testing.T, step <-chan struct{}) {
	t.Helper()
	select {
	case <-step:
	case <-r.done:
		t.Fatalf("lockworker did not start: %v", r.err)
	case <-time.After(runWait):
		t.Fatalf("lockworker did not start in %s", runWait)
	}
}

// launch starts the real service wiring as startWith does, without waiting
// for it.
func launch(t *testing.T, dbURL string, configure func(*config.Config)) (*Main, *running, func()) {
	m := NewMain()
	m.Logger = zerolog.Nop()
	m.Config.Postgres.URL = dbURL
	m.Config.InstanceID = "e2e"
	m.Config.HTTPAddr = "127.0.0.1:0" // never the default port another lockworker may hold
	configure(&m.Config)
	run, stop := runMain(t, m)
	return m, run, stop
}

// runMain runs m and returns a stop function that drains it as SIGTERM
// would (also when the test ends), which fails the test if Run failed or
// its drain outlasts runWait.
func runMain(t *testing.T, m *Main) (*running, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	run := &running{done: make(chan struct{})}
	go func() { run.err = m.Run(ctx); close(run.done) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-run.done:
		case <-time.After(runWait):
			t.Fatalf("lockworker did not drain in %s", runWait) // not closed: Run still uses it all
		}
		m.Close()
		require.NoError(t, run.err)
	}
	t.Cleanup(stop)
	return run, stop
}

// reexec runs this test binary again as a child process that runs only
// test, with env (NAME=value) added, and returns it (killed at the test's
// end, or when this process dies) with what follows ready on the first line
// of its output that starts with it ("" if none did, its output then logged);
// the rest of its output is drained.
func reexec(t *testing.T, ctx context.Context, test, env, ready string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+test+"$", "-test.v",
		"-test.timeout=3m") // ends on its own where DieWithParent cannot (not Linux)
	childproc.DieWithParent(cmd)
	cmd.Env = append(os.Environ(), env)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := bufio.NewScanner(out)
	said := ""
	var before []string // why it never got ready, should it not
	for lines.Scan() {
		if rest, ok := strings.CutPrefix(lines.Text(), ready); ok {
			said = rest
			break
		}
		before = append(before, lines.Text())
	}
	if said == "" {
		t.Logf("%s never said %q; its output:\n%s", test, ready, strings.Join(before, "\n"))
	}
	go func() {
		for lines.Scan() { // keep the pipe drained
		}
	}()
	return cmd, said
}

// client produces commands and reads one reply topic from its start.
type client struct {
	t      *testing.T
	cl     *kgo.Client
	reply  string
	unread []topics.Event
}

func newClient(t *testing.T, addr, reply string) *client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("locks.commands"),
		kgo.ConsumeTopics(reply), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AllowAutoTopicCreation())
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return &client{t: t, cl: cl, reply: reply}
}

func (c *client) send(cmd topics.Command) {
	cmd.ReplyTo = c.reply
	v, err := cmd.Encode()
	require.NoError(c.t, err)
	require.NoError(c.t, c.cl.ProduceSync(context.Background(), &kgo.Record{Key: []byte(cmd.Key()), Value: v}).FirstErr())
}

// await reads replies until one answers requestID; replies read past it wait
// for the next await.
func (c *client) await(requestID, typ string) topics.Event {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		for i, ev := range c.unread {
			if ev.RequestID == requestID && ev.Type == typ {
				c.unread = c.unread[i+1:]
				return ev
			}
		}
		c.unread = c.unread[:0]
		fs := c.cl.PollFetches(ctx)
		require.NoError(c.t, ctx.Err(), "waiting for %s of %s", typ, requestID)
		fs.EachRecord(func(r *kgo.Record) {
			if ev, err := topics.DecodeEvent(r.Value); err == nil {
				c.unread = append(c.unread, ev)
			}
		})
	}
}

// awaitUnpublished waits until requestID is applied and outcomes wait in the
// outbox (the relay cannot publish them).
func awaitUnpublished(t *testing.T, sch testdb.Schema, requestID string) {
	db := sch.Open(t, store.Config{})
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var applied, waiting int
		require.NoError(c, db.Pool.QueryRow(context.Background(),
			`SELECT (SELECT count(*) FROM processed_requests WHERE request_id = $1), (SELECT count(*) FROM outbox)`, requestID).Scan(&applied, &waiting))
		assert.Equal(c, 1, applied, "%s applied", requestID)
		assert.Positive(c, waiting, "outbox rows")
	}, 30*time.Second, 20*time.Millisecond, "%s is applied and its outcome waits in the outbox", requestID)
}

// TestRestartKeepsState: held locks, waiters and outcomes not yet published
// survive a restart of lockworker with its embedded broker; a command
// produced while it is down (the producer buffers it) is applied after it
// returns, after the outcomes left from before.
func TestRestartKeepsState(t *testing.T) {
	sch := testdb.NewSchema(t)
	addr, dir := freeAddr(t), t.TempDir()
	m, stop := start(t, sch.URL, addr, dir)

	a := newClient(t, addr, "locks.replies.a")
	a.send(topics.Command{RequestID: "r1", Operation: "acquire", LockName: "job", OwnerID: "a", LeaseDuration: 300})
	held := a.await("r1", topics.TypeAcquired)
	b := newClient(t, addr, "locks.replies.b")
	b.send(topics.Command{RequestID: "r2", Operation: "acquire", LockName: "job", OwnerID: "b", WaitTimeout: 300})
	b.await("r2", topics.TypeQueued)

	// The broker refuses the relay's writes: the extension is applied and
	// its outcome waits in the outbox when lockworker stops.
	e2e.NewOutage(t, m.Embedded.Cluster(), "locks.commands").RefuseProduce(true)
	a.send(topics.Command{RequestID: "r3", Operation: "extend", LockName: "job", OwnerID: "a"})
	awaitUnpublished(t, sch, "r3")
	stop()

	// Produced while lockworker and its broker are down: the client keeps
	// it until the broker is back.
	produced := make(chan error, 1)
	v, err := topics.Command{RequestID: "r4", Operation: "release", LockName: "job", OwnerID: "a", ReplyTo: a.reply}.Encode()
	require.NoError(t, err)
	a.cl.Produce(context.Background(), &kgo.Record{Key: []byte("job"), Value: v}, func(_ *kgo.Record, err error) { produced <- err })

	start(t, sch.URL, addr, dir)
	require.NoError(t, <-produced)
	// await reads on from where it stopped, so this also checks the order.
	require.Equal(t, held.LockInfo.FencingToken, a.await("r3", topics.TypeExtended).LockInfo.FencingToken)
	a.await("r4", topics.TypeReleased)
	granted := b.await("r2", topics.TypeAcquired)
	require.Greater(t, granted.LockInfo.FencingToken, held.LockInfo.FencingToken)
	require.Equal(t, "b", granted.LockInfo.OwnerID)
}

// TestRestartDeliversWhatWasLeft: lockworker stops while outcomes it
// committed are still unpublished (Kafka refused its writes), and commands
// are produced while it is down. After the restart the outcomes left in
// PostgreSQL are delivered first and the new commands are applied after them.
func TestRestartDeliversWhatWasLeft(t *testing.T) {
	sch := testdb.NewSchema(t)
	kafka, external := externalKafka(t)
	brokers := kafka.ListenAddrs()
	outage := e2e.NewOutage(t, kafka, "locks.commands")
	_, stop := startWith(t, sch.URL, external)

	a := newClient(t, brokers[0], "locks.replies.a")
	a.send(topics.Command{RequestID: "r1", Operation: "acquire", LockName: "job", OwnerID: "a", LeaseDuration: 300})
	held := a.await("r1", topics.TypeAcquired)

	outage.RefuseProduce(true)
	a.send(topics.Command{RequestID: "r2", Operation: "extend", LockName: "job", OwnerID: "a", FencingToken: &held.LockInfo.FencingToken})
	a.send(topics.Command{RequestID: "r3", Operation: "release", LockName: "job", OwnerID: "a", FencingToken: &held.LockInfo.FencingToken})
	awaitUnpublished(t, sch, "r3")
	stop()

	outage.RefuseProduce(false)
	a.send(topics.Command{RequestID: "r4", Operation: "acquire", LockName: "job", OwnerID: "a", LeaseDuration: 300})
	startWith(t, sch.URL, external)
	// await reads on from where it stopped, so these also check the order.
	a.await("r2", topics.TypeExtended)
	a.await("r3", topics.TypeReleased)
	again := a.await("r4", topics.TypeAcquired)
	require.Greater(t, again.LockInfo.FencingToken, held.LockInfo.FencingToken)
}

// TestKcat: a client we did not write (librdkafka's kcat) produces a command
// and reads the reply, as the README shows.
func TestKcat(t *testing.T) {
	kcat := kcattest.Path(t)
	sch := testdb.NewSchema(t)
	addr := freeAddr(t)
	start(t, sch.URL, addr, t.TempDir())
	produce := exec.Command(kcat, "-b", addr, "-P", "-t", "locks.commands", "-K", "|", "-X", "partitioner=murmur2_random")
	produce.Stdin = strings.NewReader(`k1|{"request_id":"kcat-1","operation":"acquire","lock_name":"k1","owner_id":"me","reply_to":"locks.replies.kcat"}` + "\n")
	out, err := produce.CombinedOutput()
	require.NoError(t, err, string(out))
	var reply string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		out, err := exec.Command(kcat, "-b", addr, "-C", "-t", "locks.replies.kcat", "-o", "beginning", "-e", "-q",
			"-f", "%k %h\n%s\n").CombinedOutput()
		reply = string(out)
		require.NoError(c, err, "kcat: %s", reply)
		assert.Contains(c, reply, `"type":"lock.acquired"`, "kcat output")
	}, 30*time.Second, 200*time.Millisecond)
	require.Contains(t, reply, `"request_id":"kcat-1"`)
	require.Contains(t, reply, "ce_type=lock.acquired")
}

// TestKcatTombstone: the record the faults issue found crashing every
// replica, a null value produced by kcat, is copied to the dead-letter
// topic as a null value with the worker's headers, and the partition goes
// on: the next command with the same key is answered.
func TestKcatTombstone(t *testing.T) {
	kcat := kcattest.Path(t)
	sch := testdb.NewSchema(t)
	addr := freeAddr(t)
	start(t, sch.URL, addr, t.TempDir())
	produce := func(in string, args ...string) {
		cmd := exec.Command(kcat, append([]string{"-b", addr, "-P", "-t", "locks.commands", "-K", "|"}, args...)...)
		cmd.Stdin = strings.NewReader(in)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
	}
	produce("tomb|\n", "-Z") // -Z: an empty value is sent as NULL
	produce(`tomb|{"request_id":"after-tomb","operation":"acquire","lock_name":"tomb","owner_id":"me","reply_to":"locks.replies.kcat-tomb"}` + "\n")
	consume := func(c *assert.CollectT, topic, format string) string {
		out, err := exec.Command(kcat, "-b", addr, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", format).CombinedOutput()
		require.NoError(c, err, "kcat: %s", out)
		return string(out)
	}
	var reply, dlq string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		reply = consume(c, "locks.replies.kcat-tomb", "%s\n")
		assert.Contains(c, reply, `"request_id":"after-tomb"`)
	}, 30*time.Second, 200*time.Millisecond, "the command after the tombstone is answered")
	require.Contains(t, reply, `"type":"lock.acquired"`)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		dlq = consume(c, "locks.commands.dlq", "key=%k size=%S headers=%h\n")
		assert.Contains(c, dlq, "key=tomb")
	}, 30*time.Second, 200*time.Millisecond, "the tombstone is dead-lettered")
	require.Contains(t, dlq, "size=-1", "a null value stays null")
	require.Contains(t, dlq, "error=INVALID_REQUEST: record value is null (a Kafka tombstone)")
	require.Contains(t, dlq, "source_topic=locks.commands")
}
