package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
)

// RaiseTokenFloor moves the sequence only when the last token it handed
// out is below the one published, and only forward; the next token is then
// the floor's successor.
func TestRaiseTokenFloor(t *testing.T) {
	ctx := context.Background()
	st := testdb.New(t)
	set := func(v int64, called bool) {
		t.Helper()
		_, err := st.Pool.Exec(ctx, `SELECT setval('fencing_tokens', $1, $2)`, v, called)
		require.NoError(t, err)
	}
	next := func() int64 {
		t.Helper()
		var n int64
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT nextval('fencing_tokens')`).Scan(&n))
		return n
	}
	for _, c := range []struct {
		name   string
		last   int64
		called bool
		floor  int64
		raised bool
		was    int64
		next   int64
	}{
		{"behind", 50, true, 1000, true, 50, 1001},
		{"last token handed out is the one published", 100, true, 1000, false, 100, 101},
		{"next token would be the one published", 100, false, 1000, true, 99, 1001},
		{"next token above the one published", 101, false, 1000, false, 100, 101},
		{"ahead", 5000, true, 1000, false, 5000, 5001},
		// The floor may be the token published itself: a sequence whose
		// next token would be it moves past it.
		{"floor is the token published, next would be it", 100, false, 100, true, 99, 101},
	} {
		t.Run(c.name, func(t *testing.T) {
			set(c.last, c.called)
			seq, err := st.RaiseTokenFloor(ctx, 100, c.floor)
			require.NoError(t, err)
			require.Equal(t, c.raised, seq.Raised)
			require.Equal(t, c.was, seq.Was)
			require.Equal(t, c.next-1, seq.Now)
			require.Equal(t, c.next, next())
		})
	}
	_, err := st.RaiseTokenFloor(ctx, 100, 99)
	require.ErrorContains(t, err, "raising the fencing token floor to 99")
}

// Replicas starting at once after a loss check the sequence concurrently,
// each with the highest token it read and its floor (one read a grant the
// other did not): the sequence ends at the higher floor, whichever call
// runs first, never set back by the other. Both calls are held at the advisory
// lock (the test holds it) until both wait there, then let go together.
func TestRaiseTokenFloorConcurrent(t *testing.T) {
	ctx := context.Background()
	st := testdb.New(t)
	_, err := st.Pool.Exec(ctx, `SELECT setval('fencing_tokens', 1, false)`)
	require.NoError(t, err)

	hold, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer hold.Rollback(ctx) //nolint:errcheck
	_, err = hold.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))`, store.TokenFloorLockClass)
	require.NoError(t, err)

	calls := []struct{ published, floor int64 }{{1_500_000, 2_500_000}, {100, 1_000_100}}
	results := make([]store.TokenSequence, len(calls))
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	barrier := make(chan struct{})
	for i, c := range calls {
		wg.Go(func() {
			<-barrier
			results[i], errs[i] = st.RaiseTokenFloor(ctx, c.published, c.floor)
		})
	}
	close(barrier)
	require.Eventually(t, func() bool { // a condition, not a delay: both wait for the lock
		var waiting int
		// This schema's lock only (tests of other packages share the
		// database): the (int4, int4) form shows its first key as
		// classid, its second as objid (an oid: unsigned), objsubid 2.
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks
			WHERE locktype = 'advisory' AND classid = $1 AND objsubid = 2
			AND objid::int8 = (hashtext(current_schema())::int8 & 4294967295) AND NOT granted`, store.TokenFloorLockClass).Scan(&waiting))
		return waiting == 2
	}, 10*time.Second, time.Millisecond)
	require.NoError(t, hold.Rollback(ctx))
	wg.Wait()

	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	var last int64
	var called bool
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT last_value, is_called FROM fencing_tokens`).Scan(&last, &called))
	require.Equal(t, int64(2_500_000), last)
	require.True(t, called)
	// The higher floor's call raised the sequence, from where the loss
	// left it or from the lower floor.
	require.True(t, results[0].Raised, "%+v", results[0])
	require.Contains(t, []int64{0, 1_000_100}, results[0].Was)
	require.Equal(t, int64(2_500_000), results[0].Now)
	require.Contains(t, []int64{0, 2_500_000}, results[1].Was)
}
