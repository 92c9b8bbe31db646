package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sys/unix"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/topics"
)

// env is one real lockworker shared by the tests; each test uses its own
// lock names.
var env *e2e.Env

func TestMain(m *testing.M) {
	os.Exit(e2e.RunMain(m, func(e *e2e.Env) { env = e }))
}

type result struct {
	code           int
	stdout, stderr string
}

// withBrokers puts --brokers right after the command name, before any "--".
func withBrokers(args []string) []string {
	if len(args) == 0 {
		return args
	}
	return append([]string{args[0], "--brokers", env.Brokers[0]}, args[1:]...)
}

// lockctl runs lockctl in-process against the test's lockworker.
func lockctl(t *testing.T, args ...string) result {
	t.Helper()
	return lockctlCtx(context.Background(), args...)
}

func lockctlCtx(ctx context.Context, args ...string) result {
	var out, errOut testlog.Buffer
	code := run(ctx, withBrokers(args), &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

// start runs lockctl in the background; wait returns its result.
func start(ctx context.Context, args ...string) (stdout, stderr *testlog.Buffer, wait func() result) {
	stdout, stderr = &testlog.Buffer{}, &testlog.Buffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, withBrokers(args), stdout, stderr) }()
	return stdout, stderr, func() result {
		code := <-done
		return result{code, stdout.String(), stderr.String()}
	}
}

// commandSaid reports whether a terminal shows a line the command printed,
// not lockctl's "running sh -c 'echo ready...'", which comes first.
func commandSaid(terminal, line string) bool { return strings.Contains(terminal, "\n"+line) }

// eventually waits for cond, polling output a test reads (not the lock
// state, which the tests learn from events).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"acquire"},
		{"acquire", "--lock", "x", "--lease", "soon"},
		{"acquire", "--lock", "x", "extra"},
		{"release", "--lock", "x"},
		{"run", "--lock", "x"},
		{"acquire", "--lock", "bad\x01name"},
		{"acquire", "--lock", "x", "--metadata", "{not json"},
		{"acquire", "--lock", "x", "--metadata", `"a string"`},
		{"cleanup", "--max-age", "-5"},
		{"run", "--lock", "x", "--grace", "-1s", "--", "true"},
		{"run", "--lock", "x", "--grace", "-1", "--", "true"},
		// A --timeout that has passed already: not "unreachable" (3).
		{"query", "--lock", "x", "--timeout", "0"},
		{"watch", "--timeout", "-1s"},
		// An explicit 0 is refused where leaving the flag out means a default.
		{"acquire", "--lock", "x", "--lease", "0"},
		{"acquire", "--lock", "x", "--lease", "0s"},
		{"acquire", "--lock", "x", "--limit", "0"},
		{"run", "--lock", "x", "--lease", "-0", "--", "true"},
		{"extend", "--lock", "x", "--owner", "o", "--by", "0"},
		{"acquire", "--lock", "x", "--lease", "NaN"},
		{"acquire", "--lock", "x", "--wait", "Inf"},
		{"acquire", "--lock", "x", "--max-hold", "1e300"},
		// A Config the SDK refuses before reaching Kafka: no broker here.
		{"query", "--lock", "x", "--requester", "a b", "--brokers", "127.0.0.1:1"},
	} {
		var out, errOut testlog.Buffer
		code := run(context.Background(), args, &out, &errOut)
		assert.Equal(t, exitUsage, code, "lockctl %q: stderr %s", args, errOut.String())
		assert.NotEmpty(t, errOut.String(), "lockctl %q says why", args)
	}
	var out, errOut testlog.Buffer
	assert.Equal(t, exitOK, run(context.Background(), []string{"help"}, &out, &errOut))
	assert.Contains(t, out.String(), "run     --lock NAME")
}

// A usage error is one line naming the flag and the value as given, and a
// hint to the command's flags: not the flags themselves, which -h prints.
func TestUsageErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"acquire", "--lock", "x", "--lease", "1000000h"}, "--lease 1000000h: lease_duration 3600000000 is outside 0.1..86400 seconds"},
		{[]string{"acquire", "--lock", "x", "--lease", "1ns"}, "--lease 1ns: lease_duration 1e-09 is outside 0.1..86400 seconds"},
		{[]string{"acquire", "--lock", "x", "--wait", "-1s"}, "--wait -1s: wait_timeout -1 is outside 0..3600 seconds"},
		{[]string{"acquire", "--lock", "x", "--lease", "-5"}, "--lease -5 is not positive (leave it out for the default)"},
		{[]string{"acquire", "--lock", "x", "--limit", "20000"}, "--limit 20000: limit 20000 is outside 1..10000"},
		{[]string{"acquire", "--lock", "x", "--max-hold", "1e300"}, `invalid value "1e300" for flag -max-hold: 1e300 seconds is out of range (at most 9223372036)`},
		{[]string{"acquire", "--lock", "x", "--frob"}, "flag provided but not defined: -frob"},
		{[]string{"acquire"}, "--lock is required"},
		{[]string{"extend", "--lock", "x", "--owner", "o", "--by", "25h"}, "--by 25h: extension_duration 90000 is outside 0.1..86400 seconds"},
		{[]string{"cleanup", "--max-age", "-1"}, "--max-age -1: max_age_seconds -1 is outside 0..315360000"},
		{[]string{"run", "--lock", "x", "--grace", "-1", "--", "true"}, "--grace -1 is negative (0 sends SIGKILL at once)"},
		// Not a negative --lock-delay from --grace plus the reply timeout overflowing.
		{[]string{"run", "--lock", "x", "--grace", "9223372036", "--", "true"}, "--grace 9223372036 is over 24h"},
		{[]string{"elect", "--name", "x", "--grace", "25h", "--", "true"}, "--grace 25h is over 24h"},
		{[]string{"query", "--lock", "x", "--timeout", "-0.5"}, "--timeout -0.5 is not positive (leave it out for the default)"},
		// Every error found, on one line.
		{[]string{"run", "--grace", "-1", "--", "true"}, "--lock is required; --grace -1 is negative (0 sends SIGKILL at once)"},
		{[]string{"query", "--lock", "x", "--brokers", "k1:9092,k2:70000"},
			`environment and --brokers: --brokers: "k1:9092,k2:70000" has "k2:70000", which is not host[:port] with a port of 1..65535`},
		// Messages quote values as given, not as parsed.
		{[]string{"query", "--lock", "x", "--timeout", "1e-10"}, "--timeout 1e-10 is not positive (it rounds to 0; leave it out for the default)"},
		{[]string{"acquire", "--lock", "x", "--lease", "0.1ns"}, "--lease 0.1ns is not positive (it rounds to 0; leave it out for the default)"},
		{[]string{"acquire", "--lock", "x", "--lease", "0e5"}, "--lease 0e5 is not positive (leave it out for the default)"},
		{[]string{"acquire", "--lock", "x", "--limit", "0x0"}, "--limit 0x0 is not positive (leave it out for the default)"},
		{[]string{"acquire", "--lock", "x", "--limit", "0x4E20"}, "--limit 0x4E20: limit 20000 is outside 1..10000"},
	} {
		var out, errOut testlog.Buffer
		code := run(context.Background(), tc.args, &out, &errOut)
		assert.Equal(t, exitUsage, code, "lockctl %q", tc.args)
		assert.Equal(t, "lockctl "+tc.args[0]+": "+tc.want+"\nrun 'lockctl "+tc.args[0]+" -h' for usage\n", errOut.String(), "lockctl %q", tc.args)
	}
	var out, errOut testlog.Buffer
	assert.Equal(t, exitUsage, run(context.Background(), []string{"frobnicate"}, &out, &errOut))
	assert.Equal(t, "lockctl: unknown command \"frobnicate\"\nrun 'lockctl help' for usage\n", errOut.String())
	errOut = testlog.Buffer{}
	assert.Equal(t, exitOK, run(context.Background(), []string{"run", "-h"}, &out, &errOut))
	assert.Contains(t, errOut.String(), "Usage of lockctl run:\n")
	// Placeholders that say what a flag takes (its help's `word`).
	assert.Contains(t, errOut.String(), "  -timeout duration\n")
	assert.Contains(t, errOut.String(), "  -grace duration\n")
	assert.Contains(t, errOut.String(), "  -limit N\n")
	for _, cmd := range []string{"acquire", "extend", "cleanup", "run", "elect"} {
		errOut = testlog.Buffer{}
		assert.Equal(t, exitOK, run(context.Background(), []string{cmd, "-h"}, &out, &errOut))
		assert.NotContains(t, errOut.String(), " value\n", "lockctl %s -h: every flag says what it takes", cmd)
	}
}

