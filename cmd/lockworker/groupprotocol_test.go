package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/httpapi"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/topics"
)

// replicaEnv tells a copy of this test binary to be the replica that
// TestGroupProtocolConsumer SIGKILLs: "brokers database-url".
const replicaEnv = "LOCKWORKER_TEST_CONSUMER_REPLICA"

// consumerProtocol configures a replica for the consumer (KIP-848) group
// protocol on brokers, with a 3 s session.
func consumerProtocol(name string, brokers []string) func(*config.Config) {
	return func(c *config.Config) {
		c.Kafka.BootstrapServers = brokers
		c.Kafka.GroupProtocol = config.GroupProtocolConsumer
		c.Kafka.SessionTimeout, c.Kafka.HeartbeatInterval = 3*time.Second, 100*time.Millisecond
		c.InstanceID = name
	}
}

// TestGroupProtocolConsumer: with KAFKA_GROUP_PROTOCOL=consumer the
// replicas share the partitions; one stopped cleanly hands its partitions
// over at once; one SIGKILLed hands them over within the session timeout
// lockworker set on the group; every command is answered, those sent while
// the killed replica's partitions had no owner included.
func TestGroupProtocolConsumer(t *testing.T) {
	if os.Getenv(replicaEnv) != "" {
		t.Skip("the replica process runs TestGroupProtocolConsumerReplica only")
	}
	names := topics.DefaultNames()
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(16, names.Commands),
		kfake.SeedTopics(1, names.Acquired, names.Released, names.Expired, names.Revoked, names.DeadLetter),
		// kfake takes a member's heartbeat interval from this broker
		// config only; Apache Kafka takes the group's, which lockworker sets.
		kfake.BrokerConfigs(map[string]string{"group.consumer.heartbeat.interval.ms": "100"}))
	require.NoError(t, err)
	t.Cleanup(kafka.Close)
	brokers := kafka.ListenAddrs()
	url := testdb.NewSchema(t).URL

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	killed := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestGroupProtocolConsumerReplica$", "-test.v")
	killed.Env = append(os.Environ(), replicaEnv+"="+strings.Join(brokers, ",")+" "+url)
	out, err := killed.StdoutPipe()
	require.NoError(t, err)
	killed.Stderr = os.Stderr
	require.NoError(t, killed.Start())
	defer killed.Process.Kill()
	lines := bufio.NewScanner(out)
	var addr string
	for addr == "" && lines.Scan() {
		fmt.Sscanf(lines.Text(), "REPLICA READY %s", &addr)
	}
	require.NotEmpty(t, addr, "the replica process never said it runs")
	go func() {
		for lines.Scan() { // keep the pipe drained
		}
	}()
	a := &Main{HTTPAddr: addr}
	b, _ := startWith(t, url, consumerProtocol("b", brokers))
	c, stopC := startWith(t, url, consumerProtocol("c", brokers))

	owned := func(ms ...*Main) [][]int32 {
		var all [][]int32
		for _, m := range ms {
			var h httpapi.Health
			get(t, m, "/health", &h)
			all = append(all, h.Partitions)
		}
		return all
	}
	// shared says whether ms own all 16 partitions between them, each some.
	shared := func(ms ...*Main) bool {
		var union []int32
		for _, ps := range owned(ms...) {
			if len(ps) == 0 {
				return false
			}
			union = append(union, ps...)
		}
		slices.Sort(union)
		return len(slices.Compact(union)) == 16 && len(union) == 16
	}
	require.Eventually(t, func() bool { return shared(a, b, c) }, 30*time.Second, 50*time.Millisecond,
		"the three replicas share the 16 partitions: %v", owned(a, b, c))

	cl := newClient(t, brokers[0], "locks.replies.kip848")
	locks := make([]string, 48) // over most of the 16 partitions
	for i := range locks {
		locks[i] = fmt.Sprint("kip848-", i)
	}
	// round sends op for every lock and waits for all the answers, which
	// come in any order (the reply topic has several partitions).
	round := func(op, typ string, n int) {
		want := map[string]bool{}
		for _, lock := range locks {
			id := fmt.Sprint(lock, "-", op, n)
			want[id] = true
			cl.send(topics.Command{RequestID: id, Operation: op, LockName: lock, OwnerID: "o", LeaseDuration: 60})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for len(want) > 0 {
			fs := cl.cl.PollFetches(ctx)
			require.NoError(t, ctx.Err(), "waiting for %d answers to %s, %v", len(want), op, want)
			fs.EachRecord(func(r *kgo.Record) {
				ev, err := topics.DecodeEvent(r.Value)
				if err == nil && want[ev.RequestID] {
					require.Equal(t, typ, ev.Type, "%s: %s", ev.RequestID, ev.ErrorCode)
					delete(want, ev.RequestID)
				}
			})
		}
	}
	round(topics.OpAcquire, topics.TypeAcquired, 1)

	stopped := time.Now()
	stopC()
	require.Eventually(t, func() bool { return shared(a, b) }, 10*time.Second, 20*time.Millisecond,
		"a and b take c's partitions: %v", owned(a, b))
	t.Logf("c's partitions moved %s after its stop began", time.Since(stopped).Round(time.Millisecond))
	round(topics.OpRelease, topics.TypeReleased, 1)

	require.NoError(t, killed.Process.Kill()) // SIGKILL
	_ = killed.Wait()
	died := time.Now()
	round(topics.OpAcquire, topics.TypeAcquired, 2) // a's share waits for b
	require.Eventually(t, func() bool { return len(owned(b)[0]) == 16 }, 10*time.Second, 20*time.Millisecond)
	took := time.Since(died)
	t.Logf("b answered everything %s after a was killed (session timeout 3 s)", took.Round(time.Millisecond))
	// The session timeout lockworker set on the group, not the broker's
	// default (45 s), and no wait for b's fetch in flight (fetchMaxWait).
	require.Less(t, took, 3*time.Second+2*time.Second, "a's partitions are served again soon after the group's session timeout")
	round(topics.OpRelease, topics.TypeReleased, 2)
}

// TestGroupProtocolConsumerReplica is the replica TestGroupProtocolConsumer
// kills: it runs the service, says where its HTTP server listens and waits.
func TestGroupProtocolConsumerReplica(t *testing.T) {
	env := os.Getenv(replicaEnv)
	if env == "" {
		t.Skip("run by TestGroupProtocolConsumer")
	}
	brokers, url, _ := strings.Cut(env, " ")
	m, _ := startWith(t, url, consumerProtocol("a", strings.Split(brokers, ",")))
	fmt.Printf("REPLICA READY %s\n", m.HTTPAddr)
	select {}
}
