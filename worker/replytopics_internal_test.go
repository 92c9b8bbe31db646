package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
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
		select { // the other lookup holds the lock, waiting for the brokers
		case <-brokers.asked:
		case <-time.After(30 * time.Second):
			t.Fatal("the other lookup never asked the brokers")
		}

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
		if create {
			require.Contains(t, rt.known, "locks.replies.b", "a topic allowed as new counts toward the bound")
		} else {
			require.NotContains(t, rt.known, "locks.replies.b", "a topic allowed as if it existed is not counted")
		}
		rt.knownMu.RUnlock()
	}
}

// Where topics may be created, a topic allowed as new (after the brokers,
// or without asking them behind another's lookup) counts, and past the
// bound it is refused.
func TestReplyTopicsAllowedUnaskedStayBounded(t *testing.T) {
	rt := newReplyTopics(silentBrokers{asked: make(chan struct{}, 1)}, "locks.replies.", 2, true)
	for i, want := range []bool{true, true, false} {
		ok, _ := rt.count(fmt.Sprint("locks.replies.t", i), time.Now())
		require.Equal(t, want, ok, "topic %d", i)
	}
	ok, n := rt.count("locks.replies.t0", time.Now())
	require.True(t, ok, "one counted already is allowed")
	require.Equal(t, 2, n)
}

// deniedBrokers answer each Metadata request naming topics with
// TOPIC_AUTHORIZATION_FAILED for denied and UNKNOWN_TOPIC_OR_PARTITION for
// the others (as a broker whose ACLs refuse the worker DESCRIBE on denied).
type deniedBrokers struct{ denied string }

func (b deniedBrokers) Request(_ context.Context, r kmsg.Request) (kmsg.Response, error) {
	resp := kmsg.NewPtrMetadataResponse()
	for _, t := range r.(*kmsg.MetadataRequest).Topics {
		rt := kmsg.NewMetadataResponseTopic()
		rt.Topic = t.Topic
		rt.ErrorCode = kerr.UnknownTopicOrPartition.Code
		if *t.Topic == b.denied {
			rt.ErrorCode = kerr.TopicAuthorizationFailed.Code
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp, nil
}

// A reply topic the worker may not describe is refused as a missing one
// where topics must exist, and is not the brokers' trouble: a command
// naming it does not open the check, for a second, to every other topic.
func TestReplyTopicDeniedIsNotTrouble(t *testing.T) {
	rt := newReplyTopics(deniedBrokers{denied: "locks.replies.denied"}, "locks.replies.", 10, false)
	ok, _ := rt.allow(context.Background(), "locks.replies.denied")
	require.False(t, ok, "a topic the worker may not describe is refused")
	require.True(t, rt.failed.IsZero(), "an authorization error on the topic asked for is not the brokers failing")
	ok, _ = rt.allow(context.Background(), "locks.replies.missing")
	require.False(t, ok, "a missing topic named next is still refused")
}

// listingBrokers answer Metadata: a lookup of named topics says each is
// missing, and a listing of all (none named) shows existing; listings
// counts those.
type listingBrokers struct {
	existing []string
	listings int
}

func (b *listingBrokers) Request(_ context.Context, r kmsg.Request) (kmsg.Response, error) {
	resp := kmsg.NewPtrMetadataResponse()
	req := r.(*kmsg.MetadataRequest)
	if req.Topics == nil {
		b.listings++
		for _, name := range b.existing {
			rt := kmsg.NewMetadataResponseTopic()
			rt.Topic = kmsg.StringPtr(name)
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil
	}
	for _, t := range req.Topics {
		rt := kmsg.NewMetadataResponseTopic()
		rt.Topic = t.Topic
		rt.ErrorCode = kerr.UnknownTopicOrPartition.Code
		resp.Topics = append(resp.Topics, rt)
	}
	return resp, nil
}

// New reply topics are allowed without listing every topic of the cluster
// for each (a listing names them all, with their partitions: read for each
// new requester, it held appliers for seconds among 10,000 topics): the
// first is, then one a minute; at the bound a listing counts the topics as
// they are, dropping those allowed and never created since.
func TestNewReplyTopicsAreNotListedEachTime(t *testing.T) {
	brokers := &listingBrokers{}
	rt := newReplyTopics(brokers, "locks.replies.", 3, true)
	for i := range 3 {
		ok, n := rt.allow(context.Background(), fmt.Sprint("locks.replies.new-", i))
		require.True(t, ok, "topic %d", i)
		require.Equal(t, i+1, n)
		rt.listed = rt.listed.Add(-2 * time.Second) // as seconds apart
	}
	require.Equal(t, 1, brokers.listings, "the first new topic's listing alone")

	ok, n := rt.allow(context.Background(), "locks.replies.new-3")
	require.False(t, ok, "past the bound")
	require.Equal(t, 3, n)
	require.Equal(t, 2, brokers.listings, "the bound reached: the topics listed")

	// The topics allowed were never created: past pendingCreation a
	// listing no longer counts them, and a new one is allowed.
	rt.knownMu.Lock()
	for name := range rt.known {
		rt.known[name] = time.Now().Add(-2 * pendingCreation)
	}
	rt.knownMu.Unlock()
	rt.listed = time.Time{}
	brokers.existing = []string{"locks.replies.made-by-its-requester", "other.topic"}
	ok, n = rt.allow(context.Background(), "locks.replies.new-4")
	require.True(t, ok)
	require.Equal(t, 2, n, "the one its requester made, and the new one")
}
