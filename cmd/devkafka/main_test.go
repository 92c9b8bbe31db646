package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/embedded"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/worker"
)

// devkafka makes the topics a worker would, under the names lockworker
// reads from the environment: the lock state topic compacted.
func TestTopicsAreTheWorkers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := map[string]string{
		"KAFKA_TOPIC_LOCK_STATE": "custom.state", "COMMANDS_PARTITIONS": "4",
		"LOG_LEVEL": "nonsense", // lockworker's alone: not devkafka's business
	}
	tc, err := topicsFromEnv(func(k string) string { return env[k] })
	require.NoError(t, err)
	require.EqualValues(t, 4, tc.CommandsPartitions)
	names := tc.Names()
	b, err := embedded.Start(ctx, brokerOptions("127.0.0.1:0", t.TempDir(), names, 3, time.Second, zerolog.Nop()))
	require.NoError(t, err)
	t.Cleanup(b.Close)

	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	listed, err := adm.ListTopics(ctx)
	require.NoError(t, err)
	want := map[string]int{}
	for _, s := range worker.Topics(names, 3) {
		want[s.Name] = int(s.Partitions)
	}
	have := map[string]int{}
	for name, d := range listed {
		have[name] = len(d.Partitions)
	}
	require.Equal(t, want, have)
	require.Equal(t, 3, have["custom.state"])

	configs := kafkatest.TopicConfigs(t, ctx, adm, "custom.state")
	require.Equal(t, "compact", configs["cleanup.policy"])
	for k, v := range worker.StateTopicConfigs() {
		require.Equal(t, v, configs[k], k)
	}
}

// A topic name lockworker would refuse stops devkafka, naming the variable.
func TestBadTopicName(t *testing.T) {
	_, err := topicsFromEnv(func(k string) string {
		if k == "KAFKA_TOPIC_COMMANDS" {
			return "no spaces"
		}
		return ""
	})
	require.ErrorContains(t, err, "KAFKA_TOPIC_COMMANDS")
}

// TestMain runs devkafka's main instead of the tests in a child started by
// runMain.
func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv("DEVKAFKA_TEST_ARGS"); ok {
		os.Args = append([]string{"devkafka"}, strings.Fields(args)...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runMain runs devkafka with args and the environment env in a child
// process, and returns its exit code and stderr.
func runMain(t *testing.T, args string, env ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, "DEVKAFKA_TEST_ARGS="+args)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	require.NoError(t, ctx.Err(), "devkafka did not exit")
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), stderr.String()
	}
	require.NoError(t, err)
	return 0, stderr.String()
}

// runUntilListening runs devkafka with args in a child process until it
// says it listens, stops it with SIGTERM, and returns its stderr.
func runUntilListening(t *testing.T, args string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "DEVKAFKA_TEST_ARGS="+args)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	listening := false
	for sc := bufio.NewScanner(stdout); !listening && sc.Scan(); {
		listening = strings.HasPrefix(sc.Text(), "devkafka listening on ")
	}
	if !listening {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("devkafka never said it listens; stderr: %s", stderr.String())
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), stderr.String())
	return stderr.String()
}

// devkafka prints its data directory at start: -dir's, kept, or else a new
// temporary one, removed when it stops on a signal.
func TestDataDirectoryIsPrinted(t *testing.T) {
	dir := t.TempDir()
	stderr := runUntilListening(t, "-addr 127.0.0.1:0 -dir "+dir)
	require.Contains(t, stderr, "devkafka: data directory "+dir+" (kept)\n")

	stderr = runUntilListening(t, "-addr 127.0.0.1:0")
	m := regexp.MustCompile(`devkafka: data directory (\S+) \(temporary: `).FindStringSubmatch(stderr)
	require.NotNil(t, m, stderr)
	require.NotEqual(t, dir, m[1])
	require.NoDirExists(t, m[1], "removed at the stop")
}

// -h answers with the usage even where the environment would stop devkafka.
func TestHelpWithABadEnvironment(t *testing.T) {
	code, stderr := runMain(t, "-h", "KAFKA_TOPIC_COMMANDS=no spaces")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "-partitions")
}

// A replication factor set for lockworker's topics on a real cluster (the
// Kubernetes ConfigMap's) does not stop devkafka, one broker.
func TestReplicationFactorIsLockworkers(t *testing.T) {
	_, err := topicsFromEnv(func(k string) string {
		if k == "KAFKA_TOPIC_REPLICATION_FACTOR" {
			return "3"
		}
		return ""
	})
	require.NoError(t, err)
}

// A partition count out of COMMANDS_PARTITIONS' range is refused, not
// truncated (2^32+16 would have been 16), nor allocated by the broker
// until it runs out of memory (TestPartitionCount: run, a count accepted
// by mistake would be allocated).
func TestPartitionsOutOfRange(t *testing.T) {
	for _, n := range []string{"4294967312", "0", "-1"} {
		code, stderr := runMain(t, "-addr 127.0.0.1:0 -partitions "+n)
		require.Equal(t, 2, code, stderr)
		require.Contains(t, stderr, "-partitions "+n+": must be from 1 to 10000")
	}
}

// -partitions wins over COMMANDS_PARTITIONS, which is the default.
func TestPartitionCount(t *testing.T) {
	n, err := partitionCount(0, false, 16)
	require.NoError(t, err)
	require.EqualValues(t, 16, n)
	n, err = partitionCount(10000, true, 16)
	require.NoError(t, err)
	require.EqualValues(t, 10000, n)
	for _, over := range []int64{10001, 2147483647} {
		_, err = partitionCount(over, true, 16)
		require.EqualError(t, err, fmt.Sprintf("-partitions %d: must be from 1 to 10000", over))
	}
}

// A -min-session-timeout out of EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT's range
// is refused: 0 was the broker's default, 6 s, unsaid, and 10m made it
// refuse every group's join.
func TestMinSessionTimeoutOutOfRange(t *testing.T) {
	for _, d := range []string{"0s", "-1s", "99ms", "5m0.001s", "10m"} {
		code, stderr := runMain(t, "-addr 127.0.0.1:0 -min-session-timeout "+d)
		require.Equal(t, 2, code, stderr)
		require.Contains(t, stderr, "must be from 100ms to 5m0s", d)
	}
	require.NoError(t, checkMinSession(100*time.Millisecond))
	require.NoError(t, checkMinSession(5*time.Minute))
}
