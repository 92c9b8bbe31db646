package chaos

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/e2e"
)

// One lock's revisions, across two hand-offs with a SIGKILL and restart of
// the broker (real processes) between them: the replies carry them in
// order, and a watch that ran through the restart saw each exactly once,
// in order.
func TestRevisionsAcrossBrokerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := startSingle(t, ctx, 4)
	broker, addr := s.broker, s.addr

	c, err := client.New(ctx, client.Config{Brokers: []string{addr}, Requester: "revisions"})
	require.NoError(t, err)
	defer c.Close()
	const lock = "handed-off"
	revs, err := c.Watch(ctx, lock)
	require.NoError(t, err)
	var seen []int64
	// next reads the watch's next revision into seen.
	next := func() {
		t.Helper()
		select {
		case r, ok := <-revs:
			require.True(t, ok, "the watch ended after %v", seen)
			seen = append(seen, r.Revision)
		case <-ctx.Done():
			t.Fatalf("the watch saw %v, then nothing", seen)
		}
	}
	next() // the lock before anything happened to it: revision 0

	var grants []int64 // the revisions the grants carried, in the order they came
	opts := []client.AcquireOption{client.WithoutKeepAlive(), client.WithLease(time.Minute)}
	handOff := func(from *client.Lease, to string) *client.Lease {
		granted, failed := e2e.QueueWaiters(t, ctx, c, []string{lock}, append(opts, client.WithOwner(to), client.WithWait(time.Minute))...)
		require.NoError(t, from.Release(ctx))
		select {
		case l := <-granted:
			grants = append(grants, l.Info().Revision)
			return l
		case err := <-failed:
			t.Fatalf("%s was not granted: %v", to, err)
			return nil
		case <-ctx.Done():
			t.Fatalf("%s was not granted: %v", to, ctx.Err())
			return nil
		}
	}
	a, err := c.TryAcquire(ctx, lock, append(opts, client.WithOwner("a"))...)
	require.NoError(t, err)
	grants = append(grants, a.Info().Revision)
	b := handOff(a, "b") // revisions 1 (a), 2 (b queued), 3 (a released, b granted)

	broker.Kill()
	require.NoError(t, broker.Restart(ctx))

	d := handOff(b, "d")               // 4 (d queued), 5 (b released, d granted)
	require.NoError(t, d.Release(ctx)) // 6
	require.Equal(t, []int64{1, 3, 5}, grants, "a grant's revision is the change that made it")

	for seen[len(seen)-1] < 6 {
		next()
	}
	require.Equal(t, []int64{0, 1, 2, 3, 4, 5, 6}, seen, "each revision once, in order, across the restart")
}
