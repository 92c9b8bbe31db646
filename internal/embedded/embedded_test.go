package embedded

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/childproc"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/kcattest"
	"github.com/omninode/lockworker/internal/testlog"
)

func start(t *testing.T, ctx context.Context, dir string, topics map[string]Topic, log zerolog.Logger) *Broker {
	t.Helper()
	b, err := Start(ctx, Options{Addr: "127.0.0.1:0", Dir: dir, Topics: topics, Logger: log})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b
}

func client(t *testing.T, b *Broker, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.Addr()), kgo.FetchMaxWait(250 * time.Millisecond)}, opts...)...)
	require.NoError(t, err)
	return cl
}

// consume reads topic from the start until it has n records.
func consume(t *testing.T, ctx context.Context, b *Broker, topic string, n int) []*kgo.Record {
	t.Helper()
	cl := client(t, b, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records from %s: %v", len(out), n, topic, ctx.Err())
		}
		for _, err := range fs.Errors() {
			t.Logf("fetch %s/%d: %v", err.Topic, err.Partition, err.Err)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

func produce(t *testing.T, ctx context.Context, b *Broker, topic string, n int, prefix string) {
	t.Helper()
	cl := client(t, b)
	defer cl.Close()
	var rs []*kgo.Record
	for i := range n {
		rs = append(rs, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "%s-k%d", prefix, i), Value: fmt.Appendf(nil, "%s-v%d", prefix, i)})
	}
	require.NoError(t, cl.ProduceSync(ctx, rs...).FirstErr())
}

func values(rs []*kgo.Record) []string {
	var out []string
	for _, r := range rs {
		out = append(out, string(r.Key)+"="+string(r.Value))
	}
	return out
}

func partitionCounts(t *testing.T, ctx context.Context, b *Broker) map[string]int {
	t.Helper()
	cl := client(t, b)
	defer cl.Close()
	td, err := kadm.NewClient(cl).ListTopics(ctx)
	require.NoError(t, err)
	require.NoError(t, td.Error())
	out := map[string]int{}
	for name, d := range td {
		out[name] = len(d.Partitions)
	}
	return out
}

func TestRestartKeepsTopicsAndRecords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir() + "/nested/kafka" // Start creates it
	// Written by kfake's goroutines while the test reads it.
	logs := &testlog.Buffer{}

	b := start(t, ctx, dir, map[string]Topic{"locks.commands": {Partitions: 16}, "locks.lock.acquired.v1": {Partitions: 1}}, zerolog.New(logs))
	_, port, _ := net.SplitHostPort(b.Addr())
	assert.NotEqual(t, "0", port)
	assert.Contains(t, logs.String(), "FOR DEVELOPMENT ONLY")

	// A reply topic is created by a client through CreateTopics, as the
	// worker and the SDK do.
	admin := client(t, b)
	_, err := kadm.NewClient(admin).CreateTopic(ctx, 3, -1, nil, "locks.replies.svc")
	admin.Close()
	require.NoError(t, err)

	produce(t, ctx, b, "locks.commands", 100, "cmd")
	produce(t, ctx, b, "locks.replies.svc", 5, "reply")
	b.Close()
	b.Close() // idempotent

	// Same dir, another port, one more topic and a changed partition count.
	logs = &testlog.Buffer{}
	b = start(t, ctx, dir, map[string]Topic{"locks.commands": {Partitions: 32}, "locks.lock.acquired.v1": {Partitions: 1}, "locks.lock.expired.v1": {Partitions: 2}}, zerolog.New(logs))

	counts := partitionCounts(t, ctx, b)
	assert.Equal(t, map[string]int{
		"locks.commands":         16, // existing topics are not resized
		"locks.lock.acquired.v1": 1,
		"locks.lock.expired.v1":  2,
		"locks.replies.svc":      3,
	}, counts)
	assert.Contains(t, logs.String(), "topic exists with another partition count")

	assert.ElementsMatch(t, expected("cmd", 100), values(consume(t, ctx, b, "locks.commands", 100)))
	assert.ElementsMatch(t, expected("reply", 5), values(consume(t, ctx, b, "locks.replies.svc", 5)))

	// Records produced after the restart land after the old ones.
	produce(t, ctx, b, "locks.replies.svc", 1, "after")
	assert.ElementsMatch(t, append(expected("reply", 5), expected("after", 1)...), values(consume(t, ctx, b, "locks.replies.svc", 6)))
}

