package worker_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

// restartCount is a worker.Metrics counting partition restarts.
type restartCount struct{ n atomic.Int32 }

func (*restartCount) Batch(int, time.Duration)              {}
func (*restartCount) Command(string, string, time.Duration) {}
func (*restartCount) Events(string, []topics.Event)         {}
func (*restartCount) DeadLettered(string)                   {}
func (*restartCount) DataLoss()                             {}
func (m *restartCount) PartitionRestarted()                 { m.n.Add(1) }

// A replica that stalls past its session timeout with records polled (here
// its PostgreSQL hangs, and the coordinator does not see its heartbeats,
// which its client retries without ending its session) loses its
// partitions to the other replica, which applies them from the stored
// offset. Woken, the stale replica's batch finds the offset moved and
// restarts the partition (it still thinks it owns it), until its client
// learns it was dropped and joins again. Meanwhile and afterwards the new
// owner answers every command, and each is applied once.
func TestStaleReplicaWakingAfterTakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("seconds of group sessions")
	}
	e := e2e.New(t)
	ctx := context.Background()
	const session = time.Second
	reply := "locks.replies.stale"
	watch := e.Watch(reply)

	// wopts are the worker's own, not its publisher's.
	start := func(name string, st *store.Store, m worker.Metrics, wopts ...kgo.Opt) *worker.Worker {
		kopts := []kgo.Opt{kgo.SeedBrokers(e.Brokers...)}
		pub, pubClient, err := outbox.NewKafkaPublisher(kopts, 5*time.Second, e.Names.ReplyPrefix, true, -1)
		require.NoError(t, err)
		t.Cleanup(pubClient.Close)
		relay, err := outbox.New(outbox.Config{Publisher: pub, Pool: st.Pool})
		require.NoError(t, err)
		w, err := worker.New(worker.Config{KafkaOpts: slices.Concat(kopts, wopts), Group: e.Group, Names: e.Names,
			Store: st, Relay: relay, Instance: name, SessionTimeout: session, Metrics: m})
		require.NoError(t, err)
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = w.Run(rctx) }()
		t.Cleanup(func() { cancel(); <-done; w.Close() })
		require.Eventually(t, func() bool { return len(w.Partitions()) > 0 }, 30*time.Second, 10*time.Millisecond, "%s consuming", name)
		return w
	}

	// The stale one: its PostgreSQL behind a proxy the test hangs, and its
	// heartbeats retried for a minute (kgo's default is the session
	// timeout), as a replica stalled for that long would send none; its
	// other requests keep kgo's defaults. Nor does it commit its marked
	// offsets: kgo answers a commit refused for a dropped member by
	// rejoining, and w1 is to learn it was dropped only when the test
	// removes the fault. (kgo acts on a refused commit between heartbeats,
	// which the fault holds back meanwhile; the test need not rely on it.)
	proxied, proxy := testdb.Proxied(t, e.Schema.URL)
	behind := e.Schema
	behind.URL = proxied
	stale := &restartCount{}
	w1 := start("w1", behind.Open(t, store.Config{MaxConns: 8}), stale,
		kgo.RetryTimeoutFn(func(key int16) time.Duration {
			switch key {
			case int16(kmsg.Heartbeat):
				return time.Minute
			case int16(kmsg.JoinGroup), int16(kmsg.SyncGroup):
				return session
			}
			return 30 * time.Second
		}),
		kgo.AutoCommitInterval(time.Hour))
	w2 := start("w2", e.Store, nil)
	var p int32 // one of w1's
	require.Eventually(t, func() bool {
		one, two := w1.Partitions(), w2.Partitions()
		if len(one) == 0 || len(two) == 0 || len(one)+len(two) != 16 {
			return false
		}
		p = one[0]
		return true
	}, 30*time.Second, 10*time.Millisecond, "the partitions shared, w1 owning some")
	send := sendTo(t, e, p)
	var ids []string
	acquire := func(lock string) {
		id := "stale-" + lock
		ids = append(ids, id)
		send(cmd("acquire", id, lock, "o", reply, func(c *topics.Command) { c.LeaseDuration = 300 }))
	}
	answered := func(what string) {
		t.Helper()
		watch.WaitFor(t, 30*time.Second, what, func(rs []e2e.Received) bool {
			seen := map[string]bool{}
			for _, r := range rs {
				if r.Event.Type == topics.TypeAcquired {
					seen[r.Event.RequestID] = true
				}
			}
			for _, id := range ids {
				if !seen[id] {
					return false
				}
			}
			return true
		})
	}
	acquire("a")
	answered("w1 applying the partition")

	// w1 stalls: its batches hang, and the coordinator hears nothing.
	proxy.Hang()
	member, _ := w1.Client().GroupMetadata()
	deaf := e.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Heartbeat}, Err: kerr.CoordinatorLoadInProgress, Count: -1,
		When: func(r kmsg.Request) bool { return r.(*kmsg.HeartbeatRequest).MemberID == member }})
	for i := range 5 {
		acquire(fmt.Sprintf("b%d", i)) // polled by w1, its batch hanging
	}
	require.Eventually(t, func() bool { return len(w2.Partitions()) == 16 }, 30*time.Second, 10*time.Millisecond,
		"w2 given w1's partitions")
	answered("w2 applying what w1 polled")

	// w1 wakes still a member to its own eyes: its batch finds the offset
	// moved, and the partition restarts from the stored offset.
	proxy.Restore()
	require.Eventually(t, func() bool { return stale.n.Load() > 0 }, 30*time.Second, 10*time.Millisecond, "w1 restarting the partition")
	// Only a restart made is counted; the partition is w1's still.
	require.Contains(t, w1.Partitions(), p, "w1 applying the partition again")
	acquire("c") // both apply the partition now
	answered("the command sent while both apply")
	deaf.Remove() // w1 learns it was dropped, and joins again
	require.Eventually(t, func() bool {
		id, _ := w1.Client().GroupMetadata()
		return id != "" && id != member && len(w1.Partitions()) > 0
	}, 30*time.Second, 10*time.Millisecond, "w1 joining again as a new member, and given partitions")
	acquire("d")
	answered("the command sent after w1 learned")

	var applied, locks int64
	require.NoError(t, e.Store.Pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT lock_name) FROM lock_events WHERE type = $1`,
		topics.TypeAcquired).Scan(&applied, &locks))
	require.EqualValues(t, len(ids), applied, "each command applied once")
	require.EqualValues(t, len(ids), locks)
	offs, err := e.Store.Offsets(ctx, e.Group, e.Names.Commands)
	require.NoError(t, err)
	require.EqualValues(t, len(ids), offs[p].Next, "every offset of the partition applied")
}
