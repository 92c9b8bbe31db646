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

// beyond is ctx without its cancellation, for work that outlives a stop,
// bounded by timeout; it still ends with ctx when ctx ends for
// ErrUnreachable, with that cause, so that a beyond of it does too.
func beyond(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	unbound, end := context.WithCancelCause(context.WithoutCancel(ctx))
	bctx, cancel := context.WithTimeout(unbound, timeout)
	stop := context.AfterFunc(ctx, func() {
		if cause := context.Cause(ctx); errors.Is(cause, ErrUnreachable) {
			end(cause)
		}
	})
	return bctx, func() {
		stop()
		cancel()
		end(nil)
	}
}
