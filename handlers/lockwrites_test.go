package handlers

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers/rules"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/topics"
)

// A lease a decision ends after writing a holder row of its lock keeps its
// place among the lock's writes, rather than joining the deletes that go
// ahead of all the locks' writes (lockWrites): ahead of the grant that
// inserts it, the delete would find nothing and leave the lease held. No
// decision of the rules does so yet (they end leases before they grant),
// so the effects are given here.
func TestHolderDeleteAfterAGrantKeepsItsPlace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	env := planEnv(0)
	applyBatches(t, st.Pool, env, [][]topics.Command{
		{{Operation: topics.OpAcquire, RequestID: "a", LockName: "g", OwnerID: "o", ReplyTo: "locks.replies.o"}},
		{{Operation: topics.OpRelease, RequestID: "r", LockName: "g", OwnerID: "o", ReplyTo: "locks.replies.o"}},
	})
	require.NoError(t, pgx.BeginFunc(ctx, st.Pool, func(tx pgx.Tx) error {
		a := &applier{Batch: NewBatch(tx, env), cmd: topics.Command{Operation: topics.OpExpire}}
		s, err := a.loadLock(ctx, "", "g", "", false)
		require.NoError(t, err)
		h := rules.Holder{Owner: "x", Mode: rules.Exclusive, Token: 1 << 40, AcquiredAt: s.row.now, ExpiresAt: s.row.now.Add(time.Minute), Lease: 60}
		a.writes = &lockWrites{}
		require.NoError(t, a.apply(ctx, s, []rules.Effect{
			{Kind: rules.Grant, Holder: h, Waiter: rules.Waiter{ID: 1 << 40, Owner: "x"}},
			{Kind: rules.Expire, Holder: h},
		}))
		require.NoError(t, a.writes.send(ctx, tx))
		var held int
		require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM lock_holders WHERE lock_name = 'g'`).Scan(&held))
		require.Zero(t, held, "the lease granted, then ended")
		return nil
	}))
}