// --timeout and --grace take plain seconds, as the other duration flags do.
func TestTimeoutAndGraceTakeSeconds(t *testing.T) {
	r := lockctl(t, "run", "--lock", "ctl-run-seconds", "--timeout", "9", "--grace", "90", "--", "true")
	assert.Equal(t, exitOK, r.code, r.stderr)
	// The lock-delay's warning tells both back: 90 s of grace, and a reply
	// timeout of 3 s, a third of --timeout.
	assert.Contains(t, r.stderr, "--lock-delay is 1m0s, the contract's longest, for --grace 90 (+ 3s for a revoke to reach lockctl)")
}

// A broker that refuses connections is tried again until --timeout (one
// restarting may come back), then said unreachable: the refusal, not the
// deadline.
func TestUnreachableBroker(t *testing.T) {
	for _, cmd := range [][]string{{"query", "--lock", "x"}, {"watch"}, {"run", "--lock", "x", "--", "true"}} {
		var out, errOut testlog.Buffer
		start := time.Now()
		code := run(context.Background(), append(cmd[:1:1], append([]string{"--brokers", "127.0.0.1:1", "--timeout", "2s"}, cmd[1:]...)...), &out, &errOut)
		assert.Equal(t, exitUnreachable, code, "lockctl %q: %s", cmd, errOut.String())
		assert.Contains(t, errOut.String(), "unreachable")
		assert.NotContains(t, errOut.String(), "passed first", "the refusal is the error, not the deadline")
		assert.Less(t, time.Since(start), 5*time.Second)
	}
}

// A deadline other than --timeout's (here the caller's; in the field
// franz-go's own dial timeout, whose "i/o timeout" matches
// context.DeadlineExceeded too) does not blame --timeout.
func TestOtherDeadlineIsNotTimeouts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // connects, never answers
	require.NoError(t, err)
	defer ln.Close()
	for _, cmd := range [][]string{{"query", "--lock", "x"}, {"watch"}, {"locks"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		var out, errOut testlog.Buffer
		code := run(ctx, append(cmd, "--brokers", ln.Addr().String(), "--timeout", "30"), &out, &errOut)
		cancel()
		assert.Equal(t, exitUnreachable, code, "lockctl %q: %s", cmd, errOut.String())
		assert.Contains(t, errOut.String(), "deadline exceeded", "lockctl %q", cmd)
		assert.NotContains(t, errOut.String(), "passed first", "lockctl %q", cmd)
	}
}

// A --timeout too short to reach brokers that answer: exit 3 as for brokers
// that hang (lockctl cannot tell them apart), naming --timeout.
func TestTimeoutTooShortToConnect(t *testing.T) {
	for _, cmd := range [][]string{{"query", "--lock", "x"}, {"watch"}, {"locks"}} {
		r := lockctl(t, append(cmd, "--timeout", "1ns")...)
		assert.Equal(t, exitUnreachable, r.code, "lockctl %q: %s", cmd, r.stderr)
		assert.Contains(t, r.stderr, "context deadline exceeded", "lockctl %q", cmd)
		assert.Equal(t, 1, strings.Count(r.stderr, "--timeout 1ns passed first"), "lockctl %q: %s", cmd, r.stderr)
	}
}

// stateTopic is a broker whose lock state topic (one partition) holds recs.
func stateTopic(t *testing.T, recs ...*kgo.Record) *kfake.Cluster {
	t.Helper()
	kafka, _ := kafkatest.StateTopic(t, 1, recs...)
	return kafka
}

// locks reads the lock state topic from brokers it reached: when they stop
// answering its fetches, it exits 3 (unreachable) at --timeout, not 1.
func TestLocksUnreachableAfterSetup(t *testing.T) {
	kafka := stateTopic(t, kafkatest.StateRecord(t, "job", 1))
	kafka.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Err: kerr.NotLeaderForPartition, Count: -1})
	var out, errOut testlog.Buffer
	code := run(context.Background(), []string{"locks", "--brokers", kafka.ListenAddrs()[0], "--timeout", "1s"}, &out, &errOut)
	assert.Equal(t, exitUnreachable, code, errOut.String())
	assert.Contains(t, errOut.String(), "unreachable")
}

// locks whose --timeout passes while the brokers answer (a long topic; here
// a fetch held) exits 1 and says so: it is not unreachable (3).
func TestLocksSlowerThanTimeout(t *testing.T) {
	kafka := stateTopic(t, kafkatest.StateRecord(t, "job", 1))
	_, release := kafkatest.HoldFirst(kafka, kmsg.Fetch)
	defer release()
	var out, errOut testlog.Buffer
	code := run(context.Background(), []string{"locks", "--brokers", kafka.ListenAddrs()[0], "--timeout", "1"}, &out, &errOut)
	assert.Equal(t, exitRefused, code, errOut.String())
	assert.Equal(t, 1, strings.Count(errOut.String(), "--timeout 1 passed first"), errOut.String())
	assert.Contains(t, errOut.String(), "(a longer one reads a longer topic)")
	assert.NotContains(t, errOut.String(), "unreachable")
}

// locks prints the table of the locks it can read and warns on stderr of
// those left out, whose newest record cannot be decoded (as a renamed field
// would make every record): not an empty table in silence.
func TestLocksWarnsOfUnreadableRecords(t *testing.T) {
	kafka := stateTopic(t, kafkatest.StateRecord(t, "job", 1),
		&kgo.Record{Key: []byte("other"), Value: []byte(`{"name": "other", "revision": 2}`)})
	var out, errOut testlog.Buffer
	code := run(context.Background(), []string{"locks", "--brokers", kafka.ListenAddrs()[0]}, &out, &errOut)
	assert.Equal(t, exitOK, code, errOut.String())
	assert.Contains(t, out.String(), "job rev=1 released")
	assert.NotContains(t, out.String(), "other")
	assert.Contains(t, errOut.String(), "lockctl locks: warning: 1 lock key(s) left out (other): their newest record of "+topics.DefaultNames().State+" is unreadable")

	// Only of the namespace shown.
	out, errOut = testlog.Buffer{}, testlog.Buffer{}
	code = run(context.Background(), []string{"locks", "--brokers", kafka.ListenAddrs()[0], "--namespace", "ns"}, &out, &errOut)
	assert.Equal(t, exitOK, code, errOut.String())
	assert.NotContains(t, errOut.String(), "warning")
}

// --brokers stands for KAFKA_BOOTSTRAP_SERVERS, which the Kafka TLS and
// SASL settings need, and it is checked as the variable is.
func TestBrokersFlagStandsForTheVariable(t *testing.T) {
	t.Setenv("KAFKA_BOOTSTRAP_SERVERS", "")
	t.Setenv("KAFKA_TLS_ENABLED", "true")
	var out, errOut testlog.Buffer
	code := run(context.Background(), []string{"query", "--lock", "x", "--brokers", "127.0.0.1:1", "--timeout", "2s"}, &out, &errOut)
	assert.Equal(t, exitUnreachable, code, "TLS to the --brokers given: %s", errOut.String())
	assert.NotContains(t, errOut.String(), "needs KAFKA_BOOTSTRAP_SERVERS")

	t.Setenv("KAFKA_TLS_ENABLED", "")
	errOut = testlog.Buffer{}
	code = run(context.Background(), []string{"query", "--lock", "x", "--brokers", "k1:9092,k2:70000"}, &out, &errOut)
	assert.Equal(t, exitUsage, code, errOut.String())
	assert.Contains(t, errOut.String(), `--brokers: "k1:9092,k2:70000" has "k2:70000", which is not host[:port]`)
}

// Every mistake of the environment, on one line naming the command.
func TestEnvironmentErrors(t *testing.T) {
	t.Setenv("KAFKA_TLS_ENABLED", "maybe")
	t.Setenv("KAFKA_TOPIC_COMMANDS", "no spaces")
	var out, errOut testlog.Buffer
	assert.Equal(t, exitUsage, run(context.Background(), []string{"query", "--lock", "x"}, &out, &errOut))
	assert.Regexp(t, `^lockctl query: environment: KAFKA_TLS_ENABLED: "maybe" is not a boolean[^\n]*; KAFKA_TOPIC_COMMANDS: "no spaces" is not a valid Kafka topic name[^\n]*\nrun 'lockctl query -h' for usage\n$`, errOut.String())
}

