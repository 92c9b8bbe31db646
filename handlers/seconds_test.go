package handlers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/topics"
)

// TestFractionalSeconds: the general path and the common cases' statements
// (sent ahead or inline) turn fractional seconds into the same expiries,
// make_interval's as the server computes them, for a grant, a reader
// joining and an extend; and an extension to the max_hold cap itself is
// granted on every path. Each case is one batch, well within its leases.
func TestFractionalSeconds(t *testing.T) {
	h := newHarness(t)
	interval := func(secs ...float64) time.Duration {
		var d time.Duration
		for _, s := range secs {
			d += time.Duration(h.scalar(`SELECT (extract(epoch FROM make_interval(secs => $1)) * 1000000)::int8`, s)) * time.Microsecond
		}
		return d
	}
	for i, tc := range []struct{ lease, by, maxHold float64 }{
		{4.1, 1.001, 0},
		{8.2, 1.0000045, 0}, // a tie (1,000,004.5 µs): to even
		{0.5, 0.501, 1.001}, // to the cap itself
	} {
		for _, path := range []string{"general", "ahead", "inline"} {
			lock := fmt.Sprintf("l%d-%s", i, path)
			hold := func(c *topics.Command) { shared(c); c.LeaseDuration, c.MaxHold = tc.lease, tc.maxHold }
			cmds := []topics.Command{h.acquire(lock, "alice", hold), h.acquire(lock, "bob", hold), h.extend(lock, "alice", extendBy(tc.by))}
			var evs []topics.Event
			if path == "general" {
				evs = h.applyGeneral(cmds...)
			} else {
				evs = h.run(path == "ahead", cmds)
			}
			require.Len(t, evs, 3, "%s path, %+v", path, tc)
			for j, want := range []struct {
				typ string
				d   time.Duration
			}{{topics.TypeAcquired, interval(tc.lease)}, {topics.TypeAcquired, interval(tc.lease)}, {topics.TypeExtended, interval(tc.lease, tc.by)}} {
				li := evs[j].LockInfo
				require.Equal(t, want.typ, evs[j].Type, "%s path, %+v: %s", path, tc, evs[j].ErrorMessage)
				require.Equal(t, want.d, li.ExpiresAt.Sub(li.AcquiredAt.Time), "%s path, %+v, event %d", path, tc, j)
			}
			if tc.maxHold > 0 {
				li := evs[2].LockInfo
				require.Equal(t, interval(tc.maxHold), li.ExpiresAt.Sub(li.AcquiredAt.Time), "%s path: at the cap", path)
			}
		}
	}
}

// applyGeneral is apply through the general path alone.
func (h *harness) applyGeneral(cmds ...topics.Command) []topics.Event {
	h.t.Helper()
	var out []topics.Event
	require.NoError(h.t, h.st.InTx(context.Background(), func(tx pgx.Tx) error {
		out = nil
		b := handlers.NewBatch(tx, h.env)
		handlers.GeneralPathOnly(b)
		for _, c := range cmds {
			evs, err := b.Apply(context.Background(), c, time.Now())
			if err != nil {
				return err
			}
			out = append(out, evs...)
		}
		return b.Flush(context.Background())
	}))
	return out
}
