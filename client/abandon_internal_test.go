package client

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/omninode/lockworker/topics"
)

// A given-up grant under REQUIRE_FENCING_TOKEN is released with the token a
// query tells: its holder entry, or, when the holders list was cut before
// it (MaxHoldersShown, MaxHoldersBytes), lock_info's own, the newest
// holder, which the given-up grant likely is.
func TestOwnersToken(t *testing.T) {
	listed := &topics.LockInfo{OwnerID: "newest", Status: topics.StatusAcquired, FencingToken: 9, Holders: []topics.Holder{
		{OwnerID: "old", Status: topics.StatusAcquired, FencingToken: 3},
		{OwnerID: "stale", Status: topics.StatusExpired, FencingToken: 4},
	}}
	for _, tc := range []struct {
		owner string
		token int64
		ok    bool
	}{
		{"old", 3, true},
		{"newest", 9, true}, // cut off the list: lock_info's
		{"stale", 0, false}, // its lease ran out
		{"nobody", 0, false},
	} {
		token, ok := ownersToken(listed, tc.owner)
		assert.Equal(t, tc.ok, ok, tc.owner)
		assert.Equal(t, tc.token, token, tc.owner)
	}
	expired := &topics.LockInfo{OwnerID: "newest", Status: topics.StatusExpired, FencingToken: 9}
	_, ok := ownersToken(expired, "newest")
	assert.False(t, ok, "lock_info's lease ran out")
}