// lockctl joins no consumer group: a KAFKA_SESSION_TIMEOUT below
// EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT, which lockworker refuses with the
// embedded broker (KAFKA_BOOTSTRAP_SERVERS unset), is not lockctl's
// concern; it reaches the broker at EMBEDDED_KAFKA_ADDR as ever.
func TestWorkerSessionTimeoutIgnored(t *testing.T) {
	t.Setenv("KAFKA_BOOTSTRAP_SERVERS", "")
	t.Setenv("EMBEDDED_KAFKA_ADDR", env.Brokers[0])
	t.Setenv("KAFKA_SESSION_TIMEOUT", "2")
	t.Setenv("KAFKA_HEARTBEAT_INTERVAL", "0.5")
	var out, errOut testlog.Buffer
	code := run(context.Background(), []string{"query", "--lock", "ctl-session-timeout"}, &out, &errOut)
	require.Equal(t, exitOK, code, errOut.String())
	assert.Equal(t, "ctl-session-timeout free\n", out.String())
}

// A Kafka setting that fails only as lockctl connects (a TLS file it
// cannot read) is a mistake of the environment too: exit 2, for the
// commands that send and those that read.
func TestKafkaSettingsErrors(t *testing.T) {
	t.Setenv("KAFKA_TLS_ENABLED", "true")
	t.Setenv("KAFKA_TLS_CA_FILE", filepath.Join(t.TempDir(), "missing.pem"))
	for _, args := range [][]string{{"query", "--lock", "x"}, {"watch"}, {"watch", "--lock", "x"}} {
		var out, errOut testlog.Buffer
		assert.Equal(t, exitUsage, run(context.Background(), append(args, "--brokers", "127.0.0.1:1"), &out, &errOut), errOut.String())
		assert.Contains(t, errOut.String(), "lockctl "+args[0]+": environment: KAFKA_TLS_CA_FILE: ")
	}
}

func TestAcquireQueryReleaseExitCodes(t *testing.T) {
	const lock = "ctl-basic"
	r := lockctl(t, "acquire", "--lock", lock, "--owner", "alice", "--lease", "60", "--json", "--metadata", `{"job":"backup"}`)
	require.Equal(t, exitOK, r.code, r.stderr)
	var ev topics.Event
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ev), r.stdout)
	require.Equal(t, topics.TypeAcquired, ev.Type)
	require.NotEmpty(t, ev.EventID)
	token := ev.LockInfo.FencingToken
	tok := strconv.FormatInt(token, 10)

	r = lockctl(t, "acquire", "--lock", lock, "--owner", "bob")
	assert.Equal(t, exitRefused, r.code)
	assert.Contains(t, r.stderr, `LOCK_HELD: lock "ctl-basic" is held by "alice" until `)

	r = lockctl(t, "query", "--lock", lock)
	assert.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "ctl-basic acquired owner=alice token="+tok)
	assert.Regexp(t, `metadata=\{"job": ?"backup"\}`, r.stdout)

	r = lockctl(t, "extend", "--lock", lock, "--owner", "alice", "--by", "30s", "--token", tok)
	assert.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "extended ctl-basic acquired")
	assert.Contains(t, r.stdout, "extensions=1")

	r = lockctl(t, "release", "--lock", lock, "--owner", "bob")
	assert.Equal(t, exitRefused, r.code)
	assert.Contains(t, r.stderr, "NOT_OWNER")
	r = lockctl(t, "release", "--lock", lock, "--owner", "alice", "--token", strconv.FormatInt(token+1000, 10), "--json")
	assert.Equal(t, exitRefused, r.code)
	assert.Contains(t, r.stderr, "TOKEN_MISMATCH")
	assert.Contains(t, r.stdout, `"error_code":"TOKEN_MISMATCH"`, "--json prints the refusal too")
	r = lockctl(t, "release", "--lock", lock, "--owner", "alice", "--token", tok)
	assert.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "released ctl-basic released owner=alice token="+tok)
	r = lockctl(t, "release", "--lock", lock, "--owner", "alice")
	assert.Equal(t, exitRefused, r.code)
	assert.Contains(t, r.stderr, "NOT_HELD")

	r = lockctl(t, "cleanup", "--lock", lock, "--max-age", "0")
	assert.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, "cleaned 1 locks: ctl-basic\n", r.stdout)
	r = lockctl(t, "query", "--lock", lock)
	assert.Equal(t, "ctl-basic free\n", r.stdout)
}

func TestRunPassesExitCodeAndReleases(t *testing.T) {
	const lock = "ctl-run-exit"
	r := lockctl(t, "run", "--lock", lock, "--", "sh", "-c", `echo "token=$LOCKCTL_FENCING_TOKEN"; exit 7`)
	assert.Equal(t, 7, r.code, r.stderr)
	assert.Regexp(t, `^token=\d+\n$`, r.stdout)
	r = lockctl(t, "query", "--lock", lock)
	assert.Contains(t, r.stdout, "ctl-run-exit released")

	r = lockctl(t, "run", "--lock", lock, "--", "true")
	assert.Equal(t, exitOK, r.code, r.stderr)
	r = lockctl(t, "run", "--lock", lock, "--", "/nonexistent/command")
	assert.Equal(t, 127, r.code, r.stderr)
}

// When the lease is lost (here: released behind run's back, as an operator
// breaking a stuck lock would), run stops the command and exits 4.
func TestRunStopsCommandWhenLeaseLost(t *testing.T) {
	const lock = "ctl-run-lost"
	_, stderr, wait := start(context.Background(), "run", "--lock", lock, "--owner", "runner", "--lease", "1", "--", "sleep", "60")
	eventually(t, "run to hold the lock", func() bool { return strings.Contains(stderr.String(), "holding") })
	r := lockctl(t, "release", "--lock", lock, "--owner", "runner")
	require.Equal(t, exitOK, r.code, r.stderr)
	started := time.Now()
	r = wait()
	assert.Equal(t, exitLeaseLost, r.code)
	assert.Equal(t, 4, r.code, "the documented code of a lost lease")
	assert.Contains(t, r.stderr, "lease lost")
	assert.Contains(t, r.stderr, "stopped sleep (signal terminated); exit code 4")
	assert.Less(t, time.Since(started), 5*time.Second)
}

// The loss of the lease takes precedence over the command's own exit code:
// a command that exits 0 when stopped still makes run exit 4, while a
// command that fails on its own with 1 under a held lease gives 1, not a
// refusal.
func TestRunLeaseLostTakesPrecedence(t *testing.T) {
	const lock = "ctl-run-lost-precedence"
	stdout, _, wait := start(context.Background(), "run", "--lock", lock, "--owner", "trapper", "--lease", "1", "--",
		"sh", "-c", `trap 'exit 0' TERM; echo ready; sleep 60 & wait`)
	eventually(t, "the command to trap SIGTERM", func() bool { return strings.Contains(stdout.String(), "ready") })
	r := lockctl(t, "release", "--lock", lock, "--owner", "trapper")
	require.Equal(t, exitOK, r.code, r.stderr)
	r = wait()
	assert.Equal(t, exitLeaseLost, r.code, r.stderr)
	assert.Contains(t, r.stderr, "stopped sh (exit code 0); exit code 4")

	r = lockctl(t, "run", "--lock", lock, "--", "sh", "-c", "exit 1")
	assert.Equal(t, 1, r.code, r.stderr)
	assert.NotContains(t, r.stderr, "lease lost")
}

// A lost lease stops everything the command started, not only its first
// process.
func TestRunStopsTheWholeCommand(t *testing.T) {
	const lock = "ctl-run-group"
	pidFile := filepath.Join(t.TempDir(), "pid")
	_, stderr, wait := start(context.Background(), "run", "--lock", lock, "--owner", "grouper", "--lease", "1", "--",
		"sh", "-c", `sleep 60 & echo $! > "$1"; wait`, "sh", pidFile)
	pid := readPid(t, "the grandchild", pidFile)
	eventually(t, "run to hold the lock", func() bool { return strings.Contains(stderr.String(), "holding") })
	r := lockctl(t, "release", "--lock", lock, "--owner", "grouper")
	require.Equal(t, exitOK, r.code, r.stderr)
	r = wait()
	assert.Equal(t, exitLeaseLost, r.code, r.stderr)
	eventually(t, "the grandchild to be gone", func() bool { return gone(pid) })
}

