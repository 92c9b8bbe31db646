package client

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// A NewSession given up before its answer closes the session the worker
// may have opened, so that it is not kept for nobody until its TTL; one
// whose ID was given WithSessionID does not, as that session may be
// another process's. The worker here never answers an open.
func TestNewSessionGivenUpClosesItsSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmds := make(chan topics.Command, 16)
	c := fakeWorker(t, func(ctx context.Context, cmd topics.Command) []topics.Event {
		deliver(ctx, cmds, cmd)
		if cmd.Operation != topics.OpSessionClose {
			return nil
		}
		ev := topics.NewEvent(topics.TypeSessionClosed, cmd.Operation, cmd.RequestID, time.Now())
		ev.SessionInfo = &topics.SessionInfo{SessionID: cmd.SessionID, OwnerID: cmd.OwnerID}
		return one(ev)
	})
	next := func(op string) topics.Command {
		select {
		case cmd := <-cmds:
			require.Equal(t, op, cmd.Operation)
			return cmd
		case <-ctx.Done():
			t.Fatalf("no %s came", op)
			return topics.Command{}
		}
	}
	// giveUp opens a session given up once the open is on its way.
	giveUp := func(opts ...SessionOption) (opened topics.Command, err error) {
		gctx, stop := context.WithCancel(ctx)
		defer stop()
		sent := make(chan topics.Command, 1)
		go func() { sent <- <-cmds; stop() }()
		_, err = c.NewSession(gctx, time.Minute, opts...)
		return <-sent, err
	}

	opened, err := giveUp()
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, topics.OpSessionOpen, opened.Operation)
	require.Equal(t, opened.SessionID, next(topics.OpSessionClose).SessionID)

	opened, err = giveUp(WithSessionID("shared-session"))
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, "shared-session", opened.SessionID)
	// The commands topic has one partition: a close sent would come before
	// the query's command.
	qctx, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	defer stop()
	_, err = c.Query(qctx, "probe")
	require.ErrorIs(t, err, context.DeadlineExceeded, "the fake worker does not answer queries")
	require.Equal(t, "probe", next(topics.OpQuery).LockName, "no close for a session ID given WithSessionID")
}
