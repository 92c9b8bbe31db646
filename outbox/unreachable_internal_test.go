package outbox

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// beyond outlives its context's end, up to its bound, except an end for
// ErrUnreachable, which ends it at once with that cause, and so a beyond of
// it too (a relay's delete runs under beyond, and a merged run under a
// beyond of that).
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
	withdrawn := errors.Join(errors.New("this replica withdrew"), ErrUnreachable)
	end(withdrawn)
	<-inner.Done()
	require.ErrorIs(t, context.Cause(outer), ErrUnreachable)
	require.ErrorIs(t, context.Cause(inner), ErrUnreachable)

	bounded, cancelBounded := beyond(context.Background(), time.Millisecond)
	defer cancelBounded()
	<-bounded.Done()
	require.ErrorIs(t, bounded.Err(), context.DeadlineExceeded)
}