// So does it when lockctl's stdin is its controlling terminal (lockctl run
// typed at a prompt): there the command stays in lockctl's process group,
// the shell's job, and what it started is found below it.
func TestRunOnATerminalStopsTheWholeCommand(t *testing.T) {
	bin := buildLockctl(t)
	// Typed at the prompt, with stdin the terminal or redirected: the
	// session has the terminal either way.
	for name, redirect := range map[string]string{"stdin the terminal": "", "stdin redirected": " </dev/null"} {
		t.Run(name, func(t *testing.T) {
			lock := "ctl-run-tty-group-" + strconv.Itoa(len(redirect))
			_, tty, _ := openPTY(t)
			pidFile := filepath.Join(t.TempDir(), "pid")
			var stderr testlog.Buffer
			// A shell leads the terminal's session, in its foreground
			// group, and runs lockctl there (a shell without job control,
			// as a script's); it outlives lockctl, as a login shell would.
			// (The end of a session's leader hangs up its terminal, which
			// ends the foreground group: it would hide what lockctl left
			// running.)
			shell := exec.Command("sh", "-c", `"$@"`+redirect+`; echo "lockctl exited $?" >&2; exec sleep 60`, "sh", bin, "run",
				"--brokers", env.Brokers[0], "--lock", lock, "--owner", "tty", "--lease", "1", "--",
				"sh", "-c", `sleep 60 >/dev/null 2>&1 & echo $! > "$1"; wait`, "sh", pidFile)
			shell.Stdin, shell.Stderr = tty, &stderr
			shell.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
			require.NoError(t, shell.Start())
			defer func() { _ = shell.Process.Kill(); _ = shell.Wait() }()
			pid := readPid(t, "the grandchild", pidFile)
			defer syscall.Kill(pid, syscall.SIGKILL) // should it survive
			eventually(t, "run to hold the lock", func() bool { return strings.Contains(stderr.String(), "holding") })
			pgrp, foreground := procGroups(t, pid)
			assert.Equal(t, shell.Process.Pid, pgrp, "the command stays in lockctl's group (the shell's: it has no job control)")
			assert.Equal(t, pgrp, foreground, "the terminal's foreground")

			r := lockctl(t, "release", "--lock", lock, "--owner", "tty")
			require.Equal(t, exitOK, r.code, r.stderr)
			eventually(t, "lockctl to exit", func() bool { return strings.Contains(stderr.String(), "lockctl exited") })
			assert.Contains(t, stderr.String(), "lockctl exited 4", "the lease was lost")
			eventually(t, "the grandchild to be gone", func() bool { return gone(pid) })
		})
	}
}

// The command on a terminal is part of the shell's job, lockctl's: it reads
// the terminal, Ctrl-Z stops it and lockctl with it (the shell's fg
// continues both), and Ctrl-C ends it, after which lockctl releases the lock
// and passes its code on.
func TestRunOnATerminalIsAJob(t *testing.T) {
	const lock = "ctl-run-tty-job"
	bin := buildLockctl(t)
	user, tty, out := openPTY(t)
	// bash with job control, as at a prompt, runs lockctl as its job.
	script := `set -m
"$0" run --brokers "$1" --lock "$2" -- sh -c 'echo ready; read line; echo "read $line"; exec sleep 60'
echo "status $?"
fg
echo "status $?"`
	shell := startJob(t, script, tty, out, bin, env.Brokers[0], lock)
	eventually(t, "the command to start", func() bool { return commandSaid(out.String(), "ready") })
	_, err := user.Write([]byte{'Z' & 0x1f}) // Ctrl-Z
	require.NoError(t, err)
	eventually(t, "the shell to see its job stopped", func() bool { return strings.Contains(out.String(), "status 148") })
	r := lockctl(t, "query", "--lock", lock)
	assert.Contains(t, r.stdout, lock+" acquired", "a stopped job keeps its lock (for its lease)")

	_, err = user.Write([]byte("hello\n")) // read by the command, once fg continued it
	require.NoError(t, err)
	eventually(t, "the command to read the terminal", func() bool { return strings.Contains(out.String(), "read hello") })
	_, err = user.Write([]byte{'C' & 0x1f}) // Ctrl-C
	require.NoError(t, err)
	eventually(t, "the job to end with 128+SIGINT, the command's code", func() bool { return strings.Contains(out.String(), "status 130") })
	require.NoError(t, shell.Wait())
	r = lockctl(t, "query", "--lock", lock)
	assert.Contains(t, r.stdout, lock+" released")
}

// startJob runs script with args in bash, leading a session of its own with
// tty its terminal (bash's job control needs stdout and stderr on it too),
// killed should the test end before it; out, the terminal's screen, is
// logged when the test failed.
func startJob(t *testing.T, script string, tty *os.File, out *testlog.Buffer, args ...string) *exec.Cmd {
	t.Helper()
	shell := exec.Command("bash", append([]string{"-c", script}, args...)...)
	shell.Stdin, shell.Stdout, shell.Stderr = tty, tty, tty
	shell.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	require.NoError(t, shell.Start())
	t.Cleanup(func() {
		_ = shell.Process.Kill()
		if t.Failed() {
			t.Logf("the terminal showed:\n%s", out.String())
		}
	})
	return shell
}

// buildLockctl builds lockctl for a test that needs it as a process of its
// own.
func buildLockctl(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds lockctl")
	}
	bin := filepath.Join(t.TempDir(), "lockctl")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// openPTY opens a pseudo-terminal: its master, the user's keyboard, the
// terminal itself, for a process's stdin, and what the terminal shows.
func openPTY(t *testing.T) (keyboard, tty *os.File, screen *testlog.Buffer) {
	t.Helper()
	keyboard, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { keyboard.Close() })
	require.NoError(t, unix.IoctlSetPointerInt(int(keyboard.Fd()), unix.TIOCSPTLCK, 0)) // unlockpt
	n, err := unix.IoctlGetUint32(int(keyboard.Fd()), unix.TIOCGPTN)
	require.NoError(t, err)
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { tty.Close() })
	screen = &testlog.Buffer{}
	go func() { _, _ = io.Copy(screen, keyboard) }() // until the master is closed
	return keyboard, tty, screen
}

// readPid waits for a process to write its pid to file and returns it.
func readPid(t *testing.T, what, file string) int {
	t.Helper()
	eventually(t, what+" to start", func() bool { b, _ := os.ReadFile(file); return strings.HasSuffix(string(b), "\n") })
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	return pid
}

// gone reports whether the process is gone, or a zombie nobody reaped yet.
func gone(pid int) bool {
	st, ok := stat(pid)
	return !ok || st.State == 'Z'
}

// procGroups returns the process group of the process and the foreground
// group of its terminal.
func procGroups(t *testing.T, pid int) (pgrp, foreground int) {
	t.Helper()
	st, ok := stat(pid)
	require.True(t, ok, "process %d is gone", pid)
	return st.PGRP, st.TPGID
}

// A command that ignores SIGTERM is killed after the grace period; an
// interrupted run still releases the lock.
func TestRunEscalatesToSIGKILL(t *testing.T) {
	const lock = "ctl-run-kill"
	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	stdout, _, wait := start(ctx, "run", "--lock", lock, "--grace", "300ms", "--", "sh", "-c", `trap "" TERM; echo ready; exec sleep 60`)
	// Only once the command ignores SIGTERM does the test interrupt.
	eventually(t, "the command to start", func() bool { return strings.Contains(stdout.String(), "ready") })
	interrupt() // as SIGINT to lockctl
	r := wait()
	assert.Equal(t, 128+9, r.code, r.stderr)
	r = lockctl(t, "query", "--lock", lock)
	assert.Contains(t, r.stdout, "ctl-run-kill released")
}

// --grace 0: no SIGTERM first, but SIGKILL at once, to the whole command.
func TestRunGraceZeroKillsAtOnce(t *testing.T) {
	const lock = "ctl-run-grace0"
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	_, _, wait := start(ctx, "run", "--lock", lock, "--grace", "0", "--",
		"sh", "-c", `trap "" TERM; sleep 60 & echo $! > "$1"; wait`, "sh", pidFile)
	pid := readPid(t, "the command, ignoring SIGTERM,", pidFile)
	defer syscall.Kill(pid, syscall.SIGKILL) // should it survive
	interrupt()
	done := make(chan result, 1)
	go func() { done <- wait() }()
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second): // half the default grace
		t.Fatal("lockctl run --grace 0 still waits for a command ignoring SIGTERM")
	}
	assert.Equal(t, 128+9, r.code, r.stderr)
	eventually(t, "the grandchild to be killed too", func() bool { return gone(pid) })
	r = lockctl(t, "query", "--lock", lock)
	assert.Contains(t, r.stdout, lock+" released")
}

