package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/httpapi"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/topics"
)

// replicaEnv tells a copy of this test binary to be the replica that
// TestTakeover SIGKILLs: "protocol brokers database-url".
const replicaEnv = "LOCKWORKER_TEST_TAKEOVER_REPLICA"

// takeoverSession is the replicas' session timeout in TestTakeover: Apache
// Kafka's least, which the SIGKILLed replica's partitions wait for.
const takeoverSession = 6 * time.Second

// replicaOn configures a replica of TestTakeover: the group protocol, the
// brokers, a short session.
func replicaOn(name, protocol string, brokers []string) func(*config.Config) {
	return func(c *config.Config) {
		c.Kafka.BootstrapServers = brokers
		c.Kafka.GroupProtocol = protocol
		c.Kafka.SessionTimeout, c.Kafka.HeartbeatInterval = takeoverSession, 100*time.Millisecond
		c.InstanceID = name
	}
}

// TestTakeover, with each group protocol (KAFKA_GROUP_PROTOCOL): three
// replicas share the partitions; one stopped cleanly leaves the group (the
// broker receives its leave), so its partitions move without waiting for
// its session to time out; one SIGKILLed has its partitions answered again
// after the session timeout (the group's, which lockworker sets under
// KIP-848), not Kafka's default of 45 s; every command is answered, those
// sent while the killed replica's partitions had no owner included. How
// soon a partition moves is lockbench's to measure, not this test's.
func TestTakeover(t *testing.T) {
	if os.Getenv(replicaEnv) != "" {
		t.Skip("the replica process runs TestTakeoverReplica only")
	}
	for _, protocol := range []string{config.GroupProtocolClassic, config.GroupProtocolConsumer} {
		t.Run(protocol, func(t *testing.T) { takeover(t, protocol) })
	}
}

func takeover(t *testing.T, protocol string) {
	kafka := groupKafka(t)
	brokers := kafka.ListenAddrs()
	url := testdb.NewSchema(t).URL

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	killed, addr := reexec(t, ctx, "TestTakeoverReplica", replicaEnv+"="+protocol+" "+strings.Join(brokers, ",")+" "+url, "REPLICA READY ")
	require.NotEmpty(t, addr, "the replica process never said it runs")
	a := &Main{HTTPAddr: addr}
	b, _ := startWith(t, url, replicaOn("b", protocol, brokers))
	c, stopC := startWith(t, url, replicaOn("c", protocol, brokers))
	require.EventuallyWithT(t, func(ct *assert.CollectT) { shared(ct, a, b, c) }, 30*time.Second, 50*time.Millisecond,
		"the three replicas share the 16 partitions")

	r := newRounds(t, brokers[0], "takeover")
	r.round(topics.OpAcquire, topics.TypeAcquired, 1)

	// Nobody else leaves meanwhile: a leave the broker receives now is c's.
	leaves := observeLeaves(kafka)
	stopped := time.Now()
	stopC()
	waitLeave, cancelWait := context.WithTimeout(ctx, 30*time.Second)
	defer cancelWait()
	require.NoError(t, leaves.Wait(waitLeave, 1), "a clean stop leaves the group, not waiting for its session to time out")
	leaves.Remove()
	require.EventuallyWithT(t, func(ct *assert.CollectT) { shared(ct, a, b) }, 10*time.Second, 20*time.Millisecond,
		"a and b take c's partitions")
	t.Logf("c's partitions moved %s after its stop began", time.Since(stopped).Round(time.Millisecond))
	r.round(topics.OpRelease, topics.TypeReleased, 1)

	require.NoError(t, killed.Process.Kill()) // SIGKILL
	_ = killed.Wait()
	died := time.Now()
	r.round(topics.OpAcquire, topics.TypeAcquired, 2) // a's share waits for b
	require.EventuallyWithT(t, func(ct *assert.CollectT) { assert.Len(ct, owned(ct, b)[0], 16) }, 10*time.Second, 20*time.Millisecond)
	took := time.Since(died)
	t.Logf("b answered everything %s after a was killed (session timeout %s)", took.Round(time.Millisecond), takeoverSession)
	// The group's session timeout is lockworker's 6 s, not Kafka's default
	// of 45 s (kgo's, and the broker's under KIP-848), after which alone
	// a's partitions would move: 30 s tells the two apart with room for a
	// loaded machine. It bounds no latency (lockbench measures that).
	require.Less(t, took, 30*time.Second, "a's partitions are served again after lockworker's session timeout, not Kafka's default")
	r.round(topics.OpRelease, topics.TypeReleased, 2)
}

