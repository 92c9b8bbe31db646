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

	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/httpapi"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/topics"
)

// replicaEnv tells a copy of this test binary to be the replica that
// TestTakeover SIGKILLs: "protocol brokers database-url".
const replicaEnv = "LOCKWORKER_TEST_TAKEOVER_REPLICA"

// takeoverSession is the replicas' session timeout in TestTakeover: Apache
// Kafka's least, and room enough for a clean stop's hand-over on a busy
// machine.
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
// replicas share the partitions; one stopped cleanly hands its partitions
// over at once; one SIGKILLed has its partitions answered again within the
// session timeout (the group's, which lockworker sets under KIP-848) and a
// fraction of a second (fetchMaxWait: the survivor's own partitions are
// idle then; checked with 4 s of room for a busy machine); every command is answered, those sent while the killed
// replica's partitions had no owner included.
func TestTakeover(t *testing.T) {
	if os.Getenv(replicaEnv) != "" {
		t.Skip("the replica process runs TestTakeoverReplica only")
	}
	for _, protocol := range []string{config.GroupProtocolClassic, config.GroupProtocolConsumer} {
		t.Run(protocol, func(t *testing.T) { takeover(t, protocol) })
	}
}

func takeover(t *testing.T, protocol string) {
	brokers := groupCluster(t)
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

	stopped := time.Now()
	stopC()
	require.EventuallyWithT(t, func(ct *assert.CollectT) { shared(ct, a, b) }, 10*time.Second, 20*time.Millisecond,
		"a and b take c's partitions")
	moved := time.Since(stopped)
	t.Logf("c's partitions moved %s after its stop began", moved.Round(time.Millisecond))
	require.Less(t, moved, takeoverSession, "a clean stop hands over without waiting for the session timeout")
	r.round(topics.OpRelease, topics.TypeReleased, 1)

	require.NoError(t, killed.Process.Kill()) // SIGKILL
	_ = killed.Wait()
	died := time.Now()
	r.round(topics.OpAcquire, topics.TypeAcquired, 2) // a's share waits for b
	require.EventuallyWithT(t, func(ct *assert.CollectT) { assert.Len(ct, owned(ct, b)[0], 16) }, 10*time.Second, 20*time.Millisecond)
	took := time.Since(died)
	t.Logf("b answered everything %s after a was killed (session timeout %s)", took.Round(time.Millisecond), takeoverSession)
	// Not the broker's default session (45 s under KIP-848), and no wait
	// for b's fetch in flight (up to 5 s before fetchMaxWait).
	require.Less(t, took, takeoverSession+4*time.Second, "a's partitions are served again soon after the session timeout")
	r.round(topics.OpRelease, topics.TypeReleased, 2)
}

// groupCluster is a kfake broker with a 16-partition commands topic for
// replicas sharing partitions; it returns its addresses.
func groupCluster(t *testing.T) []string {
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
	return kafka.ListenAddrs()
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
