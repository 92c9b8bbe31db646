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
// context, as one that refuses connections does; once the
// server answers again, the next Probe connects again and succeeds.
func TestProbe(t *testing.T) {
	t.Parallel()
	st := boundedStore(t, time.Minute) // one connection in the pool
	ctx := context.Background()
	held, err := st.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer held.Release()
	require.NoError(t, st.Probe(ctx), "the pool's connections are all held: not the probe's business")

	probe := func() error {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		return st.Probe(pctx)
	}
	st.proxy.Hang()
	require.ErrorIs(t, probe(), context.DeadlineExceeded, "a server that does not answer")
	require.ErrorIs(t, probe(), context.DeadlineExceeded, "connecting again to a server that does not answer")
	st.proxy.Cut()
	require.ErrorIs(t, probe(), store.ErrTransient, "a server that refuses connections")
	st.proxy.Restore()
	require.NoError(t, probe(), "the server answers again")
}
