package rules

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The rules end the leases a decision ends in one pass (Lock.endLeases);
// these are the decisions as they were when they ended them one at a time
// (EndLease each), the reference that pass must agree with, effect for
// effect: the same leases in the same order, each effect's lock_info
// counting the holders still to end after it, the same lock-delay and the
// same lease that ended last.

func oldSettleExpired(l *Lock) (effs []Effect, ended []string) {
	l.delayed()
	for i := 0; i < len(l.Holders); {
		if l.Holders[i].Live(l.Now) {
			i++
			continue
		}
		h := l.EndLease(i, Expired)
		effs = append(effs, Effect{Kind: Expire, Holder: h, Info: l.about(h, Expired)})
		ended = append(ended, h.Owner)
	}
	return effs, ended
}

func oldExpire(l *Lock) []Effect {
	effs, _ := oldSettleExpired(l)
	effs = append(effs, l.HandOff()...)
	return append(effs, l.TimeOut()...)
}

func oldLoseLapsed(l *Lock, i int) Effect {
	h := l.EndLease(i, Expired)
	return Effect{Kind: Lose, Holder: h, Reason: ReasonSessionExpired, Info: l.about(h, Expired)}
}

func oldLapsed(l *Lock, owner string) []Effect {
	i := l.holder(owner)
	if i < 0 || l.Holders[i].Session == "" || l.Holders[i].ExpiresAt.After(l.Now) {
		return nil
	}
	return []Effect{oldLoseLapsed(l, i)}
}

func oldRevoke(l *Lock, owner, key string) []Effect {
	effs, _ := oldSettleExpired(l)
	for i := 0; i < len(l.Holders); {
		h := &l.Holders[i]
		if owner != "" && h.Owner != owner || l.sessionLive(h.Session, &h.ExpiresAt) {
			i++
			continue
		}
		effs = append(effs, oldLoseLapsed(l, i))
	}
	n := len(effs)
	for i := 0; i < len(l.Holders); {
		if owner != "" && l.Holders[i].Owner != owner {
			i++
			continue
		}
		h := l.EndLease(i, Revoked)
		effs = append(effs, Effect{Kind: Revoke, Holder: h, Info: l.about(h, Revoked)})
	}
	revoked := len(effs) > n
	effs = append(effs, l.HandOff()...)
	switch {
	case revoked:
		return effs
	case owner != "":
		return append(effs, l.refuse(CodeNotHeld, fmt.Sprintf("%q does not hold lock %q", owner, key)))
	}
	return append(effs, l.refuse(CodeNotHeld, fmt.Sprintf("lock %q is not held", key)))
}

func oldEndSessions(l *Lock, ids []string, waits []Waiter, reason string) []Effect {
	var effs []Effect
	for _, w := range waits {
		l.withdraw(w)
		effs = append(effs, Effect{Kind: Drop, Waiter: w, Reason: reason, Info: l.Info()})
	}
	settled, _ := oldSettleExpired(l)
	effs = append(effs, settled...)
	status := Expired
	if reason == ReasonSessionClosed {
		status = Released
	}
	for i := 0; i < len(l.Holders); {
		if !slices.Contains(ids, l.Holders[i].Session) {
			i++
			continue
		}
		h := l.EndLease(i, status)
		effs = append(effs, Effect{Kind: Lose, Holder: h, Reason: reason, Info: l.about(h, status)})
	}
	return append(effs, l.HandOff()...)
}

