package client

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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

// Under REQUIRE_FENCING_TOKEN a given-up grant is released by the token the
// query's answer shows only when that answer is a lock.status about the
// lock asked for, as Query takes it (replyStatus): a status of another lock
// showing the owner would release by a token that is not the grant's.
func TestAbandonTakesOnlyTheStatusOfItsLock(t *testing.T) {
	for _, tc := range []struct {
		shown string // the lock the query's answer is about
		want  []string
	}{
		{"job", []string{topics.OpAcquire, topics.OpRelease, topics.OpRelease, topics.OpQuery, topics.OpRelease, topics.OpQuery}},
		{"other", []string{topics.OpAcquire, topics.OpRelease, topics.OpRelease, topics.OpQuery, topics.OpQuery}},
	} {
		t.Run(tc.shown, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var seen recorder
			var owner atomic.Value
			c, _ := fakeWorkerWith(t, patient, func(ctx context.Context, cmd topics.Command) []topics.Event {
				seen.add(cmd)
				switch {
				case cmd.Operation == topics.OpAcquire:
					owner.Store(cmd.OwnerID)
					ev := granted(cmd, topics.TypeAcquired, 0) // refused: no lease_duration
					ev.LockInfo.FencingToken = 7
					return one(ev)
				case cmd.Operation == topics.OpRelease && cmd.FencingToken == nil:
					return one(rejectedEvent(cmd, topics.CodeInvalidRequest)) // as under REQUIRE_FENCING_TOKEN
				case cmd.Operation == topics.OpRelease && *cmd.FencingToken == 7:
					return one(rejectedEvent(cmd, topics.CodeTokenMismatch))
				case cmd.Operation == topics.OpRelease:
					return one(releasedEvent(cmd))
				case cmd.Operation == topics.OpQuery && cmd.LockName == "job":
					ev := statusEvent(cmd)
					ev.LockInfo.LockName = tc.shown
					ev.LockInfo.OwnerID, ev.LockInfo.Status, ev.LockInfo.FencingToken = owner.Load().(string), topics.StatusAcquired, 5
					return one(ev)
				case cmd.Operation == topics.OpQuery:
					return one(statusEvent(cmd))
				}
				return nil
			})
			_, err := c.Acquire(ctx, "job")
			require.ErrorContains(t, err, "lock.acquired with lease_duration 0")
			_, err = c.Query(ctx, "marker")
			require.NoError(t, err)
			require.Equal(t, tc.want, seen.since(0))
			if tc.shown == "job" {
				seen.mu.Lock()
				require.EqualValues(t, 5, *seen.cmds[4].FencingToken, "the token the query showed")
				seen.mu.Unlock()
			}
		})
	}
}
