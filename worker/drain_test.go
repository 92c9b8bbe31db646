package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

// A worker stopped while its batch cannot commit (here it waits for a row
// another transaction holds; PostgreSQL not answering is the same to the
// drain) does not wait for it: past DrainTimeout it abandons the batch and
// Run returns, also when its poll loop waits for room in the applier's
// queue behind that batch (a queue of one record here), and the commands
// are applied by the next owner of their partition, from the stored offset.
// The abandon line says which partitions' records it leaves to them: also
// those of a partition being revoked meanwhile (here the member leaves the
// group), whose revoke waits for them, saying so.
func TestDrainAbandonsABatchThatCannotCommit(t *testing.T) {
	for _, revoked := range []bool{false, true} {
		name := "owned"
		if revoked {
			name = "being revoked"
		}
		t.Run(name, func(t *testing.T) { drainAbandons(t, revoked) })
	}
}

// drainAbandons runs TestDrainAbandonsABatchThatCannotCommit, with the
// partition being revoked as the worker stops when revoked.
func drainAbandons(t *testing.T, revoked bool) {
	e := e2e.New(t)
	logs := &testlog.Buffer{}
	ctx := context.Background()
	reply := "locks.replies.drain"
	watch := e.Watch(reply)
	kopts := []kgo.Opt{kgo.SeedBrokers(e.Brokers...)}
	run := func(drain time.Duration) (*worker.Worker, func(), func(), <-chan struct{}) {
		pub, pubClient, err := outbox.NewKafkaPublisher(kopts, 5*time.Second, e.Names.ReplyPrefix, true, -1)
		require.NoError(t, err)
		t.Cleanup(pubClient.Close)
		relay, err := outbox.New(outbox.Config{Publisher: pub, Pool: e.Store.Pool})
		require.NoError(t, err)
		w, err := worker.New(worker.Config{KafkaOpts: kopts, Group: e.Group, Names: e.Names, Store: e.Store, Relay: relay,
			SessionTimeout: time.Second, DrainTimeout: drain, MaxPollRecords: 1, Logger: zerolog.New(logs)})
		require.NoError(t, err)
		rctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			assert.NoError(t, w.Run(rctx))
		}()
		leave := sync.OnceFunc(w.Close)
		t.Cleanup(func() { stop(); <-done; leave() })
		require.Eventually(t, func() bool { return len(w.Partitions()) == 16 }, 30*time.Second, 10*time.Millisecond)
		return w, leave, stop, done
	}
	const p = 3
	send := sendTo(t, e, p)
	send(cmd("acquire", "drain-0", "a0", "o", reply))
	w1, leave1, stop, done := run(500 * time.Millisecond)
	watch.WaitFor(t, 30*time.Second, "the first command", func(rs []e2e.Received) bool { return len(rs) == 1 })

	// The partition's offset row held by another transaction (not ended
	// by idle_in_transaction_session_timeout while the test holds it).
	holder := e.Schema.Open(t, store.Config{IdleInTransactionTimeout: -1, MaxConns: 2})
	tx, err := holder.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `SELECT FROM consumer_offsets WHERE partition = $1 FOR UPDATE`, p)
	require.NoError(t, err)
	var pid int
	require.NoError(t, tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	send(cmd("acquire", "drain-1", "a1", "o", reply))
	require.Eventually(t, func() bool {
		// The batch, which writes the reply's outbox row with COMMIT,
		// waits for the row: not the partition's expiry scheduler, which
		// has nothing due.
		var waiting int
		require.NoError(t, holder.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, pid).Scan(&waiting))
		return waiting > 0
	}, 30*time.Second, 10*time.Millisecond, "the batch waiting for the row")
	// Behind it: one queued, and the poll loop waiting for room.
	for i := 2; i <= 4; i++ {
		send(cmd("acquire", fmt.Sprint("drain-", i), fmt.Sprint("a", i), "o", reply))
	}
	// drain-2 queued, drain-3 polled (the next offset to poll is 4) and
	// waiting for room, drain-4 fetched.
	require.Eventually(t, func() bool {
		polled := w1.Client().UncommittedOffsets()[e.Names.Commands][p] // polled so far
		return polled.Offset == 4 && w1.Client().BufferedFetchRecords() == 1
	}, 30*time.Second, 10*time.Millisecond, "the poll loop holding a record it has no room for")
	left := make(chan struct{})
	if revoked {
		go func() {
			defer close(left)
			assert.NoError(t, w1.Client().LeaveGroupContext(ctx)) // revokes every partition
		}()
		require.Eventually(t, func() bool { return len(w1.Partitions()) == 0 }, 30*time.Second, 10*time.Millisecond,
			"the revoke under way, waiting for the batch")
	} else {
		close(left)
	}
	stop()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run still waits for the batch")
	}
	select {
	case <-left:
	case <-time.After(30 * time.Second):
		t.Fatal("the leave still waits for the revoke")
	}
	leave1()
	require.NoError(t, tx.Rollback(ctx))
	// drain-1 in the batch, drain-2 queued, drain-3 polled: drain-0
	// (offset 0) committed, drain-4 never polled.
	var abandoned struct {
		Abandoned []map[string]any `json:"abandoned"`
		Records   int              `json:"records"`
	}
	line := lineWith(t, logs.String(), "abandoning them")
	require.NoError(t, json.Unmarshal([]byte(line), &abandoned), line)
	want := map[string]any{"partition": float64(p), "records": float64(3), "first_offset": float64(1), "last_offset": float64(3)}
	if revoked {
		want["revoking"] = true
	}
	assert.Equal(t, []map[string]any{want}, abandoned.Abandoned, line)
	assert.Equal(t, 3, abandoned.Records, line)

	run(0)
	watch.WaitFor(t, 30*time.Second, "the abandoned commands applied by the next owner", func(rs []e2e.Received) bool {
		granted := map[string]bool{}
		for _, r := range rs {
			if r.Event.Type == topics.TypeAcquired {
				granted[r.Event.RequestID] = true
			}
		}
		for i := 1; i <= 4; i++ {
			if !granted[fmt.Sprint("drain-", i)] {
				return false
			}
		}
		return true
	})
}

// lineWith is the line of logs that holds s.
func lineWith(t *testing.T, logs, s string) string {
	t.Helper()
	for line := range strings.Lines(logs) {
		if strings.Contains(line, s) {
			return line
		}
	}
	t.Fatalf("no log line says %q", s)
	return ""
}
