package worker_test

import (
	"context"
	"testing"

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
