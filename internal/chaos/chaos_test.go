package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/topics"
)

// TestChaos runs three lockworker processes on one devkafka process,
// SIGKILLs (and now and then SIGTERMs) one every few seconds and restarts
// it, and once SIGSTOPs one past its session timeout and SIGCONTs it,
// under load on every partition (mutexes, semaphores of 2 and read/write
// locks, and an abandon-only lock), and checks the replies: no lock held
// beyond its mode and limit, fencing tokens rising in grant order, every
// command answered exactly once (two contenders of every lock never
// resend, so a reply committed and then lost is a command unanswered),
// every abandon-only lease expired. The lock state topic must end as the
// database's locks, and no lock's revision may go back in it the first
// time it is published (CheckStateOrder). Meanwhile three SDK candidates
// take turns leading an election (resigning, or dying and being
// replaced), and never lead two at a time, judged by their terms and
// fencing tokens (CheckTerms).
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs processes for about a minute")
	}
	bins, err := Build(context.Background(), t.TempDir(), "lockworker", "devkafka")
	require.NoError(t, err)
	// From after the build: a cold one on a loaded machine takes its own time.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lockworker, devkafka := bins[0], bins[1]
	const session = 3 * time.Second // short, so the test sees many failovers in its time
	broker, err := StartBroker(ctx, devkafka, 16, time.Second)
	require.NoError(t, err)
	t.Cleanup(broker.Close) // after the replicas' cleanups, registered later
	schema := testdb.NewSchema(t)

	logs := &testlog.Buffer{}
	env := []string{
		"DATABASE_URL=" + schema.URL, "KAFKA_BOOTSTRAP_SERVERS=" + broker.Addr, "HTTP_ADDR=127.0.0.1:0",
		fmt.Sprintf("KAFKA_SESSION_TIMEOUT=%g", session.Seconds()), "POSTGRES_MAX_CONNECTIONS=5",
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replica logs:\n%s", testlog.LastLines(logs.String(), 200))
		}
	})
	var replicas []*Replica
	for i := range 3 {
		r := NewReplica(fmt.Sprintf("w%d", i), lockworker, env, logs)
		require.NoError(t, r.Start())
		t.Cleanup(func() { _ = r.Kill() }) // even if it or a later one is never ready
		require.NoError(t, r.Ready(ctx))   // one at a time: the first migrates the schema
		replicas = append(replicas, r)
	}

	const partitions = 16
	load, err := StartLoad(ctx, LoadConfig{Brokers: []string{broker.Addr}, Partitions: partitions, LocksPerPartition: 1, Contenders: 3,
		Patient: 2, Lease: 500 * time.Millisecond, Modes: true, AbandonOnly: 1})
	require.NoError(t, err)
	// Stopped before the replicas and the broker go, even if a require
	// fails below; after the Stops below, these do nothing.
	t.Cleanup(func() { load.Stop(0) })
	election := StartElection(ElectionConfig{Brokers: []string{broker.Addr}})
	t.Cleanup(election.Stop)
	kills, terms := 0, 0
	for round := range 9 {
		time.Sleep(2 * time.Second)
		r := replicas[rand.N(len(replicas))]
		switch {
		case round == 4:
			freeze(t, ctx, load, r, partitions, session)
			continue
		case round%4 == 3:
			require.NoError(t, r.Term(10*time.Second))
			terms++
		default:
			require.NoError(t, r.Kill())
			kills++
		}
		time.Sleep(time.Second)
		require.NoError(t, r.Start())
		// Ready before a later round can pick it: a SIGTERM while it
		// starts may exit 1, which Term reports as a failed drain.
		require.NoError(t, r.Ready(ctx))
	}
	load.Stop(4 * session)
	election.Stop()
	for _, r := range replicas {
		require.NoError(t, r.Err(), "a replica no round stopped exited")
	}
	h := load.History()
	st := load.Stats()
	t.Logf("%d SIGKILLs, %d SIGTERMs, 1 SIGSTOP; %d commands (%d resends; %d never resent, %d of them answered after the resend interval), %d replies; worst answer %s, p99 %s, %d over 1 s, corrected p99 %s, unanswered %d",
		kills, terms, st.Commands, load.Resends(), st.Once, st.OnceLate, len(h.Replies), st.Worst, st.P99, st.OverSecond, st.CorrectedP99, st.Unanswered)
	require.Positive(t, st.OnceLate, "commands never resent went through a failover")
	require.Greater(t, st.Commands, 200, "too little load to mean anything")
	var shared, semaphore int
	for _, ev := range h.Replies {
		if ev.Type == topics.TypeAcquired && ev.LockInfo != nil {
			if ev.LockInfo.Mode == topics.ModeShared {
				shared++
			}
			if ev.LockInfo.Limit == 2 {
				semaphore++
			}
		}
	}
	t.Logf("grants: %d shared, %d in semaphores of 2", shared, semaphore)
	require.Positive(t, shared, "read locks were granted")
	require.Positive(t, semaphore, "semaphores were granted")
	require.NoError(t, Check(h))
	// Leases nobody asks for again are ended by the expiry scheduler alone,
	// across the failovers too.
	x := load.Expiries(Window{To: time.Now()})
	t.Logf("abandon-only leases: %d expired (%d after their partition had no owner, worst %s after the takeover), %d not",
		x.Count, x.Orphaned, x.AfterTakeover, x.Unexpired)
	require.Positive(t, x.Count, "abandon-only leases expired")
	require.Zero(t, x.Unexpired, "abandon-only leases that ended with no lock.expired")

	// The lock state topic read from its start is the database's locks,
	// once the relays have published the last changes (leases still end).
	// Its own bound, whatever the rounds left of ctx: a comparison that
	// never ran is a failure, not a pass.
	cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
	defer ccancel()
	require.NoError(t, CompareTableSettled(cctx, []string{broker.Addr}, schema.URL, 30*time.Second), "the lock state topic against the database")
	order, err := CheckStateOrder(cctx, []string{broker.Addr})
	t.Logf("lock state topic: %d records (%d tombstones), %d went back the first time they were published, %d copies published again after a later revision",
		order.Records, order.Tombstones, order.Back, order.Copies)
	require.NoError(t, err, "the lock state topic's order")

	leaders, writes, campaignErrs := election.Terms()
	how := map[string]int{}
	for _, tm := range leaders {
		how[tm.How]++
	}
	t.Logf("election: %d terms %v, %d fenced writes, %d campaigns failed and were retried %v",
		len(leaders), how, len(writes), len(campaignErrs), campaignErrs)
	require.GreaterOrEqual(t, len(leaders), 5, "the leadership moved too little to mean anything")
	require.Positive(t, how["died"], "some leaders died")
	require.NoError(t, CheckTerms(leaders, writes))
}