// Two runs on one lock take turns: the second waits for the first.
func TestTwoRunsNeverOverlap(t *testing.T) {
	const lock = "ctl-run-turns"
	log := filepath.Join(t.TempDir(), "log")
	script := `echo "start $LOCKCTL_FENCING_TOKEN" >> "$1"; sleep 0.3; echo "end $LOCKCTL_FENCING_TOKEN" >> "$1"`
	_, _, wait1 := start(context.Background(), "run", "--lock", lock, "--wait", "20s", "--", "sh", "-c", script, "sh", log)
	_, _, wait2 := start(context.Background(), "run", "--lock", lock, "--wait", "20s", "--", "sh", "-c", script, "sh", log)
	r1, r2 := wait1(), wait2()
	require.Equal(t, exitOK, r1.code, r1.stderr)
	require.Equal(t, exitOK, r2.code, r2.stderr)
	b, err := os.ReadFile(log)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.Len(t, lines, 4, string(b))
	var t1, t2 int64
	_, err = fmtSscanf(lines[0], "start %d", &t1)
	require.NoError(t, err)
	_, err = fmtSscanf(lines[2], "start %d", &t2)
	require.NoError(t, err)
	assert.Equal(t, []string{"start " + itoa(t1), "end " + itoa(t1), "start " + itoa(t2), "end " + itoa(t2)}, lines, "no overlap")
	assert.Less(t, t1, t2, "fencing tokens grow")
}

func TestWatchPrintsLines(t *testing.T) {
	lock := fmt.Sprintf("ctl-watch-%d", time.Now().UnixNano()) // --from-beginning: not an earlier run's
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	// watch --lock and locks read the lock state topic only: they make no
	// reply topic, nor ask Kafka anything about one.
	reader := fmt.Sprintf("ctl-reader-%d", time.Now().UnixNano())
	replies := env.Cluster.Fault(kfake.Fault{Topic: topics.DefaultNames().ReplyTopic(reader), Count: -1, Observe: true})
	defer replies.Remove()
	events, _, waitEvents := start(ctx, "watch", "--from-beginning")
	revisions, _, waitRevisions := start(ctx, "watch", "--lock", lock, "--requester", reader)
	eventually(t, "the lock's state before its first change", func() bool {
		return strings.Contains(revisions.String(), lock+" rev=0 free")
	})
	r := lockctl(t, "acquire", "--lock", lock, "--owner", "watched")
	require.Equal(t, exitOK, r.code, r.stderr)
	r = lockctl(t, "release", "--lock", lock, "--owner", "watched")
	require.Equal(t, exitOK, r.code, r.stderr)
	eventually(t, "acquired and released lines", func() bool {
		out := events.String()
		return strings.Contains(out, lock+" owner=watched") && strings.Count(out, lock+" ") == 2 && strings.Contains(revisions.String(), "rev=2")
	})
	stop()
	res := waitEvents()
	assert.Equal(t, exitOK, res.code, res.stderr)
	var mine []string
	for _, l := range strings.Split(strings.TrimSpace(res.stdout), "\n") {
		if strings.Contains(l, " "+lock+" ") {
			mine = append(mine, l)
		}
	}
	require.Len(t, mine, 2, res.stdout)
	for _, l := range mine {
		assert.Regexp(t, `^\d{4}-\d\d-\d\dT\S+Z lock\.(acquired|released) +`+lock+` owner=watched token=\d+`, l)
	}
	res = waitRevisions()
	assert.Equal(t, exitOK, res.code, res.stderr)
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	require.Len(t, lines, 3, res.stdout)
	assert.Equal(t, lock+" rev=0 free", lines[0])
	assert.Regexp(t, `^\S+Z `+lock+` rev=1 acquired by=acquire holder=watched/exclusive/token=\d+/expires=\S+Z$`, lines[1])
	assert.Regexp(t, `^\S+Z `+lock+` rev=2 released by=release$`, lines[2])

	r = lockctl(t, "locks", "--requester", reader)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Regexp(t, `(?m)^\S+Z `+lock+` rev=2 released by=release$`, r.stdout, "locks lists the table")
	assert.Zero(t, replies.Hits(), "requests about %s's reply topic", reader)
	r = lockctl(t, "watch", "--lock", lock, "--from-beginning")
	assert.Equal(t, exitUsage, r.code)
}

// With --namespace, watch prints the events of that namespace's locks only.
func TestWatchNamespace(t *testing.T) {
	suffix := strconv.FormatInt(time.Now().UnixNano(), 10) // --from-beginning: not an earlier run's
	lock, mine, other := "ctl-watch-ns-"+suffix, "ns-a-"+suffix, "ns-b-"+suffix
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	events, _, wait := start(ctx, "watch", "--from-beginning", "--namespace", mine)
	// The other namespaces' events first: each lifecycle topic has one
	// partition, so once watch has printed mine it has read theirs.
	for _, ns := range []string{other, "", mine} {
		r := lockctl(t, "acquire", "--namespace", ns, "--lock", lock, "--owner", "watched")
		require.Equal(t, exitOK, r.code, r.stderr)
		r = lockctl(t, "release", "--namespace", ns, "--lock", lock, "--owner", "watched")
		require.Equal(t, exitOK, r.code, r.stderr)
	}
	eventually(t, "the acquired and released lines of "+mine, func() bool {
		return strings.Count(events.String(), " "+mine+"/"+lock+" owner=watched") == 2
	})
	stop()
	r := wait()
	assert.Equal(t, exitOK, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 2, r.stdout)
	assert.Regexp(t, `lock\.acquired +`+mine+"/"+lock+" ", lines[0])
	assert.Regexp(t, `lock\.released +`+mine+"/"+lock+" ", lines[1])
	assert.Contains(t, r.stderr, "for the locks of namespace "+mine)
}

// An error Kafka answers watch's fetches with (here
// TOPIC_AUTHORIZATION_FAILED, as without the Read ACL) is a warning on
// stderr, once, instead of silence.
func TestWatchWarnsOfKafkaErrors(t *testing.T) {
	names := topics.DefaultNames()
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, names.Acquired, names.Released, names.Expired, names.Revoked))
	require.NoError(t, err)
	defer kafka.Close()
	refused := kafka.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Err: kerr.TopicAuthorizationFailed, Count: -1})
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var out, errOut testlog.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"watch", "--brokers", kafka.ListenAddrs()[0]}, &out, &errOut) }()
	eventually(t, "a warning for each lifecycle topic, and fetches refused again after it", func() bool {
		return strings.Count(errOut.String(), "TOPIC_AUTHORIZATION_FAILED") >= 4 && refused.Hits() >= 12
	})
	stop()
	assert.Equal(t, exitOK, <-done)
	assert.Empty(t, out.String(), "stdout is for events")
	for _, topic := range []string{names.Acquired, names.Released, names.Expired, names.Revoked} {
		assert.Equal(t, 1, strings.Count(errOut.String(), "topic="+topic+"): TOPIC_AUTHORIZATION_FAILED"), "once for %s:\n%s", topic, errOut.String())
	}
	lines := strings.Split(strings.TrimSuffix(errOut.String(), "\n"), "\n")
	assert.True(t, strings.HasPrefix(lines[0], "lockctl: watching "), "the header first:\n%s", errOut.String())
	for _, l := range lines[1:] {
		assert.True(t, strings.HasPrefix(l, "lockctl watch: warning: Fetch error ("), "as watch --lock warns: %q", l)
	}
}

// A lifecycle record watch cannot decode is a warning naming it, not an
// event missing in silence.
func TestWatchWarnsOfUndecodableRecords(t *testing.T) {
	names := topics.DefaultNames()
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, names.Acquired, names.Released, names.Expired, names.Revoked))
	require.NoError(t, err)
	defer kafka.Close()
	kc, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...))
	require.NoError(t, err)
	defer kc.Close()
	require.NoError(t, kc.ProduceSync(context.Background(), &kgo.Record{Topic: names.Released, Value: []byte("not an event")}).FirstErr())
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var out, errOut testlog.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"watch", "--from-beginning", "--brokers", kafka.ListenAddrs()[0]}, &out, &errOut)
	}()
	warning := "lockctl watch: warning: skipped the record of " + names.Released + " at partition 0, offset 0: "
	eventually(t, "a warning", func() bool { return strings.Contains(errOut.String(), warning) })
	stop()
	assert.Equal(t, exitOK, <-done)
	assert.Empty(t, out.String(), "stdout is for events")
}

