package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/omninode/lockworker/client"
)

// QueueWaiters queues an acquire of each of locks by cl, with opts, one
// after another, and returns the channels their grants and their failures
// come on. An acquire that fails, is granted at once, or has not queued
// when ctx ends fails the test, rather than leaving it to wait for a grant
// until go test's timeout. One that fails once queued sends its error on
// failed (not to t: the test may have ended, ctx with it): a caller
// waiting for a grant reads failed too, or it waits in vain and never
// learns why.
func QueueWaiters(t testing.TB, ctx context.Context, cl *client.Client, locks []string, opts ...client.AcquireOption) (granted <-chan *client.Lease, failed <-chan error) {
	t.Helper()
	grants := make(chan *client.Lease, len(locks))
	failures := make(chan error, len(locks))
	for _, lock := range locks {
		queued := make(chan int, 1)
		go func() {
			l, err := cl.Acquire(ctx, lock, append(slices.Clip(opts), client.OnQueued(func(p int) {
				select { // once is enough: OnQueued is called once an acquire
				case queued <- p:
				default:
				}
			}))...)
			if err != nil {
				failures <- fmt.Errorf("acquiring %s: %w", lock, err)
				return
			}
			grants <- l
		}()
		select {
		case <-queued:
		case l := <-grants:
			t.Fatalf("%s granted at once: it was to wait", l.Name)
		case err := <-failures:
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatalf("%s never queued: %v", lock, ctx.Err())
		}
	}
	return grants, failures
}