func expected(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s-k%d=%s-v%d", prefix, i, prefix, i))
	}
	return out
}

const childDirEnv = "LOCKWORKER_EMBEDDED_TEST_CHILD_DIR"

// TestKilledProcessKeepsRecords produces from a child process, kills it with
// SIGKILL (no Close, no SyncWrites) and restarts on its dir: acknowledged
// records must be there, and the dir lock must be free again.
func TestKilledProcessKeepsRecords(t *testing.T) {
	if os.Getenv(childDirEnv) != "" {
		t.Skip("running as the child")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestChildProducesThenWaits$", "-test.v")
	childproc.DieWithParent(cmd)
	cmd.Env = append(os.Environ(), childDirEnv+"="+dir)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(stdout)
	ready := false
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "CHILD READY") {
			ready = true
			break
		}
	}
	require.True(t, ready, "child did not get ready")
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()

	b := start(t, ctx, dir, nil, zerolog.Nop())
	assert.Equal(t, map[string]int{"killed.topic": 4}, partitionCounts(t, ctx, b))
	assert.ElementsMatch(t, expected("kill", 50), values(consume(t, ctx, b, "killed.topic", 50)))
}

// TestChildProducesThenWaits is the child of TestKilledProcessKeepsRecords.
func TestChildProducesThenWaits(t *testing.T) {
	dir := os.Getenv(childDirEnv)
	if dir == "" {
		t.Skip("helper process for TestKilledProcessKeepsRecords")
	}
	ctx := context.Background()
	b, err := Start(ctx, Options{Addr: "127.0.0.1:0", Dir: dir, Topics: map[string]Topic{"killed.topic": {Partitions: 4}}})
	require.NoError(t, err)
	produce(t, ctx, b, "killed.topic", 50, "kill")
	fmt.Println("CHILD READY")
	time.Sleep(time.Minute) // killed long before
}

func TestDirInUse(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	start(t, ctx, dir, nil, zerolog.Nop())
	_, err := Start(ctx, Options{Addr: "127.0.0.1:0", Dir: dir})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "in use by another embedded broker")
}

func TestAddrInUse(t *testing.T) {
	ctx := context.Background()
	b := start(t, ctx, t.TempDir(), nil, zerolog.Nop())
	dir := t.TempDir()
	_, err := Start(ctx, Options{Addr: b.Addr(), Dir: dir})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cannot listen on "+b.Addr())

	// The failed start released its dir: a flock held by another open file
	// of this process would refuse this one.
	start(t, ctx, dir, nil, zerolog.Nop())

	// A topic without partitions is refused before anything starts.
	_, err = Start(ctx, Options{Addr: "127.0.0.1:0", Dir: t.TempDir(), Topics: map[string]Topic{"bad": {Partitions: 0}}})
	assert.ErrorContains(t, err, `topic "bad": 0 partitions`)
}

