package worker_test

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/topics"
)

// TestAbortedTransactionIsNotApplied: a command produced in a Kafka
// transaction its producer then aborts is never applied, as a
// read_committed consumer never sees it; the committed command behind it
// on the same partition is.
func TestAbortedTransactionIsNotApplied(t *testing.T) {
	e := e2e.New(t)
	x := e.StartWorker(e2e.WorkerOpts{})
	const reply = "locks.replies.txn"
	watch := e.Watch(reply)
	ctx := context.Background()

	txn, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.DefaultProduceTopic(e.Names.Commands),
		kgo.TransactionalID("isolation-test"))
	require.NoError(t, err)
	defer txn.Close()
	require.NoError(t, txn.BeginTransaction())
	aborted := topics.Command{RequestID: "aborted", Operation: topics.OpAcquire, LockName: "txn", OwnerID: "o1", ReplyTo: reply, LeaseDuration: 300}
	v, err := aborted.Encode()
	require.NoError(t, err)
	require.NoError(t, txn.ProduceSync(ctx, &kgo.Record{Key: []byte(aborted.Key()), Value: v}).FirstErr())
	require.NoError(t, txn.EndTransaction(ctx, kgo.TryAbort))

	// The same lock, so the same partition: answered only after the
	// aborted record's offset was read past.
	e.Send(e.Producer(), topics.Command{RequestID: "after", Operation: topics.OpAcquire, LockName: "txn", OwnerID: "o2", ReplyTo: reply, LeaseDuration: 300})
	got := watch.WaitEvent(t, "the committed acquire's answer", e2e.ByRequest(reply, "after", ""))
	require.Equal(t, topics.TypeAcquired, got.Event.Type, "the lock was free: the aborted acquire took nothing")
	for _, r := range watch.All() {
		require.NotEqual(t, "aborted", r.Event.RequestID, "the aborted command was answered: %s", r.Event.Type)
	}
	var n int
	require.NoError(t, x.Store.Pool.QueryRow(ctx, `SELECT count(*) FROM processed_requests WHERE request_id = 'aborted'`).Scan(&n))
	require.Zero(t, n, "the aborted command has no stored outcome")
}

// TestUndecidedCountsAnOpenTransaction: while a producer's transaction is
// open, Undecided counts its records and every record after them on the
// partition, which wait unapplied; once it ends, none.
func TestUndecidedCountsAnOpenTransaction(t *testing.T) {
	e := e2e.New(t)
	x := e.StartWorker(e2e.WorkerOpts{})
	const reply = "locks.replies.undecided"
	watch := e.Watch(reply)
	ctx := context.Background()

	txn, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.DefaultProduceTopic(e.Names.Commands),
		kgo.TransactionalID("undecided-test"))
	require.NoError(t, err)
	defer txn.Close()
	require.NoError(t, txn.BeginTransaction())
	var part int32
	for i := range 3 {
		c := topics.Command{RequestID: fmt.Sprintf("open-%d", i), Operation: topics.OpQuery, LockName: "undecided", ReplyTo: reply}
		v, err := c.Encode()
		require.NoError(t, err)
		r, err := txn.ProduceSync(ctx, &kgo.Record{Key: []byte(c.Key()), Value: v}).First()
		require.NoError(t, err)
		part = r.Partition
	}
	e.Send(e.Producer(), topics.Command{RequestID: "behind", Operation: topics.OpQuery, LockName: "undecided", ReplyTo: reply})

	want := map[int32]int64{}
	for _, p := range x.W.Partitions() {
		want[p] = 0
	}
	want[part] = 4
	require.Eventually(t, func() bool {
		got, err := x.W.Undecided(ctx)
		return err == nil && maps.Equal(want, got)
	}, 10*time.Second, 20*time.Millisecond, "the open transaction's three records and the command behind them")

	require.NoError(t, txn.EndTransaction(ctx, kgo.TryCommit))
	watch.WaitEvent(t, "the command behind the transaction answered", e2e.ByRequest(reply, "behind", ""))
	want[part] = 0
	got, err := x.W.Undecided(ctx)
	require.NoError(t, err)
	require.Equal(t, want, got, "nothing undecided once the transaction committed")
}