// watch --lock warns on stderr, once, when Kafka keeps refusing its
// fetches after the setup (TOPIC_AUTHORIZATION_FAILED, as without the Read
// ACL) past client.OnFetchError's grace, instead of silence that looks
// like a lock that does not change, after its header and in the lifecycle
// watch's format; it says when it reads again (two fetches in a row
// answered, no new record needed), and stdout keeps the revisions alone,
// with --json too. Both run at once: each waits out the 5 s grace.
func TestWatchLockWarnsOfKafkaErrors(t *testing.T) {
	state := topics.DefaultNames().State
	for _, asJSON := range []bool{false, true} {
		t.Run(fmt.Sprint("json=", asJSON), func(t *testing.T) {
			t.Parallel()
			kafka, produce := kafkatest.StateTopic(t, 1, kafkatest.StateRecord(t, "job", 1))
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			var out, errOut testlog.Buffer
			done := make(chan int, 1)
			args := []string{"watch", "--lock", "job", "--brokers", kafka.ListenAddrs()[0]}
			if asJSON {
				args = append(args, "--json")
			}
			go func() { done <- run(ctx, args, &out, &errOut) }()
			eventually(t, "the lock as it is", func() bool { return strings.Count(out.String(), "\n") == 1 })
			refused := kafka.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Err: kerr.TopicAuthorizationFailed, Count: -1})
			warning := "lockctl watch: warning: forbidden: reading partition 0 of \"" + state + "\": TOPIC_AUTHORIZATION_FAILED"
			eventually(t, "a warning", func() bool { return strings.Contains(errOut.String(), warning) })
			hits := refused.Hits()
			eventually(t, "fetches refused again after it", func() bool { return refused.Hits() >= hits+3 })
			refused.Remove()
			again := "lockctl watch: reading " + state + " again\n"
			eventually(t, "reading again", func() bool { return strings.Contains(errOut.String(), again) })
			assert.Equal(t, 1, strings.Count(out.String(), "\n"), "no record read: reading again without one")
			produce(kafkatest.StateRecord(t, "job", 2))
			eventually(t, "the revisions", func() bool { return strings.Count(out.String(), "\n") == 2 })
			stop()
			assert.Equal(t, exitOK, <-done)
			lines := strings.SplitAfter(errOut.String(), "\n")
			if !asJSON {
				require.NotEmpty(t, lines)
				assert.Equal(t, "lockctl: watching job on "+state+" (Ctrl-C to stop)\n", lines[0], "the header first")
				lines = lines[1:]
			}
			require.Len(t, lines, 3, "one warning, then reading again:\n%s", errOut.String())
			assert.True(t, strings.HasPrefix(lines[0], warning), lines[0])
			assert.Equal(t, again, lines[1])
			assert.Empty(t, lines[2])
			if asJSON {
				assert.Contains(t, out.String(), `"revision":1`)
				assert.Contains(t, out.String(), `"revision":2`)
			} else {
				assert.Contains(t, out.String(), "job rev=1 released")
				assert.Contains(t, out.String(), "job rev=2 released")
			}
		})
	}
}

// watch --lock prints a lock that has no state yet as the lock state topic
// would hold a free lock: with --json its record, not a blank one, but
// without changed_at (nothing changed the lock, and the zero time would
// read as year 1); as a line, one without a time.
func TestWatchLockOfALockWithoutState(t *testing.T) {
	for _, tc := range []struct{ json, want string }{
		{"--json", fmt.Sprintf(`{"v":%d,"namespace":"ns","lock_name":"job","revision":0,"status":"free","limit":1,`+
			`"holder_count":0,"holders":[],"waiter_count":0,"acquisition_count":0,"operation":""}`, topics.Version)},
		{"--json=false", "ns/job rev=0 free"},
	} {
		t.Run(tc.json, func(t *testing.T) {
			kafka := stateTopic(t)
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			var out, errOut testlog.Buffer
			done := make(chan int, 1)
			go func() {
				done <- run(ctx, []string{"watch", "--lock", "job", "--namespace", "ns", tc.json, "--brokers", kafka.ListenAddrs()[0]}, &out, &errOut)
			}()
			eventually(t, "the lock as it is", func() bool { return strings.Contains(out.String(), "\n") })
			stop()
			assert.Equal(t, exitOK, <-done, errOut.String())
			require.Equal(t, tc.want+"\n", out.String())
		})
	}
}

func fmtSscanf(s, format string, v *int64) (int, error) { return fmt.Sscanf(s, format, v) }
func itoa(v int64) string                               { return strconv.FormatInt(v, 10) }

// Read locks and semaphores from the command line: --shared holders share,
// a writer is refused beside them; --limit makes a semaphore; both together
// is a usage error before anything is sent.
func TestSharedAndLimitFlags(t *testing.T) {
	const rw, sem = "ctl-rw", "ctl-sem"
	for _, owner := range []string{"r1", "r2"} {
		r := lockctl(t, "acquire", "--lock", rw, "--owner", owner, "--shared")
		require.Equal(t, exitOK, r.code, r.stderr)
	}
	r := lockctl(t, "acquire", "--lock", rw, "--owner", "w")
	assert.Equal(t, exitRefused, r.code)
	assert.Contains(t, r.stderr, "LOCK_HELD")
	r = lockctl(t, "query", "--lock", rw)
	assert.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "mode=shared holders=2\n  r1 shared token=")
	assert.Contains(t, r.stdout, "\n  r2 shared token=")

	for _, owner := range []string{"s1", "s2"} {
		r := lockctl(t, "acquire", "--lock", sem, "--owner", owner, "--limit", "2")
		require.Equal(t, exitOK, r.code, r.stderr)
	}
	r = lockctl(t, "acquire", "--lock", sem, "--owner", "s3", "--limit", "2")
	assert.Equal(t, exitRefused, r.code)
	r = lockctl(t, "acquire", "--lock", sem, "--owner", "s3", "--limit", "5")
	assert.Equal(t, exitRefused, r.code)
	assert.Contains(t, r.stderr, "LIMIT_MISMATCH")

	r = lockctl(t, "acquire", "--lock", "ctl-both", "--shared", "--limit", "2")
	assert.Equal(t, exitUsage, r.code, r.stderr)
}

func TestLockDelayMaxHoldAndRevoke(t *testing.T) {
	const lock = "ctl-revoke"
	r := lockctl(t, "acquire", "--lock", lock, "--owner", "a", "--lease", "30s", "--lock-delay", "60", "--max-hold", "40s")
	require.Equal(t, exitOK, r.code, r.stderr)
	r = lockctl(t, "extend", "--lock", lock, "--owner", "a", "--by", "20s")
	assert.Equal(t, exitRefused, r.code)
	assert.Contains(t, r.stderr, "MAX_HOLD_EXCEEDED")
	r = lockctl(t, "extend", "--lock", lock, "--owner", "a", "--by", "10s")
	assert.Equal(t, exitOK, r.code, "up to the cap: %s", r.stderr)

	r = lockctl(t, "revoke", "--lock", lock)
	assert.Equal(t, exitUsage, r.code, "a reason is required")
	r = lockctl(t, "revoke", "--lock", lock, "--reason", "stuck batch")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "revoked 1 lease(s) of "+lock+": last "+lock+" revoked owner=a")
	r = lockctl(t, "acquire", "--lock", lock, "--owner", "b")
	assert.Equal(t, exitRefused, r.code, "the revoked lease's lock-delay holds the lock")
	assert.Contains(t, r.stderr, "lock-delay")
	r = lockctl(t, "revoke", "--lock", lock, "--reason", "again")
	assert.Equal(t, exitRefused, r.code)
	assert.Contains(t, r.stderr, "NOT_HELD")

	r = lockctl(t, "acquire", "--lock", "ctl-delay-bound", "--lock-delay", "61")
	assert.Equal(t, exitUsage, r.code, r.stderr)
	assert.Contains(t, r.stderr, "--lock-delay 61: lock_delay 61 is outside 0..60 seconds")
}

// The release command acquire prints runs as printed, in a shell, with the
// brokers, namespace and requester acquire was given: here the brokers
// come from --brokers alone.
func TestAcquirePrintsARunnableRelease(t *testing.T) {
	bin := buildLockctl(t)
	t.Setenv("KAFKA_BOOTSTRAP_SERVERS", "")
	r := lockctl(t, "acquire", "--namespace", "billing", "--requester", "ctl-hint", "--lock", "ctl-hint", "--owner", "carol")
	require.Equal(t, exitOK, r.code, r.stderr)
	_, hint, ok := strings.Cut(r.stdout, "release with: ")
	require.True(t, ok, r.stdout)
	sh := exec.Command("sh", "-c", hint)
	sh.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := sh.CombinedOutput()
	require.NoError(t, err, "%s: %s", hint, out)
	assert.Contains(t, string(out), "released billing/ctl-hint")
}

