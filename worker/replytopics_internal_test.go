package worker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// silentBrokers answer no request: each waits for its context.
type silentBrokers struct{ asked chan struct{} }

func (b silentBrokers) Request(ctx context.Context, _ kmsg.Request) (kmsg.Response, error) {
	select {
	case b.asked <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// A lookup under a caller's bound (openLookups: an applier holding its
// transaction open) ends with it, also while it waits behind another
// applier's lookup: the topic is allowed as when the brokers do not
// answer, and the caller's bound is not taken for the brokers failing, so
// the other appliers go on asking them.
func TestReplyTopicLookupsEndWithTheCallersBound(t *testing.T) {
	for _, create := range []bool{false, true} {
		brokers := silentBrokers{asked: make(chan struct{}, 1)}
		rt := newReplyTopics(brokers, "locks.replies.", 10, create)
		other, stopOther := context.WithCancel(context.Background())
		otherDone := make(chan struct{})
		go func() {
			defer close(otherDone)
			rt.allow(other, "locks.replies.a")
		}()
		<-brokers.asked // the other lookup holds the lock, waiting for the brokers

		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		ok, _ := rt.allow(ctx, "locks.replies.b")
		cancel()
		require.True(t, ok, "allowed as under the brokers' trouble")
		select {
		case <-otherDone:
			t.Fatal("the bounded lookup waited for the other one")
		default:
		}
		stopOther()
		<-otherDone

		// Its own lookup cut by its bound: allowed, and not the brokers'
		// failure.
		ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
		ok, _ = rt.allow(ctx, "locks.replies.c")
		cancel()
		require.True(t, ok)
		require.True(t, rt.failed.IsZero(), "create %v: a caller's bound is not the brokers failing", create)
		rt.knownMu.RLock()
		require.NotContains(t, rt.known, "locks.replies.b", "a topic allowed under trouble is not counted")
		rt.knownMu.RUnlock()
	}
}