// randomLock is a lock (a read/write lock held by readers or a writer, or
// a semaphore) whose holders' leases end at mixed times around its Now
// (many of them at one time, as a hand-off's run granted together), some
// kept by sessions past their expiry or not, with lock-delays, and
// waiters behind them.
func randomLock(r *rand.Rand) *Lock {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sec := func(n int) time.Time { return now.Add(time.Duration(n) * time.Second) }
	l := &Lock{Limit: 1, Now: now, Acquisitions: int64(r.IntN(1000))}
	n := r.IntN(60)
	if r.IntN(10) == 0 {
		n = 200 + r.IntN(800)
	}
	mode := Shared
	switch r.IntN(3) {
	case 0: // a semaphore
		mode, l.Limit = Exclusive, n+r.IntN(3)
	case 1: // a writer
		mode, n = Exclusive, min(n, 1)
	}
	together := sec(r.IntN(11) - 5)
	token := int64(r.IntN(100))
	for i := range n {
		token += 1 + int64(r.IntN(3))
		h := Holder{Owner: fmt.Sprintf("o%d", i), Mode: mode, Token: token, AcquiredAt: sec(-40 + r.IntN(10)), Lease: 30,
			Metadata: fmt.Appendf(nil, `{"i":%d}`, i), RequestID: fmt.Sprintf("req-%d", i), Partition: int32(r.IntN(4)),
			LockDelay: []float64{0, 0, 1, 5, 30, 0.25}[r.IntN(6)]}
		switch k := r.IntN(10); {
		case k < 5:
			h.ExpiresAt = together
		case k < 8:
			h.ExpiresAt = sec(r.IntN(21) - 10)
		default:
			h.Session = fmt.Sprintf("s%d", r.IntN(3))
			h.ExpiresAt = sec(r.IntN(9) - 4)
		}
		l.Holders = append(l.Holders, h)
	}
	switch r.IntN(3) {
	case 0:
		l.DelayUntil = sec(r.IntN(11) - 5)
	case 1:
		l.Ended, l.EndedStatus = &Holder{Owner: "gone", Token: 1, ExpiresAt: sec(-100)}, Released
	}
	for i := range r.IntN(5) {
		w := Waiter{ID: int64(i + 1), Owner: fmt.Sprintf("w%d", i), Mode: []Mode{Shared, Exclusive}[r.IntN(2)], Lease: 10,
			Deadline: sec(r.IntN(21) - 5), RequestID: fmt.Sprintf("wreq-%d", i)}
		if l.Limit > 1 {
			w.Mode = Exclusive
		}
		if r.IntN(3) == 0 {
			w.Session, w.SessionExpires = fmt.Sprintf("s%d", r.IntN(3)), sec(r.IntN(9)-4)
		}
		if w.Deadline.After(now) {
			l.Head = append(l.Head, w)
		} else {
			l.Due = append(l.Due, w)
		}
		l.Waiting++
	}
	return l
}

// copyOf is a copy of l that shares none of its state, drawing fencing
// tokens after its holders', and asking SessionLive, when asked is not
// nil, of a session renewed meanwhile (s1: those of the others have
// ended), recording the questions in asked.
func copyOf(l *Lock, asked *[]string) *Lock {
	c := *l
	c.Holders, c.Head, c.Due = slices.Clone(l.Holders), slices.Clone(l.Head), slices.Clone(l.Due)
	token := int64(1000)
	c.NextTokens = func(n int) []int64 {
		ts := make([]int64, n)
		for i := range ts {
			token++
			ts[i] = token
		}
		return ts
	}
	if asked != nil {
		c.SessionLive = func(id string) (time.Time, bool) {
			*asked = append(*asked, id)
			return l.Now.Add(time.Minute), id == "s1"
		}
	}
	return &c
}

// lockState is what a decision leaves of a lock.
type lockState struct {
	Limit        int
	Holders      []Holder
	Head, Due    []Waiter
	Mine         *Waiter
	Waiting      int
	Ended        *Holder
	EndedStatus  Status
	Acquisitions int64
	DelayUntil   time.Time
}

func stateOf(l *Lock) lockState {
	return lockState{l.Limit, l.Holders, l.Head, l.Due, l.Mine, l.Waiting, l.Ended, l.EndedStatus, l.Acquisitions, l.DelayUntil}
}