// TestKcat talks to the broker with kcat (librdkafka), a client that shares
// no code with kfake or franz-go.
func TestKcat(t *testing.T) {
	kcat := kcattest.Path(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b := start(t, ctx, t.TempDir(), map[string]Topic{"kcat.test": {Partitions: 3}}, zerolog.Nop())

	run := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, kcat, append([]string{"-b", b.Addr()}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		require.NoError(t, err, "kcat %v: %s", args, stderr.String())
		return string(out)
	}

	// Metadata as librdkafka sees it.
	var md struct {
		Topics []struct {
			Topic      string            `json:"topic"`
			Partitions []json.RawMessage `json:"partitions"`
		} `json:"topics"`
	}
	require.NoError(t, json.Unmarshal([]byte(run("", "-L", "-J", "-t", "kcat.test")), &md))
	require.Len(t, md.Topics, 1)
	assert.Equal(t, "kcat.test", md.Topics[0].Topic)
	assert.Len(t, md.Topics[0].Partitions, 3)

	// kcat produces, kgo consumes.
	run("from-kcat-key:from-kcat-value\n", "-P", "-t", "kcat.test", "-K", ":")
	rs := consume(t, ctx, b, "kcat.test", 1)
	assert.Equal(t, []string{"from-kcat-key=from-kcat-value"}, values(rs))

	// kgo produces, kcat consumes (-e: exit at the end of every partition).
	produce(t, ctx, b, "kcat.test", 1, "from-kgo")
	out := run("", "-C", "-t", "kcat.test", "-o", "beginning", "-e", "-q", "-f", "%k=%s\\n")
	assert.ElementsMatch(t, []string{"from-kcat-key=from-kcat-value", "from-kgo-k0=from-kgo-v0"}, strings.Fields(out))
}

// topicConfigs is what the broker says a topic's configs are.
func topicConfigs(t *testing.T, ctx context.Context, b *Broker, topic string) map[string]string {
	t.Helper()
	cl := client(t, b)
	defer cl.Close()
	return kafkatest.TopicConfigs(t, ctx, kadm.NewClient(cl), topic)
}

// A topic of Options.Topics is created with its configs, which survive a
// restart.
func TestTopicConfigs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	opts := Options{Addr: "127.0.0.1:0", Dir: dir, Topics: map[string]Topic{
		"table": {Partitions: 2, Configs: map[string]string{"cleanup.policy": "compact", "segment.ms": "3600000"}},
		"plain": {Partitions: 1},
	}}
	b, err := Start(ctx, opts)
	require.NoError(t, err)
	have := topicConfigs(t, ctx, b, "table")
	require.Equal(t, "compact", have["cleanup.policy"])
	require.Equal(t, "3600000", have["segment.ms"])
	require.Equal(t, "delete", topicConfigs(t, ctx, b, "plain")["cleanup.policy"])
	b.Close()

	b = start(t, ctx, dir, nil, zerolog.Nop())
	require.Equal(t, "compact", topicConfigs(t, ctx, b, "table")["cleanup.policy"])
	b.Close()

	// An existing topic keeps its cleanup.policy, and one that differs from
	// the configured one is logged.
	for _, tc := range []struct{ topic, configured, has string }{
		{"plain", "compact", "delete"},
		{"table", "delete", "compact"},
	} {
		logs := &testlog.Buffer{}
		b = start(t, ctx, dir, map[string]Topic{tc.topic: {Partitions: opts.Topics[tc.topic].Partitions,
			Configs: map[string]string{"cleanup.policy": tc.configured}}}, zerolog.New(logs))
		require.Equal(t, tc.has, topicConfigs(t, ctx, b, tc.topic)["cleanup.policy"])
		b.Close()
		require.Contains(t, logs.String(), `"topic":"`+tc.topic+`","cleanup.policy":"`+tc.has+`","configured":"`+tc.configured+`"`)
		require.Contains(t, logs.String(), "topic exists with another cleanup.policy")
	}

	// The same one is not.
	logs := &testlog.Buffer{}
	b = start(t, ctx, dir, opts.Topics, zerolog.New(logs))
	b.Close()
	require.NotContains(t, logs.String(), "another cleanup.policy")
}

// The broker deletes nothing by age, as its doc says: kfake's cleaner,
// which runs once a compacted topic exists, would otherwise apply Kafka's
// default retention.ms (7 days) to every topic, the lock state table
// included, and a lock quiet for a week would vanish from it.
func TestNoRetentionByAge(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := start(t, ctx, t.TempDir(), map[string]Topic{
		"table": {Partitions: 1, Configs: map[string]string{"cleanup.policy": "compact"}},
		"plain": {Partitions: 1},
	}, zerolog.Nop())
	cl := client(t, b)
	defer cl.Close()
	old := time.Now().Add(-30 * 24 * time.Hour)
	for _, topic := range []string{"table", "plain"} {
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte("quiet"), Timestamp: old}).FirstErr())
	}
	b.cluster.ApplyRetention()
	b.cluster.Compact()
	for _, topic := range []string{"table", "plain"} {
		recs := consume(t, ctx, b, topic, 1)
		require.Equal(t, "quiet", string(recs[0].Value), topic)
	}
}

