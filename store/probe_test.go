package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/store"
)

// Probe answers whether PostgreSQL answers now, on a connection of its own:
// while every connection of the pool is held it still answers; a server
// that stops answering (the proxy forwards nothing) fails it within its
// bound, as one that refuses connections does; once the server answers
// again, the next Probe connects again and succeeds; after Close it fails.
func TestProbe(t *testing.T) {
	t.Parallel()
	st := boundedStore(t, time.Minute) // one connection in the pool
	ctx := context.Background()
	held, err := st.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer held.Release()
	const bound = 200 * time.Millisecond
	require.NoError(t, st.Probe(ctx, bound), "the pool's connections are all held: not the probe's business")

	st.proxy.Hang()
	require.ErrorIs(t, st.Probe(ctx, bound), context.DeadlineExceeded, "a server that does not answer")
	require.ErrorIs(t, st.Probe(ctx, bound), context.DeadlineExceeded, "connecting again to a server that does not answer")
	st.proxy.Cut()
	require.ErrorIs(t, st.Probe(ctx, bound), store.ErrTransient, "a server that refuses connections")
	st.proxy.Restore()
	require.NoError(t, st.Probe(ctx, bound), "the server answers again")

	held.Release()
	st.Close()
	require.Error(t, st.Probe(ctx, bound), "closed")
}