// handleSignals has this process handle sigs until the test ends, so that
// the lockctl it starts gets their default action. Under nohup this
// process ignores SIGHUP (SIGINT in a background job of a shell without
// job control) and its children would too, lockctl keeping it ignored as
// it should; a signal this process handles is back to its default in a
// child it starts. Not only when signal.Ignored says so: Stop ignores it
// again, and Ignored would not say so a second time (-count=2).
func handleSignals(t *testing.T, sigs ...os.Signal) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, sigs...)
	t.Cleanup(func() { signal.Stop(c) })
}

// startRun starts the lockctl binary's run of script (sh -c) under lock as
// owner, with a file for its pid as $1 and args after it, and returns once
// the command wrote its pid there and lockctl holds the lock. lockctl and
// the command are killed when the test ends, should they outlive it.
func startRun(t *testing.T, lock, owner, script string, args ...string) (cmd *exec.Cmd, stderr *testlog.Buffer, pid int) {
	t.Helper()
	bin := buildLockctl(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	stderr = &testlog.Buffer{}
	cmd = exec.Command(bin, append([]string{"run", "--brokers", env.Brokers[0], "--lock", lock, "--owner", owner, "--lease", "60", "--",
		"sh", "-c", script, "sh", pidFile}, args...)...)
	cmd.Stderr = stderr
	cmd.WaitDelay = time.Second // should the command outlive lockctl, holding its stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	pid = readPid(t, "the command", pidFile)
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	eventually(t, "run to hold the lock", func() bool { return strings.Contains(stderr.String(), "holding") })
	return cmd, stderr, pid
}

// A hang-up (the terminal or the ssh session gone) stops the command and
// releases the lock, as SIGINT and SIGTERM do, rather than killing lockctl
// and leaving the lock to its lease.
func TestRunReleasesOnHangUp(t *testing.T) {
	const lock = "ctl-run-hup"
	handleSignals(t, syscall.SIGHUP)
	cmd, stderr, pid := startRun(t, lock, "hup", `echo $$ > "$1"; exec sleep 60`)
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	err := cmd.Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, stderr.String())
	assert.Equal(t, 128+int(syscall.SIGTERM), exit.ExitCode(), "the command's code: it was sent SIGTERM")
	eventually(t, "the command to be gone", func() bool { return gone(pid) })
	r := lockctl(t, "query", "--lock", lock)
	assert.Contains(t, r.stdout, lock+" released", "released, not left to its lease")
}

// Ctrl-\ at the terminal reaches the command and lockctl alike: lockctl
// stays, passes the command's code on once it has exited, and releases the
// lock, rather than die holding it while the command runs on.
func TestRunOnATerminalOutlivesCtrlBackslash(t *testing.T) {
	const lock = "ctl-run-tty-quit"
	bin := buildLockctl(t)
	user, tty, out := openPTY(t)
	// bash with job control runs lockctl as the terminal's foreground job.
	script := `set -m
ulimit -c 0
"$0" run --brokers "$1" --lock "$2" -- sh -c 'echo ready; exec sleep 60'
echo "status $?"`
	shell := startJob(t, script, tty, out, bin, env.Brokers[0], lock)
	eventually(t, "the command to start", func() bool { return commandSaid(out.String(), "ready") })
	_, err := user.Write([]byte{0x1c}) // Ctrl-\
	require.NoError(t, err)
	eventually(t, "lockctl to end with the command's code, 128+SIGQUIT", func() bool { return strings.Contains(out.String(), "status 131") })
	assert.Contains(t, out.String(), "lockctl: SIGQUIT: the lock is released once sh has exited")
	require.NoError(t, shell.Wait())
	r := lockctl(t, "query", "--lock", lock)
	assert.Contains(t, r.stdout, lock+" released")
}

// Without a controlling terminal (cron, systemd, CI), where the command has
// a process group of its own, a SIGQUIT to lockctl is passed on to that
// group, as Ctrl-\ on a terminal reaches the job: lockctl stays, passes the
// command's code on once it has exited, and releases the lock, rather than
// die holding it while the command runs on.
func TestRunWithoutATerminalPassesSIGQUITOn(t *testing.T) {
	bin := buildLockctl(t)
	for _, tc := range []struct {
		name, lock string
		// The command: it writes its pid (its group's) to $1 and says
		// "ready" once it is in the loop SIGQUIT should break.
		script string
		code   int
		stdout []string // what shows the command got SIGQUIT
	}{{
		// A child of the command, which it waits for, traps SIGQUIT as
		// the command does: only a signal to the group reaches both.
		name: "trapped", lock: "ctl-run-quit-trapped",
		script: `echo $$ > "$1"; ulimit -c 0; trap 'echo "parent: QUIT"; exit 7' QUIT; sh -c "$2"`,
		code:   7, stdout: []string{"child: QUIT", "parent: QUIT"},
	}, {
		name: "fatal", lock: "ctl-run-quit-fatal",
		script: `echo $$ > "$1"; ulimit -c 0; echo ready; exec sleep 60`,
		code:   128 + int(syscall.SIGQUIT),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			var stdout, stderr testlog.Buffer
			cmd := exec.Command(bin, "run", "--brokers", env.Brokers[0], "--lock", tc.lock, "--owner", "quit", "--lease", "60", "--",
				"sh", "-c", tc.script, "sh", pidFile, `trap 'echo "child: QUIT"; exit 5' QUIT; echo ready; while :; do sleep 0.1; done`)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			cmd.WaitDelay = time.Second                          // should the command outlive lockctl, holding its pipes
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no controlling terminal
			require.NoError(t, cmd.Start())
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			defer func() { _ = cmd.Process.Kill(); <-exited }()
			pid := readPid(t, "the command", pidFile)
			defer syscall.Kill(-pid, syscall.SIGKILL) // should its group survive
			eventually(t, "the command to be ready", func() bool { return strings.Contains(stdout.String(), "ready") })
			require.NoError(t, cmd.Process.Signal(syscall.SIGQUIT))
			var err error
			select {
			case err = <-exited:
				exited <- err // for the deferred wait
			case <-time.After(20 * time.Second):
				t.Fatalf("lockctl still runs after SIGQUIT; stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			}
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, stderr.String())
			assert.Equal(t, tc.code, exit.ExitCode(), "the command's code; stderr:\n%s", stderr.String())
			assert.Contains(t, stderr.String(), "lockctl: SIGQUIT: passed on to sh's process group; the lock is released once sh has exited\n")
			for _, s := range tc.stdout {
				assert.Contains(t, stdout.String(), s)
			}
			eventually(t, "the command's group to be gone", func() bool { return syscall.Kill(-pid, 0) != nil })
			r := lockctl(t, "query", "--lock", tc.lock)
			assert.Contains(t, r.stdout, tc.lock+" released", "released, not left to its lease")
		})
	}
}

// SIGQUIT while acquire, run or elect waits in the lock's queue ends the
// wait as SIGINT does: lockctl withdraws its acquire and exits 1, rather
// than die of Go's default action (exit 2) and leave the acquire queued,
// to be granted to nobody alive once the holder releases.
func TestSIGQUITWhileWaitingWithdraws(t *testing.T) {
	bin := buildLockctl(t)
	for _, args := range [][]string{
		{"acquire", "--lock", "ctl-quit-acquire", "--wait", "60"},
		{"run", "--lock", "ctl-quit-run", "--wait", "60", "--", "true"},
		{"elect", "--name", "ctl-quit-elect", "--", "true"},
	} {
		lock := args[2]
		t.Run(args[0], func(t *testing.T) {
			r := lockctl(t, "acquire", "--lock", lock, "--owner", "holder", "--lease", "60")
			require.Equal(t, exitOK, r.code, r.stderr)
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			revisions, _, waitRevisions := start(ctx, "watch", "--lock", lock)
			var stderr testlog.Buffer
			// A generated owner (quitter-<random>): one given --owner is
			// withdrawn only once lockctl has read its lock.queued, which
			// may come after the revision this test waits for.
			cmd := exec.Command(bin, append([]string{args[0], "--brokers", env.Brokers[0], "--requester", "quitter"}, args[1:]...)...)
			cmd.Stderr = &stderr
			require.NoError(t, cmd.Start())
			defer func() { _ = cmd.Process.Kill() }()
			eventually(t, "the acquire to queue", func() bool { return strings.Contains(revisions.String(), " waiters=1\n") })
			require.NoError(t, cmd.Process.Signal(syscall.SIGQUIT))
			err := cmd.Wait()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, stderr.String())
			assert.Equal(t, exitRefused, exit.ExitCode(), stderr.String())

			r = lockctl(t, "release", "--lock", lock, "--owner", "holder")
			require.Equal(t, exitOK, r.code, r.stderr)
			eventually(t, "the release", func() bool { return strings.Contains(revisions.String(), " by=release") })
			stop()
			res := waitRevisions()
			assert.NotContains(t, res.stdout, "quitter", "the acquire was withdrawn, never granted")
		})
	}
}

