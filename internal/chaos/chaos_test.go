package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/topics"
)

// TestChaos runs three lockworker processes on one devkafka process,
// SIGKILLs (and now and then SIGTERMs) one every few seconds and restarts
// it, under load on every partition (mutexes, semaphores of 2 and
// read/write locks, and an abandon-only lock), and checks the replies: no
// lock held beyond its mode and limit, fencing tokens rising in grant
// order, every command answered exactly once, every abandon-only lease
// expired. Meanwhile three SDK candidates take turns leading an
// election (resigning, or dying and being replaced), and never lead two at
// a time, judged by their terms and fencing tokens (CheckTerms).
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

	load, err := StartLoad(ctx, LoadConfig{Brokers: []string{broker.Addr}, Partitions: 16, LocksPerPartition: 1, Contenders: 3,
		Lease: 500 * time.Millisecond, Modes: true, AbandonOnly: 1})
	require.NoError(t, err)
	// Stopped before the replicas and the broker go, even if a require
	// fails below; after the Stops below, these do nothing.
	t.Cleanup(func() { load.Stop(0) })
	election := StartElection(ElectionConfig{Brokers: []string{broker.Addr}})
	t.Cleanup(election.Stop)
	kills, terms := 0, 0
	for round := range 8 {
		time.Sleep(2 * time.Second)
		r := replicas[rand.N(len(replicas))]
		if round%4 == 3 {
			require.NoError(t, r.Term(10*time.Second))
			terms++
		} else {
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
	t.Logf("%d SIGKILLs, %d SIGTERMs; %d commands (%d resends), %d replies; worst answer %s, p99 %s, %d over 1 s, corrected p99 %s, unanswered %d",
		kills, terms, st.Commands, load.Resends(), len(h.Replies), st.Worst, st.P99, st.OverSecond, st.CorrectedP99, st.Unanswered)
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
