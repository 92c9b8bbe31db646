package client

import (
	"math"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// SetFetchErrorGrace sets, for the watches test t starts, how long a
// failure streak of their reading lasts before OnFetchError is told of it,
// so that the tests need not wait the 5 s of fetchErrorGrace. The tests of
// package client_test use it too.
func SetFetchErrorGrace(t testing.TB, d time.Duration) {
	old := fetchErrorGrace
	fetchErrorGrace = d
	t.Cleanup(func() { fetchErrorGrace = old })
}

// A failed dial to a broker that does not serve the followed partition (a
// dead seed, another broker kgo asks for metadata) does not replace a
// streak's latest failure, nor does one while the leader is not known,
// which only fills it when the streak has none; a failure of the leader
// does replace it.
func TestFetchErrorsLatestFailure(t *testing.T) {
	leader := int32(1)
	f := &fetchErrors{leader: func() int32 { return leader }}
	dial := func(node int32) {
		f.OnBrokerConnect(kgo.BrokerMetadata{NodeID: node, Host: "127.0.0.1", Port: 9092}, 0, nil, syscall.ECONNREFUSED)
	}
	latest := func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.latest
	}

	dial(2)
	dial(math.MinInt32) // a seed
	require.True(t, f.since.IsZero(), "no streak")

	f.failedReading(kerr.TopicAuthorizationFailed, false)
	since := f.since
	dial(2)
	dial(math.MinInt32)
	require.Equal(t, kerr.TopicAuthorizationFailed, latest(), "not replaced")
	f.fetched()
	leader = -1
	dial(2)
	require.Equal(t, kerr.TopicAuthorizationFailed, latest(), "not replaced while the leader is not known")
	require.Zero(t, f.oks, "but a failure signal")
	require.Equal(t, since, f.since, "of the same streak")
	leader = 1
	dial(1)
	require.ErrorIs(t, latest(), syscall.ECONNREFUSED, "the leader's failure replaces it")
	require.ErrorContains(t, latest(), "connecting to broker 127.0.0.1:9092")

	f.readAgain()
	leader = -1
	dial(2)
	require.False(t, f.since.IsZero(), "a streak begins while the leader is not known")
	require.ErrorIs(t, latest(), syscall.ECONNREFUSED, "its dial error filling latest")
	f.failedReading(kerr.UnknownTopicOrPartition, false)
	require.Equal(t, kerr.UnknownTopicOrPartition, latest(), "a partition's error replaces it")
}
