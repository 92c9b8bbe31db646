package metrics

import (
	"sync"
	"time"

	"github.com/omninode/lockworker/topics"
)

// Events implements worker.Metrics: hold times, wait times, hand-offs and
// expiries come from the events one committed command caused. requestID is
// the command's own; events carrying another are for others (a waiter's
// grant, an ended lease); it is empty for the expiry scheduler's and the
// periodic cleanup's events.
func (m *Metrics) Events(requestID string, evs []topics.Event) {
	by := "command"
	if requestID == "" {
		by = "scheduler"
	}
	for _, ev := range evs {
		switch ev.Type {
		case topics.TypeQueued:
			if ev.RequestID == requestID && !m.events.queued(ev.RequestID, ev.OccurredAt.Time) {
				m.unmeasured.Inc()
			}
		case topics.TypeAcquired:
			if ev.RequestID != requestID {
				m.handoffs.Inc()
			}
			if waited, ok := m.events.granted(ev.RequestID, ev.OccurredAt.Time); ok {
				m.waitTime.Observe(waited.Seconds())
			}
		case topics.TypeRejected:
			if ev.ErrorCode == topics.CodeLockTimeout {
				m.events.forget(ev.RequestID)
			}
		case topics.TypeWithdrawn:
			// A release, a newer acquire of the owner or its session's end
			// took the wait off the queue: it is never granted.
			m.events.forget(ev.RequestID)
		case topics.TypeReleased, topics.TypeRevoked:
			// A revoke's answer to its sender repeats its last holder's
			// event: the fencing token counts it once.
			if li := ev.LockInfo; li != nil && li.AcquiredAt != nil && m.events.ended(li.FencingToken) {
				m.holdTime.Observe(ev.OccurredAt.Sub(li.AcquiredAt.Time).Seconds())
			}
		case topics.TypeExpired:
			m.expired.WithLabelValues(by).Inc()
			if li := ev.LockInfo; li != nil && li.AcquiredAt != nil && li.ExpiresAt != nil && m.events.ended(li.FencingToken) {
				m.holdTime.Observe(li.ExpiresAt.Sub(li.AcquiredAt.Time).Seconds())
			}
		}
	}
}

const (
	// maxTracked bounds each of the tracker's sets.
	maxTracked = 1 << 16
	// maxWait is how long a waiter can wait (the contract's wait_timeout
	// limit), plus slack for the scheduler: older entries are dead.
	maxWait = topics.MaxWaitSeconds*time.Second + time.Minute
	// sweepEvery spaces the looks for dead waits in a full set: each walks
	// all maxTracked of them under the mutex every applier takes after its
	// commit, and one per queued acquire would cost a batch seconds while
	// the set stays full of live waits (or of those of partitions that
	// moved away, seen ending on their new owner).
	sweepEvery = time.Minute
)

// eventTracker remembers what later events need: when each waiter was queued,
// and which leases were already measured (a duplicate release is answered
// with its stored lock.released again, which must not count twice). Each is
// bounded: a wait is forgotten at its end seen here (grant, LOCK_TIMEOUT,
// lock.withdrawn), one ended by another process after maxWait (at the next
// look, sweepEvery at most after), and while the set is full of younger
// ones new waiters are not measured (counted by
// lockworker_lock_waits_unmeasured_total, once each among the last
// maxTracked: a duplicate acquire's stored lock.queued comes again).
type eventTracker struct {
	mu      sync.Mutex
	waiting map[string]waiter // request_id of a queued acquire
	seen    recent[int64]     // fencing tokens of leases measured
	refused recent[string]    // request_id of waits left unmeasured
	swept   time.Time         // the last look for dead waits
	now     func() time.Time
}

type waiter struct {
	queuedAt time.Time // database time, from lock.queued
	seenAt   time.Time // local time, for forgetting
}

func newEventTracker() *eventTracker {
	return &eventTracker{waiting: map[string]waiter{}, now: time.Now}
}

// queued tracks requestID's wait from at, reporting false when the set is
// full (once a request: a duplicate acquire's lock.queued comes again).
func (t *eventTracker) queued(requestID string, at time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.waiting[requestID]; ok || t.refused.has(requestID) {
		return true // a duplicate of the acquire: it is still the same wait
	}
	now := t.now()
	if len(t.waiting) >= maxTracked && now.Sub(t.swept) >= sweepEvery {
		t.swept = now
		for id, w := range t.waiting {
			if now.Sub(w.seenAt) > maxWait {
				delete(t.waiting, id)
			}
		}
	}
	if len(t.waiting) >= maxTracked {
		t.refused.add(requestID)
		return false // not measured rather than unbounded memory
	}
	t.waiting[requestID] = waiter{queuedAt: at, seenAt: now}
	return true
}

// granted returns how long requestID waited, if it was seen queued.
func (t *eventTracker) granted(requestID string, at time.Time) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w, ok := t.waiting[requestID]
	if !ok {
		return 0, false
	}
	delete(t.waiting, requestID)
	return max(0, at.Sub(w.queuedAt)), true
}

func (t *eventTracker) forget(requestID string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.waiting, requestID)
}

// ended reports whether the lease with this fencing token ends for the first
// time (among the last maxTracked).
func (t *eventTracker) ended(token int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.seen.add(token)
}

// recent is a set of the last maxTracked keys added.
type recent[K comparable] struct {
	set  map[K]struct{}
	ring []K // the keys in set, oldest at next once full
	next int
}

func (r *recent[K]) has(k K) bool {
	_, ok := r.set[k]
	return ok
}

// add adds k, reporting false when it is there already.
func (r *recent[K]) add(k K) bool {
	if r.has(k) {
		return false
	}
	if r.set == nil {
		r.set = map[K]struct{}{}
	}
	if len(r.ring) < maxTracked {
		r.ring = append(r.ring, k)
	} else {
		delete(r.set, r.ring[r.next])
		r.ring[r.next] = k
		r.next = (r.next + 1) % maxTracked
	}
	r.set[k] = struct{}{}
	return true
}
