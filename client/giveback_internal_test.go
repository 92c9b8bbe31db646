package client

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// releasedEvent is the lock.released answering the release cmd.
func releasedEvent(cmd topics.Command) topics.Event {
	return topics.NewEvent(topics.TypeReleased, cmd.Operation, cmd.RequestID, time.Now())
}

// A lease lost to an extension answered outside the contract is released
// even when the client is closing meanwhile, as a given-up acquire is
// withdrawn: Close waits for that release's answer (late here), rather
// than cancel it or refuse to send it.
func TestLostLeaseReleasedWhileClosing(t *testing.T) {
	clearCredentialsEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	released := make(chan topics.Command, 1)
	c := fakeWorker(t, func(ctx context.Context, cmd topics.Command) []topics.Event {
		switch cmd.Operation {
		case topics.OpAcquire:
			return one(granted(cmd, topics.TypeAcquired, 60))
		case topics.OpExtend:
			return one(granted(cmd, topics.TypeExtended, 0))
		case topics.OpRelease:
			select {
			case <-time.After(500 * time.Millisecond): // Close has begun by now
			case <-ctx.Done():
				return nil
			}
			deliver(ctx, released, cmd)
			return one(releasedEvent(cmd))
		}
		return nil
	})
	l, err := c.Acquire(ctx, "job", WithoutKeepAlive())
	require.NoError(t, err)
	extended := make(chan error, 1)
	go func() { extended <- l.Extend(ctx, time.Minute) }()
	select {
	case <-l.Lost():
	case <-ctx.Done():
		t.Fatal("the lease is not lost")
	}
	require.NoError(t, c.Close())
	select {
	case cmd := <-released:
		require.Equal(t, l.Owner, cmd.OwnerID)
		require.NotNil(t, cmd.FencingToken)
		require.Equal(t, l.Token, *cmd.FencingToken)
	default:
		t.Fatal("Close returned before the lost lease's release was answered")
	}
	require.ErrorContains(t, <-extended, "lock.extended with lease_duration 0")
}
