package client

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// An acquire whose first copy the worker applied (granted here), its
// answer lost, is sent again; the copy is answered REQUEST_ID_CONFLICT (the
// stored outcome cannot be read back), which applied nothing and discloses
// nothing of the first. Acquire returns that refusal and, as for no reply,
// sends a release for its generated owner before it returns, so the worker
// does not hold the grant for nobody until its expiry.
func TestAcquireAnsweredRequestIDConflictGivesBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	var acquires atomic.Int32
	c := fakeWorker(t, func(ctx context.Context, cmd topics.Command) []topics.Event {
		seen.add(cmd)
		switch cmd.Operation {
		case topics.OpAcquire:
			if acquires.Add(1) == 1 {
				return nil // applied, granted; its answer lost
			}
			return one(rejectedEvent(cmd, topics.CodeRequestIDConflict))
		case topics.OpRelease:
			return one(releasedEvent(cmd))
		}
		return nil
	})
	start := seen.len()
	_, err := c.Acquire(ctx, "job")
	require.ErrorIs(t, err, ErrRequestIDConflict)
	require.Equal(t, []string{topics.OpAcquire, topics.OpAcquire, topics.OpRelease}, seen.since(start))
	seen.mu.Lock()
	acquire, again, release := seen.cmds[start], seen.cmds[start+1], seen.cmds[start+2]
	seen.mu.Unlock()
	require.Equal(t, acquire.RequestID, again.RequestID, "the same acquire sent again")
	require.Equal(t, acquire.OwnerID, release.OwnerID)
	require.Equal(t, acquire.LockName, release.LockName)
}
