package chaos

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// TestCheck feeds Check crafted histories: a clean one, and one per kind of
// violation it must catch.
func TestCheck(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	info := func(owner string, token int64, acquired, expires int) *topics.LockInfo {
		return &topics.LockInfo{LockName: "L", OwnerID: owner, FencingToken: token,
			AcquiredAt: topics.NewTimePtr(at(acquired)), ExpiresAt: topics.NewTimePtr(at(expires))}
	}
	ev := func(id, typ, rid string, occurred int, li *topics.LockInfo) topics.Event {
		e := topics.NewEvent(typ, "x", rid, at(occurred))
		e.EventID, e.LockInfo = id, li
		return e
	}
	rejected := func(id, rid string) topics.Event {
		e := ev(id, topics.TypeRejected, rid, 0, nil)
		e.ErrorCode = "LOCK_HELD"
		return e
	}
	// a holds L (token 1) 0..1000 and releases at 500; b gets token 2 at 600
	// and its lease expires at 1600; c extends nothing, is refused.
	clean := History{
		Sent: []string{"r1", "r2", "r3", "r4"},
		Replies: []topics.Event{
			ev("e1", topics.TypeAcquired, "r1", 0, info("a", 1, 0, 1000)),
			ev("e2", topics.TypeReleased, "r2", 500, info("a", 1, 0, 1000)),
			ev("e3", topics.TypeAcquired, "r3", 600, info("b", 2, 600, 1600)),
			ev("e3", topics.TypeAcquired, "r3", 600, info("b", 2, 600, 1600)), // redelivered: same event
			rejected("e4", "r4"),
			ev("e5", topics.TypeExpired, "", 1700, info("b", 2, 600, 1600)),
		},
	}
	require.NoError(t, Check(clean))

	type checkCase struct {
		name string
		edit func(h *History)
		want string
	}
	cases := []checkCase{
		{"unanswered", func(h *History) { h.Sent = append(h.Sent, "r5") }, "request r5 never answered"},
		{"answered twice", func(h *History) { h.Replies = append(h.Replies, rejected("e9", "r4")) }, "request r4 answered twice"},
		{"overlap after release", func(h *History) {
			h.Replies[2] = ev("e3", topics.TypeAcquired, "r3", 400, info("b", 2, 400, 1400)) // before a's release at 500
		}, "lock /L held twice: b (token 2)"},
		{"overlap with an extended lease", func(h *History) {
			h.Replies[1] = ev("e2", topics.TypeExtended, "r2", 500, info("a", 1, 0, 2000)) // a now holds until 2000
		}, "held twice"},
		{"token falls", func(h *History) {
			h.Replies[2] = ev("e3", topics.TypeAcquired, "r3", 600, info("b", 1, 600, 1600))
		}, "held by a and by b"},
		{"token falls in grant order", func(h *History) {
			h.Replies[0] = ev("e1", topics.TypeAcquired, "r1", 0, info("a", 3, 0, 1000))
			h.Replies[1] = ev("e2", topics.TypeReleased, "r2", 500, info("a", 3, 0, 1000))
		}, "tokens must rise in grant order"},
	}
	// A read/write lock R and a semaphore S of 2, within their rules: two
	// readers together, then a writer; two holders of S at once.
	modes := func(lock, mode string, limit int, owner string, token int64, acquired, expires int) *topics.LockInfo {
		li := info(owner, token, acquired, expires)
		li.LockName, li.Mode, li.Limit = lock, mode, limit
		return li
	}
	modal := History{Sent: []string{"m1", "m2", "m3", "m4", "m5"}, Replies: []topics.Event{
		ev("m1", topics.TypeAcquired, "m1", 0, modes("R", topics.ModeShared, 1, "r1", 10, 0, 1000)),
		ev("m2", topics.TypeAcquired, "m2", 100, modes("R", topics.ModeShared, 1, "r2", 11, 100, 1000)),
		ev("m3", topics.TypeAcquired, "m3", 1000, modes("R", topics.ModeExclusive, 1, "w", 12, 1000, 2000)),
		ev("m4", topics.TypeAcquired, "m4", 0, modes("S", topics.ModeExclusive, 2, "s1", 20, 0, 1000)),
		ev("m5", topics.TypeAcquired, "m5", 10, modes("S", topics.ModeExclusive, 2, "s2", 21, 10, 1000)),
	}}
	require.NoError(t, Check(modal))
	for name, tc := range map[string]struct {
		extra topics.Event
		want  string
	}{
		"writer beside readers":    {ev("m6", topics.TypeAcquired, "m6", 500, modes("R", topics.ModeExclusive, 1, "w2", 13, 500, 900)), "lock /R held twice: w2"},
		"reader beside a writer":   {ev("m6", topics.TypeAcquired, "m6", 1500, modes("R", topics.ModeShared, 1, "r3", 13, 1500, 1900)), "lock /R held twice: r3"},
		"semaphore over its limit": {ev("m6", topics.TypeAcquired, "m6", 20, modes("S", topics.ModeExclusive, 2, "s3", 22, 20, 900)), "lock /S over its limit 2: s3"},
	} {
		h := History{Sent: append(append([]string(nil), modal.Sent...), "m6"), Replies: append(append([]topics.Event(nil), modal.Replies...), tc.extra)}
		err := Check(h)
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), tc.want, name)
	}

	// With revisions: a grant at 1, its release at 2, the next grant at 2
	// (the same change), its expiry at 3.
	revised := func(h *History, revs ...int64) {
		for i, r := range revs {
			if li := h.Replies[i].LockInfo; li != nil {
				c := *li
				c.Revision = r
				h.Replies[i].LockInfo = &c
			}
		}
	}
	withRevs := History{Sent: clean.Sent, Replies: slices.Clone(clean.Replies)}
	revised(&withRevs, 1, 2, 2, 2, 0, 3)
	require.NoError(t, Check(withRevs))
	// after adds to the revised history an answer to a new request rid, of
	// typ for lease li at revision rev.
	after := func(h *History, id, typ, rid string, occurred int, li *topics.LockInfo, rev int64) {
		revised(h, 1, 2, 2, 2, 0, 3)
		li.Revision = rev
		h.Sent = append(h.Sent, rid)
		h.Replies = append(h.Replies, ev(id, typ, rid, occurred, li))
	}
	cases = append(cases,
		checkCase{"revision falls as tokens rise", func(h *History) { revised(h, 3, 4, 2, 2, 0, 5) }, "token 2 granted at revision 2, before"},
		checkCase{"lease ends at its grant's revision", func(h *History) { revised(h, 1, 1, 2, 2, 0, 3) }, "token 1 ended at revision 1"},
		// a's release was answered, and lost: its next acquire renews token
		// 1 (times alone see a lease cut short at its release).
		checkCase{"renewed after its release", func(h *History) {
			after(h, "e6", topics.TypeAcquired, "r6", 700, info("a", 1, 0, 1700), 4)
		}, "token 1 lock.acquired at revision 4, after its lock.released at revision 2"},
		checkCase{"expired after its release", func(h *History) {
			after(h, "e6", topics.TypeExpired, "", 1100, info("a", 1, 0, 1000), 4)
		}, "token 1 lock.expired at revision 4, after its lock.released at revision 2"},
		checkCase{"extended after its expiry", func(h *History) {
			after(h, "e6", topics.TypeExtended, "r6", 1800, info("b", 2, 600, 2600), 4)
		}, "token 2 lock.extended at revision 4, after its lock.expired at revision 3"},
		checkCase{"expired twice", func(h *History) {
			after(h, "e6", topics.TypeExpired, "", 1900, info("b", 2, 600, 1600), 4)
		}, "token 2 lock.expired at revision 4, after its lock.expired at revision 3"},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := History{Sent: append([]string(nil), clean.Sent...), Replies: append([]topics.Event(nil), clean.Replies...)}
			tc.edit(&h)
			err := Check(h)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