// groupCluster is a kfake broker with a 16-partition commands topic for
// replicas sharing partitions; it returns its addresses.
func groupCluster(t *testing.T) []string {
	t.Helper()
	return groupKafka(t).ListenAddrs()
}

// groupKafka is groupCluster's broker.
func groupKafka(t *testing.T) *kfake.Cluster {
	t.Helper()
	names := topics.DefaultNames()
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(16, names.Commands),
		kfake.SeedTopics(1, names.Acquired, names.Released, names.Expired, names.Revoked, names.DeadLetter),
		kfake.GroupMinSessionTimeout(time.Second),
		// kfake takes a KIP-848 member's heartbeat interval from this
		// broker config only; Apache Kafka takes the group's, which
		// lockworker sets.
		kfake.BrokerConfigs(map[string]string{"group.consumer.heartbeat.interval.ms": "100"}))
	require.NoError(t, err)
	t.Cleanup(kafka.Close)
	return kafka
}

// observeLeaves counts the requests by which a member leaves the group
// for good, as the broker receives them: a LeaveGroup (the classic
// protocol) or a consumer-protocol heartbeat with member epoch -1 (-2 is a
// static member's temporary leave, after which its partitions wait for the
// session timeout).
func observeLeaves(kafka *kfake.Cluster) *kfake.FaultHandle {
	return kafka.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.LeaveGroup, kmsg.ConsumerGroupHeartbeat}, Observe: true, Count: -1,
		When: func(req kmsg.Request) bool {
			switch r := req.(type) {
			case *kmsg.LeaveGroupRequest:
				return true
			case *kmsg.ConsumerGroupHeartbeatRequest:
				return r.MemberEpoch == -1
			}
			return false
		}})
}

// owned is the partitions each of ms owns, from its /health.
func owned(ct *assert.CollectT, ms ...*Main) [][]int32 {
	var all [][]int32
	for _, m := range ms {
		var h httpapi.Health
		get(ct, m, "/health", &h)
		all = append(all, h.Partitions)
	}
	return all
}

// shared checks that ms own all 16 partitions between them, each some.
func shared(ct *assert.CollectT, ms ...*Main) {
	all := owned(ct, ms...)
	var union []int32
	for _, ps := range all {
		assert.NotEmpty(ct, ps, "each owns some: %v", all)
		union = append(union, ps...)
	}
	slices.Sort(union)
	assert.Len(ct, union, 16, "all between them: %v", all)
	assert.Len(ct, slices.Compact(union), 16, "each once: %v", all)
}

// rounds sends one command to each of 48 locks, over most of the 16
// partitions, and waits for their answers.
type rounds struct {
	t     *testing.T
	cl    *client
	locks []string
}

func newRounds(t *testing.T, broker, name string) *rounds {
	r := &rounds{t: t, cl: newClient(t, broker, "locks.replies."+name), locks: make([]string, 48)}
	for i := range r.locks {
		r.locks[i] = fmt.Sprint(name, "-", i)
	}
	return r
}

// round sends op for every lock and waits for all the answers, each of
// type typ, which come in any order (the reply topic has several
// partitions).
func (r *rounds) round(op, typ string, n int) {
	want := map[string]bool{}
	for _, lock := range r.locks {
		id := fmt.Sprint(lock, "-", op, n)
		want[id] = true
		r.cl.send(topics.Command{RequestID: id, Operation: op, LockName: lock, OwnerID: "o", LeaseDuration: 60})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for len(want) > 0 {
		fs := r.cl.cl.PollFetches(ctx)
		require.NoError(r.t, ctx.Err(), "waiting for %d answers to %s, %v", len(want), op, want)
		fs.EachRecord(func(rec *kgo.Record) {
			ev, err := topics.DecodeEvent(rec.Value)
			if err == nil && want[ev.RequestID] {
				require.Equal(r.t, typ, ev.Type, "%s: %s", ev.RequestID, ev.ErrorCode)
				delete(want, ev.RequestID)
			}
		})
	}
}

// TestTakeoverReplica is the replica TestTakeover kills: it runs the
// service, says where its HTTP server listens and waits.
func TestTakeoverReplica(t *testing.T) {
	env := strings.Fields(os.Getenv(replicaEnv))
	if len(env) != 3 {
		t.Skip("run by TestTakeover")
	}
	protocol, brokers, url := env[0], env[1], env[2]
	m, _ := startWith(t, url, replicaOn("a", protocol, strings.Split(brokers, ",")))
	fmt.Printf("REPLICA READY %s\n", m.HTTPAddr)
	select {}
}
