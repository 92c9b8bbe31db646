package chaos

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/client"
)

// A broker that comes back without records the worker had applied (an
// unclean leader election; here a broker restarted from an older copy of
// its data directory) numbers new records under the offsets applied. The
// worker finds the loss and applies them, instead of skipping them as
// applied; what it had applied stays, and nothing read again is applied
// twice. Both ways in: a worker that runs through the loss, and one that
// starts after it (it resumes with the stored leader epoch).
func TestCommandsLostByTheBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// One partition, so the records after the loss take the lost offsets.
	s := startSingle(t, ctx, 1)
	broker, addr, dir, w := s.broker, s.addr, s.dir, s.replica
	snapshot := t.TempDir()

	// Each phase's client is new: its reply topic loses records too. It
	// sends each command once: a resend, a new record, would be applied
	// even by a worker that skipped the first as applied.
	newClient := func(name string) *client.Client {
		c, err := client.New(ctx, client.Config{Brokers: []string{addr}, Requester: name,
			ReplyTimeout: 20 * time.Second, RequestTimeout: 20 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	opts := []client.AcquireOption{client.WithoutKeepAlive(), client.WithLease(time.Minute)}
	acquire := func(c *client.Client, lock string) *client.Lease {
		t.Helper()
		l, err := c.TryAcquire(ctx, lock, opts...)
		require.NoError(t, err, "acquiring %s", lock)
		return l
	}
	// copyDir replaces to with a copy of from, the broker being down.
	copyDir := func(from, to string) {
		t.Helper()
		require.NoError(t, os.RemoveAll(to))
		require.NoError(t, os.CopyFS(to, os.DirFS(from)))
	}
	restart := func() {
		t.Helper()
		require.NoError(t, broker.Restart(ctx))
	}
	losses := func() int {
		return strings.Count(s.logs.String(), "the commands topic lost records this group applied")
	}

	for _, phase := range []struct {
		name           string
		workerRunsOver bool // the worker runs through the loss, or starts after it
	}{{"running", true}, {"restarted", false}} {
		t.Logf("phase %s", phase.name)
		before := losses()
		c := newClient("lost-" + phase.name)
		kept := acquire(c, phase.name+"-kept")
		broker.Kill()
		copyDir(dir, snapshot)
		restart()
		lost := acquire(c, phase.name+"-applied-then-lost") // applied, then lost by the broker
		if !phase.workerRunsOver {
			require.NoError(t, w.Kill())
		}
		broker.Kill()
		copyDir(snapshot, dir)
		restart()
		if !phase.workerRunsOver {
			require.NoError(t, w.Start())
			require.NoError(t, w.Ready(ctx))
		}

		// The worker finds the loss before anything is produced: a record
		// produced first would fill the lost offsets before the worker
		// reads past the log's end, and with the leader epoch unchanged
		// (the embedded broker keeps it across a restart) nothing tells.
		require.Eventually(t, func() bool { return losses() > before }, time.Minute, 10*time.Millisecond, "the loss is logged")
		c = newClient("after-" + phase.name)
		// Its record takes the offset of the lost one: applied, not skipped.
		acquire(c, phase.name+"-new")
		// What was applied stays; what was read again is not applied twice.
		for _, l := range []*client.Lease{kept, lost} {
			st, err := c.Query(ctx, l.Name)
			require.NoError(t, err)
			require.Equal(t, client.StatusAcquired, st.Status, l.Name)
			require.Equal(t, l.Token, st.Token, "%s granted once", l.Name)
		}
	}
}
