package client

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// A stale leader (an older token's revision read after a newer one's, as a
// record published again may be) is never reported: observe drops any
// leader at or below the newest token it took, even one still waiting for
// its receiver.
func TestObserveSkipsStaleLeader(t *testing.T) {
	states, out := make(chan LockRevision), make(chan Leader)
	go observe(states, out)
	leader := func(token int64) LockRevision {
		return LockRevision{Name: "job", Status: StatusAcquired, Holders: []Holder{{Token: token}}}
	}
	// 4 comes while 5 waits for the receiver: it must not replace it.
	states <- leader(5)
	states <- leader(4)
	require.Equal(t, int64(5), (<-out).Token)
	states <- leader(6)
	require.Equal(t, int64(6), (<-out).Token)
	close(states)
	_, open := <-out
	require.False(t, open, "only 5 and 6 are reported")
}

// TestCampaignGoesOnAfterAGrantEndedFirst: a campaign whose grant's end
// (the worker's lock.expired, as after the host slept while the grant was
// on its way) is read before Campaign took the grant up counts it a late
// grant and campaigns again, rather than return a Leadership lost already
// with a nil error. Nothing is given back: the worker ended it.
func TestCampaignGoesOnAfterAGrantEndedFirst(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var acquires atomic.Int32
	var seen recorder
	a := leaseAnswers(30, 30)
	a[topics.OpAcquire] = func(_ context.Context, cmd topics.Command) []topics.Event {
		if acquires.Add(1) == 1 {
			return endedFirst(cmd, topics.TypeExpired, 1)
		}
		g := granted(cmd, topics.TypeAcquired, 30)
		g.LockInfo.FencingToken = 2
		return one(g)
	}
	c := fakeWorker(t, a.by(&seen))
	ld, err := NewElection(c, "leader").Campaign(ctx, "me")
	require.NoError(t, err)
	require.NoError(t, ld.Err(), "a Leadership lost already")
	require.Equal(t, int64(2), ld.Token)
	require.Equal(t, []string{topics.OpAcquire, topics.OpAcquire}, seen.since(0), "not one new campaign after the ended grant")
	require.NoError(t, ld.Resign(ctx))
}

// A campaign value within the bound as jsonb stores it but over it as sent
// (Go's encoder writes U+2028 as 6 bytes, jsonb as 3) is refused before
// anything is sent, as the workers would refuse it.
func TestCampaignValueBoundAsSent(t *testing.T) {
	value := strings.Repeat("\u2028", 1300)
	md := CampaignMetadata(value)
	require.Greater(t, len(md), topics.MaxOwnerMetadataBytes)
	require.LessOrEqual(t, topics.MetadataBytes(md), topics.MaxOwnerMetadataBytes)
	_, err := NewElection(&Client{}, "e").Campaign(context.Background(), value)
	require.ErrorIs(t, err, ErrInvalidRequest)
}
