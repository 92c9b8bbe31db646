package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

// RaiseTokenFloor moves the sequence only when its next token would not be
// above the one published, and only forward; the next token is then the
// floor's successor.
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
		raised bool
		next   int64
	}{
		{"behind", 50, true, true, 1001},
		{"last token handed out is the one published", 100, true, false, 101},
		{"next token would be the one published", 100, false, true, 1001},
		{"next token above the one published", 101, false, false, 101},
		{"ahead", 5000, true, false, 5001},
	} {
		t.Run(c.name, func(t *testing.T) {
			set(c.last, c.called)
			raised, was, err := st.RaiseTokenFloor(ctx, 100, 1000)
			require.NoError(t, err)
			require.Equal(t, c.raised, raised)
			if raised {
				require.Equal(t, c.last, was)
			}
			require.Equal(t, c.next, next())
		})
	}
	_, _, err := st.RaiseTokenFloor(ctx, 100, 99)
	require.ErrorContains(t, err, "raising the fencing token floor to 99")
}
