package client

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// Under REQUIRE_FENCING_TOKEN a given-up acquire whose release without a
// token is refused (the owner holds a lease) is sent again, and the answer
// to the copy, the outcome stored for it, decides: its grant of the lock to
// the owner is released by its token, whatever a query would list; a
// lock.queued (the copy applied anew, its outcome pruned) is withdrawn by a
// release without one; the acquire's own final refusal ends the give-back
// (the lease the release found is another acquire's); an INVALID_REQUEST
// (a renewal) or another lock's grant leaves the query, whose token
// releases the lease.
func TestAbandonAsksTheAcquireAgain(t *testing.T) {
	grant := func(lock string) func(topics.Command) topics.Event {
		return func(cmd topics.Command) topics.Event {
			ev := granted(cmd, topics.TypeAcquired, 60)
			ev.LockInfo.LockName, ev.LockInfo.FencingToken = lock, 9
			return ev
		}
	}
	byQuery := []string{topics.OpAcquire, topics.OpRelease, topics.OpAcquire, topics.OpQuery, topics.OpRelease, topics.OpQuery}
	for _, tc := range []struct {
		name  string
		again func(topics.Command) topics.Event // the copy's answer
		want  []string
		token int64 // the last release's, 0: none
	}{
		{"granted", grant("job"), []string{topics.OpAcquire, topics.OpRelease, topics.OpAcquire, topics.OpRelease, topics.OpQuery}, 9},
		{"queued anew", queuedEvent, []string{topics.OpAcquire, topics.OpRelease, topics.OpAcquire, topics.OpRelease, topics.OpQuery}, 0},
		{"refused", func(cmd topics.Command) topics.Event { return rejectedEvent(cmd, topics.CodeInvalidRequest) }, byQuery, 5},
		{"another lock's grant", grant("other"), byQuery, 5},
		{"its own final refusal", func(cmd topics.Command) topics.Event { return rejectedEvent(cmd, topics.CodeLockTimeout) },
			[]string{topics.OpAcquire, topics.OpRelease, topics.OpAcquire, topics.OpQuery}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var seen recorder
			var mu sync.Mutex
			asked := map[string]bool{} // the acquires answered
			var owner string
			c, _ := fakeWorkerWith(t, patient, func(_ context.Context, cmd topics.Command) []topics.Event {
				seen.add(cmd)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case cmd.Operation == topics.OpAcquire && asked[cmd.RequestID]:
					return one(tc.again(cmd))
				case cmd.Operation == topics.OpAcquire:
					asked[cmd.RequestID], owner = true, cmd.OwnerID
					return one(queuedEvent(cmd))
				case cmd.Operation == topics.OpRelease && cmd.FencingToken == nil && len(seen.of(topics.OpRelease, 0)) == 1:
					return one(rejectedEvent(cmd, topics.CodeInvalidRequest)) // as under REQUIRE_FENCING_TOKEN
				case cmd.Operation == topics.OpRelease:
					return one(releasedEvent(cmd))
				case cmd.Operation == topics.OpQuery && cmd.LockName == "job":
					ev := statusEvent(cmd)
					ev.LockInfo.OwnerID, ev.LockInfo.Status, ev.LockInfo.FencingToken = owner, topics.StatusAcquired, 5
					return one(ev)
				}
				return one(statusEvent(cmd))
			})
			gone, giveUp := context.WithCancel(ctx)
			defer giveUp()
			_, err := c.Acquire(gone, "job", OnQueued(func(int) { giveUp() }))
			require.ErrorIs(t, err, context.Canceled)
			_, err = c.Query(ctx, "marker")
			require.NoError(t, err)
			require.Equal(t, tc.want, seen.since(0))
			acquires, releases := seen.of(topics.OpAcquire, 0), seen.of(topics.OpRelease, 0)
			require.Equal(t, acquires[0].RequestID, acquires[1].RequestID, "the acquire sent again")
			last := releases[len(releases)-1].FencingToken
			if tc.token == 0 {
				require.Nil(t, last, "a wait withdrawn")
			} else {
				require.NotNil(t, last)
				require.Equal(t, tc.token, *last)
			}
		})
	}
}
