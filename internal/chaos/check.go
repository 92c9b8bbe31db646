// Package chaos runs lockworker replicas as real processes on a standalone
// broker (cmd/devkafka), kills and restarts them under load, and checks
// from the replies alone that no fault broke the lock contract:
//
//   - no two holders of a lock overlap (by database time, the one clock),
//     except as its mode and limit allow: shared holders together, never
//     beside an exclusive one, and at most limit exclusive holders,
//   - fencing tokens rise in grant order,
//   - a lease ends once: no event of its token comes at a later revision
//     than its lock.released or lock.expired,
//   - every command is answered, and exactly once: every reply to a
//     request_id, resends included, is the same event (a load's patient
//     contenders never resend, so a reply committed and then lost leaves
//     their command unanswered, where a resend would be answered from
//     the stored outcome),
//   - no lock's revision goes back in the lock state topic the first time
//     it is published (CheckStateOrder),
//   - election candidates (Election, through the SDK) never lead two at a
//     time: terms do not overlap, fencing tokens rise from leader to
//     leader, and a fenced resource never sees a token go back
//     (CheckTerms).
//
// The chaos test (TestChaos) runs in the normal test suite; lockbench's
// failover scenario uses the same Cluster and Load to measure failover.
package chaos

import (
	"errors"
	"fmt"
	"maps"
	"slices"
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
	token  int64
	owner  string
	shared bool
	limit  int
	start  time.Time
	end    time.Time // min(latest expires_at, release time)
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
			l.shared, l.limit = li.Mode == topics.ModeShared, max(li.Limit, 1)
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

	checkRevisions(h, fail)
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
		var active []*lease // leases in force when cur starts
		for i, cur := range ls {
			if i > 0 && cur.token <= ls[i-1].token {
				prev := ls[i-1]
				fail("lock %s: token %d (%s, granted %s) after token %d (%s, granted %s): tokens must rise in grant order",
					key, cur.token, cur.owner, stamp(cur.start), prev.token, prev.owner, stamp(prev.start))
			}
			active = slices.DeleteFunc(active, func(a *lease) bool { return !cur.start.Before(a.end) })
			if other, exclusives := conflict(cur, active); other != nil {
				if cur.limit > 1 && !cur.shared && !other.shared {
					fail("lock %s over its limit %d: %s (token %d) from %s beside %d exclusive holders, %s (token %d) until %s among them",
						key, cur.limit, cur.owner, cur.token, stamp(cur.start), exclusives, other.owner, other.token, stamp(other.end))
				} else {
					fail("lock %s held twice: %s (token %d) from %s while %s (token %d) held it until %s",
						key, cur.owner, cur.token, stamp(cur.start), other.owner, other.token, stamp(other.end))
				}
			}
			active = append(active, cur)
		}
	}
	return errors.Join(errs...)
}

// conflict returns a lease in force that cur may not hold beside, and how
// many exclusive leases are in force: a shared lease conflicts with an
// exclusive one; an exclusive one with a shared one, or with limit others.
func conflict(cur *lease, active []*lease) (*lease, int) {
	var exclusive, shared *lease
	n := 0
	for _, a := range active {
		if a.shared {
			shared = a
		} else {
			exclusive, n = a, n+1
		}
	}
	switch {
	case cur.shared && exclusive != nil:
		return exclusive, n
	case !cur.shared && shared != nil:
		return shared, n
	case !cur.shared && n >= cur.limit:
		return exclusive, n
	}
	return nil, n
}

func stamp(t time.Time) string { return t.Format("15:04:05.000000") }

// checkRevisions checks the lock revisions the replies carry (histories
// without them are skipped): a lock's grants never fall in revision as
// tokens rise, a lease ends at a later revision than it began, and nothing
// of a lease comes after its end: a grant, extension or end of its token at
// a later revision is a lease ended twice, or alive after its end (a
// release answered but lost, the lease renewed or expired later). The
// times cannot tell: a release cuts its lease short whatever follows.
func checkRevisions(h History, fail func(string, ...any)) {
	type span struct {
		granted, ended int64
		endedAs        string // the type of the end at ended
		flagged        bool
	}
	locks := map[string]map[int64]*span{}
	spanOf := func(ev topics.Event) (string, *span) {
		li := ev.LockInfo
		if li == nil || li.Revision == 0 || li.FencingToken == 0 || !ev.Success {
			return "", nil
		}
		key := li.Namespace + "/" + li.LockName
		if locks[key] == nil {
			locks[key] = map[int64]*span{}
		}
		s := locks[key][li.FencingToken]
		if s == nil {
			s = &span{}
			locks[key][li.FencingToken] = s
		}
		return key, s
	}
	for _, ev := range h.Replies {
		_, s := spanOf(ev)
		if s == nil {
			continue
		}
		rev := ev.LockInfo.Revision
		switch ev.Type {
		case topics.TypeAcquired: // a renewal comes later: the grant is the first
			if s.granted == 0 || rev < s.granted {
				s.granted = rev
			}
		case topics.TypeReleased, topics.TypeExpired: // the first end
			if s.ended == 0 || rev < s.ended {
				s.ended, s.endedAs = rev, ev.Type
			}
		}
	}
	for _, ev := range h.Replies {
		key, s := spanOf(ev)
		if s == nil || s.flagged || s.ended == 0 || ev.LockInfo.Revision <= s.ended {
			continue
		}
		switch ev.Type {
		case topics.TypeAcquired, topics.TypeExtended, topics.TypeReleased, topics.TypeExpired:
			s.flagged = true
			fail("lock %s: token %d %s at revision %d, after its %s at revision %d: a lease ended twice, or alive after its end",
				key, ev.LockInfo.FencingToken, ev.Type, ev.LockInfo.Revision, s.endedAs, s.ended)
		}
	}
	for key, spans := range locks {
		tokens := slices.Sorted(maps.Keys(spans))
		var prev int64
		for _, tok := range tokens {
			s := spans[tok]
			if s.granted == 0 {
				continue
			}
			if s.granted < prev { // equal: granted together, by one change
				fail("lock %s: token %d granted at revision %d, before the grant of an earlier token (revision %d)", key, tok, s.granted, prev)
			}
			if s.ended != 0 && s.ended <= s.granted {
				fail("lock %s: token %d ended at revision %d, not after its grant at %d", key, tok, s.ended, s.granted)
			}
			prev = s.granted
		}
	}
}