// Every decision that ends leases (the expiry step and each command's
// settling, a revoke of one owner or of all, the end of sessions, an
// acquire's end of its owner's lapsed lease) ends them as one EndLease at a
// time did: the same effects and events, in the same order, the holders
// left in their order, and the same lock after, on random locks whose
// live holders lie between those that end.
func TestEndingLeasesTogetherAsOneByOne(t *testing.T) {
	type decision struct {
		name     string
		new, old func(l *Lock) ([]Effect, []string)
	}
	many := 0 // decisions that ended two leases or more around one left
	for seed := uint64(1); seed <= 500; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		base := randomLock(r)
		owner := "nobody"
		if len(base.Holders) > 0 {
			owner = base.Holders[r.IntN(len(base.Holders))].Owner
		}
		ids := []string{"s0", "s1", "s2"}[:1+r.IntN(3)]
		reason := []string{ReasonSessionClosed, ReasonSessionExpired}[r.IntN(2)]
		waits := func(l *Lock) []Waiter {
			return slices.DeleteFunc(slices.Concat(l.Due, l.Head), func(w Waiter) bool { return !slices.Contains(ids, w.Session) })
		}
		only := func(f func(l *Lock) []Effect) func(l *Lock) ([]Effect, []string) {
			return func(l *Lock) ([]Effect, []string) { return f(l), nil }
		}
		for _, d := range []decision{
			{"settle", func(l *Lock) ([]Effect, []string) { return l.settleExpired() }, oldSettleExpired},
			{"expire", only(func(l *Lock) []Effect { return l.Expire() }), only(oldExpire)},
			{"revoke all", only(func(l *Lock) []Effect { return l.Revoke("", "/k") }), only(func(l *Lock) []Effect { return oldRevoke(l, "", "/k") })},
			{"revoke " + owner, only(func(l *Lock) []Effect { return l.Revoke(owner, "/k") }),
				only(func(l *Lock) []Effect { return oldRevoke(l, owner, "/k") })},
			{fmt.Sprintf("end %v %s", ids, reason), only(func(l *Lock) []Effect { return l.EndSessions(ids, waits(l), reason) }),
				only(func(l *Lock) []Effect { return oldEndSessions(l, ids, waits(l), reason) })},
			{"lapsed " + owner, func(l *Lock) ([]Effect, []string) {
				effs, ended := l.settleExpired()
				return append(effs, l.lapsed(owner)...), ended
			}, func(l *Lock) ([]Effect, []string) {
				effs, ended := oldSettleExpired(l)
				return append(effs, oldLapsed(l, owner)...), ended
			}},
		} {
			for _, ask := range []bool{false, true} {
				var gotAsked, wantAsked []string
				got, want := copyOf(base, nil), copyOf(base, nil)
				if ask {
					got, want = copyOf(base, &gotAsked), copyOf(base, &wantAsked)
				}
				gotEffs, gotEnded := d.new(got)
				wantEffs, wantEnded := d.old(want)
				msg := fmt.Sprintf("seed %d: %s (SessionLive: %t)", seed, d.name, ask)
				require.Equal(t, wantEffs, gotEffs, msg)
				require.Equal(t, wantEnded, gotEnded, msg)
				require.Equal(t, stateOf(want), stateOf(got), msg)
				require.Equal(t, wantAsked, gotAsked, msg)
				if interleaved(base.Holders, gotEffs) {
					many++
				}
			}
		}
	}
	t.Logf("%d decisions ended two leases or more around one left", many)
	require.Positive(t, many)
}

// interleaved reports whether effs ended two of holders or more with one
// left between them.
func interleaved(holders []Holder, effs []Effect) bool {
	var ended []int64
	for _, e := range effs {
		if e.Kind == Expire || e.Kind == Revoke || e.Kind == Lose {
			ended = append(ended, e.Holder.Token)
		}
	}
	if len(ended) < 2 {
		return false
	}
	lo, hi := slices.Min(ended), slices.Max(ended)
	return slices.ContainsFunc(holders, func(h Holder) bool { return h.Token > lo && h.Token < hi && !slices.Contains(ended, h.Token) })
}
