package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/omninode/lockworker/client"
)

// QueueWaiters queues an acquire of each of locks by cl, with opts, one
// after another, and returns the channel their grants come on. An acquire
// that fails, is granted at once, or has not queued when ctx ends fails the
// test, rather than leaving it to wait for a grant until go test's timeout.
func QueueWaiters(t testing.TB, ctx context.Context, cl *client.Client, locks []string, opts ...client.AcquireOption) <-chan *client.Lease {
	t.Helper()
	granted := make(chan *client.Lease, len(locks))
	failed := make(chan error, len(locks))
	for _, lock := range locks {
		queued := make(chan int, 1)
		go func() {
			l, err := cl.Acquire(ctx, lock, append(slices.Clip(opts), client.OnQueued(func(p int) { queued <- p }))...)
			if err != nil {
				failed <- fmt.Errorf("acquiring %s: %w", lock, err)
				return
			}
			granted <- l
		}()
		select {
		case <-queued:
		case l := <-granted:
			t.Fatalf("%s granted at once: it was to wait", l.Name)
		case err := <-failed:
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatalf("%s never queued: %v", lock, ctx.Err())
		}
	}
	return granted
}
