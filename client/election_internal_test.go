package client

import (
	"testing"

	"github.com/stretchr/testify/require"
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
