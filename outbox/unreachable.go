package outbox

import (
	"context"
	"errors"
	"time"
)

// ErrUnreachable, as the cause of the end of Run's context
// (context.WithCancelCause), says that the database does not answer this
// process: Run returns without the database work a stop otherwise
// finishes whatever its context says (deleting the rows it published, a
// query serving other partitions too), which could only wait out its bound
// and hold the partition's hand-over. Publishes Kafka has not answered are
// still waited for (HandOverWait). The rows published and not deleted are
// published again by the partition's next owner.
var ErrUnreachable = errors.New("the database does not answer this process")

// outlivedKey is the context value naming the context whose stop the work
// under a beyond outlives.
type outlivedKey struct{}

// beyond is ctx without its cancellation, for work that outlives a stop,
// bounded by timeout; it still ends when the context it outlives ends for
// ErrUnreachable. A beyond of a beyond outlives the same context as the
// first, not the first: a merged run led by a caller whose own bound has
// passed (merger.lead) still ends when that caller's relay is stopped so.
func beyond(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	outlived, ok := ctx.Value(outlivedKey{}).(context.Context)
	if !ok {
		outlived = ctx
	}
	unbound, end := context.WithCancelCause(context.WithValue(context.WithoutCancel(ctx), outlivedKey{}, outlived))
	bctx, cancel := context.WithTimeout(unbound, timeout)
	stop := context.AfterFunc(outlived, func() {
		if cause := context.Cause(outlived); errors.Is(cause, ErrUnreachable) {
			end(cause)
		}
	})
	return bctx, func() {
		stop()
		cancel()
		end(nil)
	}
}
