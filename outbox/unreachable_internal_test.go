package outbox

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// withdrawn is a stop's cause as the worker gives it.
var withdrawn = errors.Join(errors.New("this replica withdrew"), ErrUnreachable)

// beyond outlives its context's end, up to its bound, except an end for
// ErrUnreachable, which ends it at once with that cause, and so a beyond of
// it too (a relay's delete runs under beyond, and a merged run under a
// beyond of that), also one made after the first's bound passed (a caller
// handed the lead of a merged run after its own bound).
func TestBeyond(t *testing.T) {
	t.Parallel()
	ctx, stop := context.WithCancel(context.Background())
	b, cancel := beyond(ctx, time.Hour)
	defer cancel()
	stop()
	require.NoError(t, b.Err(), "a stop is outlived")

	ctx, end := context.WithCancelCause(context.Background())
	outer, cancelOuter := beyond(ctx, time.Hour)
	defer cancelOuter()
	inner, cancelInner := beyond(outer, time.Hour)
	defer cancelInner()
	end(withdrawn)
	<-outer.Done()
	<-inner.Done()
	require.ErrorIs(t, context.Cause(outer), ErrUnreachable)
	require.ErrorIs(t, context.Cause(inner), ErrUnreachable)

	bounded, cancelBounded := beyond(context.Background(), time.Millisecond)
	defer cancelBounded()
	<-bounded.Done()
	require.ErrorIs(t, bounded.Err(), context.DeadlineExceeded)

	ctx, end = context.WithCancelCause(context.Background())
	expired, cancelExpired := beyond(ctx, time.Millisecond)
	defer cancelExpired()
	<-expired.Done()
	led, cancelLed := beyond(expired, time.Hour) // merger.lead's, after the caller's bound
	defer cancelLed()
	require.NoError(t, led.Err(), "a beyond of an expired one has a bound of its own")
	end(withdrawn)
	<-led.Done()
	require.ErrorIs(t, context.Cause(led), ErrUnreachable)
}

// A merged run ends when the relay of the caller leading it is stopped for
// ErrUnreachable, and so do the calls it serves.
func TestMergedRunEndsWhenUnreachable(t *testing.T) {
	t.Parallel()
	m := &merger[int, int]{timeout: time.Hour, run: func(ctx context.Context, reqs []int) ([]int, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	ctx, end := context.WithCancelCause(context.Background())
	dctx, cancel := beyond(ctx, time.Hour) // as deleteAcked calls it
	defer cancel()
	done := make(chan error)
	go func() { _, err := m.do(dctx, 1); done <- err }()
	end(withdrawn)
	require.ErrorIs(t, <-done, context.Canceled)
}