// The broker compacts nothing by itself, as its doc says: kfake's cleaner
// rewrites a compacted partition's segment files in place (it removes them
// all, then writes the survivors), so a process killed meanwhile loses
// acknowledged records. The cleaner runs every log.cleaner.backoff.ms
// (TestCleanerRunsEveryBackoff); Start puts that beyond any process's life,
// again at every start, over a value a client set (which kfake keeps in the
// data directory).
func TestNoCompactionByItself(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	topics := map[string]Topic{"table": {Partitions: 1, Configs: map[string]string{"cleanup.policy": "compact"}}}
	const century = 100 * 365 * 24 * time.Hour

	b := start(t, ctx, dir, topics, zerolog.Nop())
	require.GreaterOrEqual(t, cleanerBackoff(t, ctx, b), century)
	setCleanerBackoff(t, ctx, b, "60000")
	require.Equal(t, time.Minute, cleanerBackoff(t, ctx, b))
	b.Close()

	b = start(t, ctx, dir, topics, zerolog.Nop())
	require.GreaterOrEqual(t, cleanerBackoff(t, ctx, b), century)
}

// kfake's cleaner compacts on a ticker of log.cleaner.backoff.ms, started
// with the value the broker has when its first compacted topic is created:
// the knob TestNoCompactionByItself checks.
func TestCleanerRunsEveryBackoff(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := start(t, ctx, t.TempDir(), nil, zerolog.Nop())
	setCleanerBackoff(t, ctx, b, "10")
	cl := client(t, b)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	created, err := adm.CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, "table")
	require.NoError(t, err)
	require.NoError(t, created.Err)
	// Batches of their own: kfake never compacts a partition's last one.
	for _, kv := range [][2]string{{"k", "v1"}, {"k", "v2"}, {"z", "x"}} {
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: "table", Key: []byte(kv[0]), Value: []byte(kv[1])}).FirstErr())
	}
	require.Eventually(t, func() bool {
		starts, err := adm.ListStartOffsets(ctx, "table")
		require.NoError(t, err)
		o, ok := starts.Lookup("table", 0)
		return ok && o.Err == nil && o.Offset > 0 // k=v1 compacted away
	}, 10*time.Second, 10*time.Millisecond)
}

// cleanerBackoff is how often kfake's cleaner runs: the broker's
// log.cleaner.backoff.ms, taken as kfake takes it (compactIntervalMs,
// refreshCompactTicker).
func cleanerBackoff(t *testing.T, ctx context.Context, b *Broker) time.Duration {
	t.Helper()
	cl := client(t, b)
	defer cl.Close()
	rcs, err := kadm.NewClient(cl).DescribeBrokerConfigs(ctx)
	require.NoError(t, err)
	require.Len(t, rcs, 1)
	require.NoError(t, rcs[0].Err)
	for _, c := range rcs[0].Configs {
		if c.Key == "log.cleaner.backoff.ms" && c.Value != nil {
			ms, err := strconv.ParseInt(*c.Value, 10, 64)
			require.NoError(t, err)
			return time.Duration(ms) * time.Millisecond
		}
	}
	t.Fatal("no log.cleaner.backoff.ms")
	return 0
}

// setCleanerBackoff sets the broker's log.cleaner.backoff.ms as a client
// would.
func setCleanerBackoff(t *testing.T, ctx context.Context, b *Broker, ms string) {
	t.Helper()
	cl := client(t, b)
	defer cl.Close()
	rs, err := kadm.NewClient(cl).AlterBrokerConfigs(ctx, []kadm.AlterConfig{{Name: "log.cleaner.backoff.ms", Value: &ms}})
	require.NoError(t, err)
	for _, r := range rs {
		require.NoError(t, r.Err)
	}
}
