package rules

import (
	"fmt"
	"slices"
	"time"
)

// Memory is one lock's whole state in memory, as the database holds it:
// the reference model the handlers' database paths are checked against
// (their differential test) and the rules' own tests run on. Lock loads it
// into a Lock for one decision; Save writes the decision back as the
// handlers write it to the database (the lock's own state, then the queue
// by the effects).
type Memory struct {
	Limit        int
	Holders      []Holder
	Queue        []Waiter // by ID
	Ended        *Holder
	EndedStatus  Status
	Acquisitions int64
	DelayUntil   time.Time
	// Page is how many live waiters Lock puts in Head, the rest coming by
	// More, as many at a time (0: all of them in Head). Each read tells
	// whether more live waiters follow, as the handlers' reads do.
	Page int
	// DueBound is how many waiters past their deadline Lock puts in Due,
	// those of the oldest deadlines, and the owner's (0: all of them), as
	// the handlers bound them.
	DueBound int
	lastID   int64
}

// NewMemory returns a lock nobody has acquired.
func NewMemory() *Memory { return &Memory{Limit: 1} }

// Lock is the state as a command of owner loads it at now; tokens come
// from nextToken.
func (m *Memory) Lock(owner string, now time.Time, nextToken func() int64) *Lock {
	l := &Lock{Limit: m.Limit, Holders: slices.Clone(m.Holders), Waiting: len(m.Queue), Ended: m.Ended,
		EndedStatus: m.EndedStatus, Acquisitions: m.Acquisitions, DelayUntil: m.DelayUntil, Now: now,
		NextTokens: func(n int) []int64 {
			ts := make([]int64, n)
			for i := range ts {
				ts[i] = nextToken()
			}
			return ts
		}}
	var live []Waiter
	for i, w := range m.Queue {
		if w.Deadline.After(now) {
			live = append(live, w)
		} else {
			l.Due = append(l.Due, w)
		}
		if w.Owner == owner {
			mine := w
			mine.Position = i + 1
			l.Mine = &mine
		}
	}
	if m.DueBound > 0 && len(l.Due) > m.DueBound {
		oldest := slices.SortedStableFunc(slices.Values(l.Due), func(a, b Waiter) int { return a.Deadline.Compare(b.Deadline) })
		l.Due = slices.DeleteFunc(l.Due, func(w Waiter) bool {
			return !slices.ContainsFunc(oldest[:m.DueBound], func(o Waiter) bool { return o.ID == w.ID }) && w.Owner != owner
		})
	}
	l.Head = live
	if m.Page > 0 && len(live) > m.Page {
		l.Head = live[:m.Page]
		l.More = func(after int64) ([]Waiter, bool) {
			i := slices.IndexFunc(live, func(w Waiter) bool { return w.ID > after })
			if i < 0 {
				return nil, false
			}
			j := min(i+m.Page, len(live))
			return live[i:j], j < len(live)
		}
	}
	return l
}

// SessionWaits is the waits of the sessions ids, as their end loads them
// (Lock.EndSessions).
func (m *Memory) SessionWaits(ids ...string) []Waiter {
	var ws []Waiter
	for _, w := range m.Queue {
		if slices.Contains(ids, w.Session) {
			ws = append(ws, w)
		}
	}
	return ws
}

// Save keeps the decision effs that l made: the lock's own state from l,
// the queue by the effects. It reports effects that do not fit the queue
// (a position that is not the waiter's place, say).
func (m *Memory) Save(l *Lock, effs []Effect) error {
	m.Limit, m.Holders, m.Ended, m.EndedStatus, m.Acquisitions = l.Limit, l.Holders, l.Ended, l.EndedStatus, l.Acquisitions
	m.DelayUntil = l.DelayUntil
	find := func(id int64) int { return slices.IndexFunc(m.Queue, func(w Waiter) bool { return w.ID == id }) }
	for _, e := range effs {
		switch e.Kind {
		case Grant, Timeout, Withdraw, Drop:
			if e.Waiter.ID == 0 {
				continue
			}
			i := find(e.Waiter.ID)
			if i < 0 {
				return fmt.Errorf("%v does not wait", e.Waiter)
			}
			m.Queue = slices.Delete(m.Queue, i, i+1)
		case Queue:
			m.lastID++
			w := e.Waiter
			w.ID = m.lastID
			m.Queue = append(m.Queue, w)
			if e.Position != len(m.Queue) {
				return fmt.Errorf("%s queued at %d of %d", w.Owner, e.Position, len(m.Queue))
			}
		case Requeue:
			i := find(e.Prev.ID)
			if i < 0 || e.Position != i+1 {
				return fmt.Errorf("%s requeued at %d, its place is %d", e.Waiter.Owner, e.Position, i+1)
			}
			m.Queue[i] = e.Waiter
		}
	}
	if len(m.Queue) != l.Waiting {
		return fmt.Errorf("%d waiters, Waiting says %d", len(m.Queue), l.Waiting)
	}
	return nil
}