// What the command started gets --grace too, even when the command itself
// (a shell without a trap, here) ends at the SIGTERM at once: it is not
// SIGKILLed the moment its parent is gone, but may finish its cleanup.
// (The child writes elsewhere than lockctl's output, which lockctl run in a
// test reads through a pipe it waits for: as where that output is a file or
// a terminal.)
func TestRunGivesWhatTheCommandStartedItsGrace(t *testing.T) {
	const lock = "ctl-run-grace-children"
	dir := t.TempDir()
	pidFile, cleaned := filepath.Join(dir, "pid"), filepath.Join(dir, "cleaned")
	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	_, _, wait := start(ctx, "run", "--lock", lock, "--grace", "20s", "--", "sh", "-c",
		`sh -c 'trap "sleep 0.5; echo cleaned > \"\$2\"; exit 0" TERM; echo $$ > "$1"; while :; do sleep 0.1; done' sh "$1" "$2" >/dev/null 2>&1 & wait`,
		"sh", pidFile, cleaned)
	pid := readPid(t, "the command's child", pidFile)
	defer syscall.Kill(pid, syscall.SIGKILL) // should it survive
	interrupt()                              // as SIGINT to lockctl
	r := wait()
	assert.Equal(t, 128+int(syscall.SIGTERM), r.code, "the command's code: the SIGTERM ended it; %s", r.stderr)
	b, err := os.ReadFile(cleaned)
	require.NoError(t, err, "the command's child was killed before its cleanup ended: %s", r.stderr)
	assert.Equal(t, "cleaned\n", string(b))
	assert.True(t, gone(pid))
	r = lockctl(t, "query", "--lock", lock)
	assert.Contains(t, r.stdout, lock+" released")
}

// A second hang-up or SIGTERM while lockctl stops its command changes
// nothing (an ssh session that drops sends the foreground job two
// SIGHUPs): lockctl waits for the command and releases the lock, rather
// than die holding it.
func TestRunOutlivesASecondHangUp(t *testing.T) {
	const lock = "ctl-run-hup-twice"
	handleSignals(t, syscall.SIGHUP)
	dir := t.TempDir()
	stopping, goOn := filepath.Join(dir, "stopping"), filepath.Join(dir, "go-on")
	cmd, stderr, _ := startRun(t, lock, "hup-twice",
		`trap 'echo > "$2"; while [ ! -e "$3" ]; do sleep 0.05; done; exit 0' TERM; echo $$ > "$1"; while :; do sleep 0.1; done`,
		stopping, goOn)
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	eventually(t, "the command to be stopping", func() bool { _, err := os.Stat(stopping); return err == nil })
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, os.WriteFile(goOn, nil, 0o600))
	require.NoError(t, cmd.Wait(), "lockctl passes on the command's 0: %s", stderr.String())
	assert.Contains(t, stderr.String(), "\nlockctl: hangup signal received; stopped sh (exit code 0); released "+lock+"; exit code 0\n")
	r := lockctl(t, "query", "--lock", lock)
	assert.Contains(t, r.stdout, lock+" released", "released, not left to its lease")
}

// A write to a closed stderr (lockctl run ... 2>&1 | head -1, a log
// collector gone) does not kill lockctl, which would leave the lock to its
// lease and what the command started to run on: run and elect go on, pass
// the command's code on and release. The command does not inherit SIGPIPE
// ignored either: its own writes to a closed pipe end it as they would
// without lockctl.
func TestRunAndElectOutliveAClosedStderr(t *testing.T) {
	bin := buildLockctl(t)
	for _, args := range [][]string{
		{"run", "--lock", "ctl-run-epipe", "--lease", "60"},
		{"elect", "--name", "ctl-elect-epipe", "--lease", "60"},
	} {
		lock := args[2]
		t.Run(args[0], func(t *testing.T) {
			r, w, err := os.Pipe()
			require.NoError(t, err)
			require.NoError(t, r.Close()) // every write to w now fails with EPIPE
			var stdout testlog.Buffer
			cmd := exec.Command(bin, append(append([]string{args[0], "--brokers", env.Brokers[0]}, args[1:]...),
				"--", "sh", "-c", `grep '^SigIgn:' /proc/self/status; exit 7`)...)
			cmd.Stdout, cmd.Stderr = &stdout, w
			require.NoError(t, cmd.Start())
			require.NoError(t, w.Close())
			defer func() { _ = cmd.Process.Kill() }()
			err = cmd.Wait()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit)
			require.True(t, exit.Exited(), "lockctl ended by %v, not with an exit code", exit)
			assert.Equal(t, 7, exit.ExitCode(), "the command's code")
			var ignored uint64
			_, err = fmt.Sscanf(stdout.String(), "SigIgn:\t%x\n", &ignored)
			require.NoError(t, err, "the command's stdout: %q", stdout.String())
			assert.Zero(t, ignored&(1<<(syscall.SIGPIPE-1)), "the command starts with SIGPIPE ignored")
			q := lockctl(t, "query", "--lock", lock)
			assert.Contains(t, q.stdout, lock+" released", "released, not left to its lease")
		})
	}
}

// The worker's own settings, bad or naming files not mounted where lockctl
// runs, exported in a shell shared with lockworker (the example Secret's
// INSPECT_TOKEN placeholder, say), are not lockctl's concern.
func TestWorkerSettingsIgnored(t *testing.T) {
	t.Setenv("KAFKA_BOOTSTRAP_SERVERS", env.Brokers[0])
	for _, kv := range [][2]string{
		{"DEFAULT_LEASE_DURATION", "abc"},
		{"INSPECT_TOKEN", "CHANGE-ME"},
		{"HTTP_ADDR", "bogus"},
		{"KAFKA_SESSION_TIMEOUT", "soon"},
		{"KAFKA_TOPIC_REPLICATION_FACTOR", "0"},
		{"AUTH_REQUIRED", "true"},
		{"DATABASE_URL_FILE", "/nonexistent/DATABASE_URL_FILE"},
		{"POSTGRES_PASSWORD_FILE", "/nonexistent/POSTGRES_PASSWORD_FILE"},
		{"INSPECT_TOKEN_FILE", "/nonexistent/INSPECT_TOKEN_FILE"},
	} {
		t.Run(kv[0], func(t *testing.T) {
			t.Setenv(kv[0], kv[1])
			var out, errOut testlog.Buffer
			code := run(context.Background(), []string{"query", "--lock", "ctl-worker-settings"}, &out, &errOut)
			require.Equal(t, exitOK, code, errOut.String())
			assert.Equal(t, "ctl-worker-settings free\n", out.String())
		})
	}
}

// TestCleanupSaysWhenMoreRemain: a cleanup stopped at the worker's bound
// (handlers.MaxCleanup a command) says so, and the next one takes the rest.
func TestCleanupSaysWhenMoreRemain(t *testing.T) {
	const ns = "ctl-cleanup-more"
	_, err := env.Store.Pool.Exec(context.Background(), `INSERT INTO locks (namespace, lock_name, status, acquisition_count, source_partition, updated_at)
		SELECT $1, 'c' || i, 'released', 1, 0, now() - interval '2 hours' FROM generate_series(1, $2::int) i`, ns, handlers.MaxCleanup+1)
	require.NoError(t, err)
	r := lockctl(t, "cleanup", "--namespace", ns, "--max-age", "1h")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.True(t, strings.HasPrefix(r.stdout, fmt.Sprintf("cleaned %d locks: ", handlers.MaxCleanup)), r.stdout[:min(len(r.stdout), 80)])
	assert.True(t, strings.HasSuffix(r.stdout, " (more remain: run it again)\n"))
	r = lockctl(t, "cleanup", "--namespace", ns, "--max-age", "1h")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Regexp(t, `^cleaned 1 locks: ctl-cleanup-more/c\d+\n$`, r.stdout, "the rest, without more")
}

// An answer lockctl cannot read (damaged, or of a later version) is as no
// answer: exit 3, not 1, which scripts read as "refused, lock busy".
func TestExitCodeOfAnUnreadableAnswer(t *testing.T) {
	require.Equal(t, exitUnreachable, exitCode(fmt.Errorf("acquiring lock %q: %w", "x", client.ErrUndecodableReply)))
}