// freeze SIGSTOPs r (a paused VM or container) until every partition has
// answered since, by the other replicas: the group dropped r after the
// session timeout and gave its partitions to others. It SIGCONTs r then, and
// waits for r to log that it stalled and, back in the group, to answer a
// command first sent after it resumed.
func freeze(t *testing.T, ctx context.Context, load *Load, r *Replica, partitions int, session time.Duration) {
	t.Helper()
	source := "lockworker/" + r.Name
	others := map[int]bool{} // the partitions they answered; cond's alone
	moved := load.When(func(rd Read) bool {
		if rd.Partition >= 0 && rd.Source != source {
			others[rd.Partition] = true
		}
		return len(others) == partitions
	})
	require.NoError(t, r.Signal(syscall.SIGSTOP))
	stopped := time.Now()
	await(t, ctx, moved, 4*session, "every partition answered by the others while "+r.Name+" is stopped")
	// Past the session timeout, whatever the others answered meanwhile
	// (partitions moving anyway): the group drops the member only then.
	time.Sleep(time.Until(stopped.Add(session)))
	stalled := r.Logged("this process stalled past half its group session timeout")
	resumed := time.Now()
	rejoined := load.When(func(rd Read) bool { return rd.Source == source && rd.Sent.After(resumed) })
	require.NoError(t, r.Signal(syscall.SIGCONT))
	t.Logf("%s stopped for %s", r.Name, time.Since(stopped).Round(time.Millisecond))
	await(t, ctx, stalled, 4*session, r.Name+" logging that it stalled")
	await(t, ctx, rejoined, 4*session, r.Name+" answering a command sent after it resumed")
	t.Logf("%s answers again %s after it resumed", r.Name, time.Since(resumed).Round(time.Millisecond))
}

// await waits up to within for ch to close, and fails the test saying what
// it waited for if it does not.
func await(t *testing.T, ctx context.Context, ch <-chan struct{}, within time.Duration, what string) {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		t.Fatalf("waited %s in vain for %s", within, what)
	case <-ctx.Done():
		t.Fatalf("waiting for %s: %v", what, ctx.Err())
	}
}
