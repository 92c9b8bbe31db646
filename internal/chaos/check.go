// Package chaos runs lockworker replicas as real processes on a standalone
// broker (cmd/devkafka), kills and restarts them under load, and checks
// from the replies alone that no fault broke the lock contract:
//
//   - no two holders of a lock overlap (by database time, the one clock),
//   - fencing tokens rise in grant order,
//   - every command is answered, and exactly once: every reply to a
//     request_id, resends included, is the same event.
//
// The chaos test (TestChaos) runs in the normal test suite; lockbench's
// failover scenario uses the same Cluster and Load to measure failover.
package chaos

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/omninode/lockworker/topics"
)

// History is what requesters saw: the request_ids they sent (each once,
// however often it was resent) and every reply event they read, duplicates
// included, in any order.
type History struct {
	Sent    []string
	Replies []topics.Event
}

// maxViolations bounds Check's report; the first few tell the story.
const maxViolations = 20

// lease is one grant of a lock (one fencing token) as the replies tell it.
type lease struct {
	token int64
	owner string
	start time.Time
	end   time.Time // min(latest expires_at, release time)
}

// Check returns an error listing every violation of the contract it finds
// in h (at most maxViolations), or nil.
func Check(h History) error {
	var errs []error
	fail := func(format string, args ...any) {
		if len(errs) < maxViolations {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}

	// Exactly one answer per request. lock.queued is a waiting acquire's
	// first word, not its answer, so it may precede one.
	answers := map[string]string{} // request_id -> event_id
	for _, ev := range h.Replies {
		if ev.RequestID == "" || ev.Type == topics.TypeQueued {
			continue
		}
		if prev, ok := answers[ev.RequestID]; ok && prev != ev.EventID {
			fail("request %s answered twice: events %s and %s (%s)", ev.RequestID, prev, ev.EventID, ev.Type)
			continue
		}
		answers[ev.RequestID] = ev.EventID
	}
	for _, rid := range h.Sent {
		if _, ok := answers[rid]; !ok {
			fail("request %s never answered", rid)
		}
	}

	// Leases per lock, keyed by token.
	locks := map[string]map[int64]*lease{}
	get := func(li *topics.LockInfo) *lease {
		key := li.Namespace + "/" + li.LockName
		if locks[key] == nil {
			locks[key] = map[int64]*lease{}
		}
		l := locks[key][li.FencingToken]
		if l == nil {
			l = &lease{token: li.FencingToken, owner: li.OwnerID}
			locks[key][li.FencingToken] = l
		}
		return l
	}
	// Two passes: a release cuts its lease short only once every
	// expires_at of the lease (extends included) is known.
	for pass := range 2 {
		for _, ev := range h.Replies {
			li := ev.LockInfo
			if li == nil || li.FencingToken == 0 || !ev.Success {
				continue
			}
			released := ev.Type == topics.TypeReleased
			switch {
			case pass == 1 && released:
				if l := get(li); ev.OccurredAt.Before(l.end) {
					l.end = ev.OccurredAt.Time
				}
				continue
			case pass == 1 || released:
				continue
			case ev.Type != topics.TypeAcquired && ev.Type != topics.TypeExtended && ev.Type != topics.TypeExpired:
				continue
			}
			l := get(li)
			if l.owner != li.OwnerID {
				fail("lock %s token %d held by %s and by %s", li.LockName, li.FencingToken, l.owner, li.OwnerID)
			}
			if li.AcquiredAt != nil && (l.start.IsZero() || li.AcquiredAt.Before(l.start)) {
				l.start = li.AcquiredAt.Time
			}
			if li.ExpiresAt != nil && li.ExpiresAt.After(l.end) {
				l.end = li.ExpiresAt.Time
			}
		}
	}

	for key, byToken := range locks {
		ls := make([]*lease, 0, len(byToken))
		for _, l := range byToken {
			if !l.start.IsZero() { // only its release or expiry seen: nothing to order by
				ls = append(ls, l)
			}
		}
		sort.Slice(ls, func(i, j int) bool {
			if !ls[i].start.Equal(ls[j].start) {
				return ls[i].start.Before(ls[j].start)
			}
			return ls[i].token < ls[j].token
		})
		for i := 1; i < len(ls); i++ {
			prev, cur := ls[i-1], ls[i]
			if cur.token <= prev.token {
				fail("lock %s: token %d (%s, granted %s) after token %d (%s, granted %s): tokens must rise in grant order",
					key, cur.token, cur.owner, stamp(cur.start), prev.token, prev.owner, stamp(prev.start))
			}
			if cur.start.Before(prev.end) {
				fail("lock %s held twice: %s (token %d) from %s while %s (token %d) held it until %s",
					key, cur.owner, cur.token, stamp(cur.start), prev.owner, prev.token, stamp(prev.end))
			}
		}
	}
	return errors.Join(errs...)
}

func stamp(t time.Time) string { return t.Format("15:04:05.000000") }
