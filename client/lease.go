package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/omninode/lockworker/topics"
)

// Lease is a held lock. Its fencing Token is greater than that of every
// earlier lease of the same lock (and unique across locks): pass it to the
// resources the lock guards so they can refuse a stale holder. Refusing
// tokens below the greatest seen fences an exclusive lock of limit 1 only:
// shared holders (WithMode(Shared)) and a semaphore's (WithLimit) hold
// leases at once, each valid, each with its own token.
//
// Unless acquired WithoutKeepAlive or WithSession, the lease extends itself
// every third of its duration until Release (an extension left unanswered
// is sent again, the same request, every third of the lease or
// Config.ReplyTimeout, whichever is shorter, until the lease's local
// deadline or Config.RequestTimeout). Each extension brings the lease's end
// back to a lease from now, or carries it the contract's smallest
// extension, 0.1 s, further if that is more; none is sent while that would
// carry it more than max(lease, 0.2 s) from now (a lease under 0.3 s,
// between its rounds; one that Extend carried further, until its end is
// that near again). The end so counted is the worker's expiry as the last
// answer showed it, from when the answer was read: the local deadline
// (below) errs early by the command's way to the worker, seconds behind a
// broker that stalled, and an extension sized by it would carry the
// worker's expiry that much further. The worker's expiry so stays within
// about that of now, and a holder that dies keeps the lock no longer (but
// for an extension left unanswered, which the worker may apply late, and
// for an answer that took longer than about two thirds of the lease (an
// Extend's): once a third of the lease is left by the local deadline, the
// smallest extension goes all the same, lest the lease be lost while the
// worker holds it). It holds the lease
// only while an extension's round trip (the command through Kafka to the
// worker and its answer back) stays under about a third of the lease: the
// next extension is sent a third of the lease after an answer (or later,
// as above), and its answer must come
// before the local deadline, a lease after the answered one was sent. A
// slower answer loses the lease even though the worker extends it each
// time: choose a lease several times the round trip. A lease acquired
// WithSession is kept alive by its session instead, and lost when the
// session is. It is
// lost when the worker says it ended (lock.expired, lock.revoked, a
// lock.released that does not answer its own Release, as when an operator
// released it, or an extension refused), when an extension is answered
// outside the contract (it is then released, as Extend says), when its keep-alive cannot
// send an extension because the token (Config.Token) has expired (the error wraps
// ErrUnauthenticated), or when its expiry passes without a confirmed
// extension (the broker or worker unreachable, the reply topic deleted:
// the error then says what the client saw of its reply topic since the
// last answer, as ErrNoReply does); Lost is then
// closed and Context cancelled. Every Lease of one fencing token (an owner
// that acquired a lock it held already) hears of its end.
//
// The expiry is judged locally, erring early, by the monotonic clock and by
// a clock that goes on while the host is suspended (on Linux the boot
// clock, which a step of the wall clock does not move; elsewhere the wall
// clock), whichever passes first (the error says which). A process or
// host paused past it (a suspend, a VM pause, Ctrl-Z then fg, a long GC
// pause) finds the lease lost within about a second of resuming (until
// Client.Close, which stops that watch: then only at the monotonic
// deadline), but code already running under it may act first, after the
// worker has granted the lock to another: only the fencing token, checked
// by the resource, covers that (docs/design.md, "The holder's deadline").
type Lease struct {
	// Name and Namespace identify the lock.
	Name      string
	Namespace string
	// Owner is the owner_id holding the lease.
	Owner string
	// Token is the fencing token; it stays the same for the whole lease.
	// Of a shared lock or a semaphore, several leases with different
	// tokens are valid at once (see Lease).
	Token int64

	c         *Client
	keepAlive bool
	// mayBeShared: acquired WithOwner and granted without being seen
	// queued, the lease may be a renewal of another process's (same
	// owner, same token), which a release would end too.
	mayBeShared bool
	session     *Session // what keeps the lease alive instead, if any
	lost        chan struct{}
	ctx         context.Context
	cancel      context.CancelCauseFunc
	granted     topics.Event

	mu       sync.Mutex
	info     topics.LockInfo
	lease    time.Duration // lease_duration, the keep-alive target
	deadline time.Time     // local estimate of the end of the lease (monotonic clock)
	boot     time.Duration // the same by the boot clock (see update); 0 in a session
	timer    *time.Timer   // fires at deadline; nil in a session, and until registered
	err      error         // why the lease ended
	// answered is when the last answer showing the lease (update) was
	// read: a loss for want of the next one tells what kept replies away
	// since (withReplyTrouble).
	answered time.Time
	// late is how far past deadline the worker's expiry may lie: the
	// time the answer that set it shows left, counted from its read rather
	// than from its command's send (update). Kept relative to deadline, so
	// that a suspend pulling the deadline in (pullIn) pulls it in alike.
	late time.Duration
	// trips are the round trips of the last three answers that showed an
	// expiry (update): the least is what the next extension's way to the
	// worker and the last answer's way back are taken to cost, one stalled
	// exchange left out (keepAliveLoop).
	trips []time.Duration
	// maxHold is the lease's cap as the worker has it: lock_info's
	// max_hold (update), the cap of the lease's first grant, which a
	// renewal keeps; before an answer shows it, WithMaxHold's for a lease
	// that is no renewal (a worker from before lock_info showed it applied
	// the acquire's own). 0: none known.
	maxHold time.Duration
	// capHit says the worker refused the keep-alive's extension for the
	// lease's max_hold and the refusal showed no room to ask for instead
	// (no cap known, or the room as it was): the keep-alive sends no more,
	// and the lease ends at its expiry, lost for its max_hold (see
	// keepAliveLoop).
	capHit bool
	// release is Release's command, sent again (same request_id) by a
	// Release after one that got no answer; its answer, lock.released, is
	// no loss, even when it comes after Release gave up.
	release *topics.Command
	// releasing serializes Release calls and giveBack (capacity 1), which
	// send one command: two waiting for one request_id at once would take
	// each other's answer.
	releasing chan struct{}
	// sending is set while the holder of releasing sends the release (a
	// Release that found the lease held, a giveBack past its checks), from
	// before it is sent until that holder returns: giveBack leaves the
	// release to it rather than wait for the slot (see giveBack).
	sending bool
	// unanswered says an extension (Extend's or the keep-alive's) went
	// without an answer (none in time, Kafka unreachable, its context
	// ended) and none sent after it was answered: the worker may apply it
	// yet, so a lease lost meanwhile is given back (giveBackIfLost).
	// noAnswer counts those extensions: an answer clears unanswered only
	// when none went unanswered since its own was sent, as one sent
	// before may be sent again, and applied, after it.
	unanswered bool
	noAnswer   int
	// armed says the give-back at the lease's end is registered, and
	// gaveBack that it sent the release (giveBackIfLost); gone that the
	// worker said the lease is gone: nothing to give back (giveBack).
	armed, gaveBack, gone bool
}

// newLease registers the lease ev granted. queued says whether its acquire
// was seen queued (its owner held nothing then, so the lease is its own).
// sent is when the acquire was first sent (for a grant after waiting, no
// later than its read less the wait: boundWait) and anchor the worker's
// time of the first reply to it (the grant itself, or lock.queued for a
// grant after waiting): see update. A lease whose end (lock.expired,
// lock.revoked, a release by another) was read before it was registered
// is lost at once, and that loss is returned as late, ended: the worker
// ended it, so there is nothing to give back. A lease past its local
// deadline already, by either clock (its grant read after the host slept
// through it), or in a session past its own (which is then lost) or lost
// before (its deadline, the worker's session.expired, Close), is lost at
// once, and that loss is returned as late: the caller gives the grant
// back (Acquire: as a grant it refused), a renewal's included, which the
// session's loss has ended for this client.
func (c *Client) newLease(ev topics.Event, o acquireOptions, queued bool, sent sentAt, anchor time.Time) (l *Lease, late error) {
	li := *ev.LockInfo
	ctx, cancel := context.WithCancelCause(context.Background())
	mayBeShared := !o.generatedOwner && !o.dedicatedOwner && !queued
	var maxHold time.Duration
	if !mayBeShared {
		// A new lease, with the acquire's cap, unless the grant's
		// lock_info says otherwise (update). A renewal keeps its first
		// grant's: WithMaxHold does not apply to it.
		maxHold = o.maxHold
	}
	l = &Lease{
		Name: li.LockName, Namespace: li.Namespace, Owner: li.OwnerID, Token: li.FencingToken,
		c: c, keepAlive: o.keepAlive, mayBeShared: mayBeShared, session: o.session, maxHold: maxHold, lost: make(chan struct{}), ctx: ctx, cancel: cancel, granted: ev,
		releasing: make(chan struct{}, 1),
	}
	l.mu.Lock()
	l.update(ev, sent, anchor, o.generatedOwner || queued)
	l.mu.Unlock()
	// Registered before its deadline timer starts: a lease past its deadline
	// already (its grant read late) is then removed by its end.
	c.mu.Lock()
	c.leases[l.Token] = append(c.leases[l.Token], l)
	c.watchBoot()
	c.mu.Unlock()
	if l.session == nil { // else the session's deadline counts (session.go)
		l.mu.Lock()
		if l.err == nil && !l.due() { // else lost below, late
			l.timer = time.AfterFunc(time.Until(l.deadline), l.deadlinePassed)
		}
		l.mu.Unlock()
	}
	if g := l.endedFirst(); g != nil {
		return l, g
	}
	if l.session != nil {
		// A session past its deadline already (the grant read after the
		// host slept through it) is lost first, so that add fails: the
		// grant is then late, as one of its own would be.
		s := l.session
		s.mu.Lock()
		mono, boot := s.pastDeadline()
		due := s.err == nil && (mono || boot)
		s.mu.Unlock()
		if due {
			s.expire()
		}
		if !s.add(l) {
			// Lost now or before the grant was read (its deadline timer,
			// the boot-clock watch, a Close): late either way.
			l.lose(fmt.Errorf("%w: %w", ErrLeaseLost, s.Err()))
			return l, &lateGrant{err: l.Err(), again: due && !mono}
		}
	} else {
		l.mu.Lock()
		mono, boot := l.pastDeadline()
		due := l.err == nil && (mono || boot)
		l.mu.Unlock()
		if due {
			l.expire()
			if err := l.Err(); err != nil {
				return l, &lateGrant{err: err, again: !mono}
			}
		}
	}
	// Again: an end the reader routed to the lease once registered, while
	// this call went on, is as much the worker's end of it. (A lease lost
	// another way meanwhile, its deadline timer or the boot-clock watch,
	// is returned lost: that loss, carried out by its own goroutine, gives
	// it back.)
	if g := l.endedFirst(); g != nil {
		return l, g
	}
	if l.keepAlive && c.begin() == nil {
		go l.keepAliveLoop()
	}
	return l, nil
}

// endedFirst is the late grant of a lease the worker ended before newLease
// returned it (an end right behind a grant read late, as after the host
// slept): the client's reader read the end (c.ended keeps it, whether or
// not the lease was registered then), and the lease is lost with it; nil
// otherwise.
func (l *Lease) endedFirst() *lateGrant {
	l.c.mu.Lock()
	ended, read := l.c.ended[endKey{l.Namespace, l.Name, l.Owner, l.Token}]
	l.c.mu.Unlock()
	if !read {
		return nil
	}
	err := l.endedBy(ended)
	if err == nil {
		return nil
	}
	l.finish(fmt.Errorf("%w (read before the grant was taken up)", err)) // unless routed to it already
	l.mu.Lock()
	mono, _ := l.pastDeadline()
	l.mu.Unlock()
	return &lateGrant{err: l.Err(), again: !mono, ended: true}
}

// lateGrant is newLease's error for a grant read past its local deadline,
// or after its session was lost, or after its end, and a campaign's for a
// grant that ended before its renewal out of the campaign's session: err, the lease's loss,
// wraps ErrLeaseLost. ended says the worker ended the lease (its end was
// read before the lease was registered): nothing to give back. again says
// the next grant may not meet what lost this one (Campaign tries again):
// the deadline had not passed by the monotonic clock, only by the boot
// clock (the host slept, or on the wall-clock fallback the clock stepped,
// while the grant was on its way) or not at all (the worker ended the
// lease first, as it does while the host sleeps); otherwise the lease is
// shorter than the round trip.
type lateGrant struct {
	err   error
	again bool
	ended bool
}

func (e *lateGrant) Error() string { return e.err.Error() }
func (e *lateGrant) Unwrap() error { return e.err }

// update records a reply that confirmed the lease. The local deadline counts
// the lease's remaining time by the worker's clock (expires_at minus anchor,
// the worker's time of its first reply to the command) from when the command
// was sent, which is no later than anchor: the estimate errs early, and
// clocks of client and worker never need to agree. That holds while the
// process runs: the deadline is kept twice, on the monotonic clock (its
// timer), which a host suspend stops on Linux, and on the boot clock,
// which a suspend does not stop (the client's boot-clock watch,
// watchBoot), each counted from its own reading at the send, and the lease
// is lost when either passes. On Linux the boot clock is CLOCK_BOOTTIME,
// which a step of the wall clock does not move; elsewhere it is the wall
// clock, which a step does: stepped forward it loses the lease early,
// which is safe, and stepped back it is caught by the monotonic deadline.
// A process paused past its deadline still runs on for up to
// bootCheckInterval, and code under the lease until it looks: see
// docs/design.md, "The holder's deadline". A new lease's grant (fresh: its
// owner held nothing, being the call's own or seen queued) ends
// lease_duration after the grant's occurred_at: one whose expires_at lies
// further (no worker sends it) counts no more than that. Other replies are
// not so bounded: a renewal keeps an expiry that an extension set further,
// and Extend's extension may carry it further. l.mu is held.
func (l *Lease) update(ev topics.Event, sent sentAt, anchor time.Time, fresh bool) {
	l.answered = time.Now()
	li := ev.LockInfo
	// An answer read out of order (an earlier extension's after a later
	// one's: Extend and the keep-alive may overlap) moves nothing back: the
	// lock's revision grows with every change of the lock, so an answer of
	// a lower revision than the last one applied is stale, and its
	// lock_info and deadlines are skipped. Answers are not ordered by
	// expires_at: the worker's expiry may move back, as when the owner
	// renews the lease into a session and out again (its own lease then
	// counts from the renewal), and a newer answer would be skipped. One
	// of a newer revision sets both deadlines, earlier or not; of the same
	// revision (or where either has none, as the grant's first update
	// finds), the later of old and new estimate is kept, as each errs
	// early.
	known := li.Revision != 0 && l.info.Revision != 0
	if known && li.Revision < l.info.Revision {
		return
	}
	newer := known && li.Revision > l.info.Revision
	// Without revisions (a worker from before them) an answer of an
	// earlier expires_at is taken for a stale one, as before: its
	// lock_info would understate the room max_hold leaves (capRoom).
	if known || l.info.ExpiresAt == nil || li.ExpiresAt == nil || !li.ExpiresAt.Before(l.info.ExpiresAt.Time) {
		l.info = *li
		l.lease = seconds(li.LeaseDuration)
		if li.MaxHold > 0 {
			// The worker's, the same for the whole lease: an answer without
			// it (a worker from before it showed it) leaves the one known.
			l.maxHold = seconds(li.MaxHold)
		}
	}
	if l.session != nil {
		return // its expires_at is the session's
	}
	if li.ExpiresAt != nil {
		left := li.ExpiresAt.Sub(anchor)
		shown := li.ExpiresAt.Sub(ev.OccurredAt.Time) // left as of the answer
		if fresh {
			left = min(left, ev.OccurredAt.Sub(anchor)+seconds(li.LeaseDuration))
			shown = min(shown, seconds(li.LeaseDuration))
		}
		// The latest the worker's expiry may be: the answer was written
		// before its read. The local deadline errs early by the command's
		// way to the worker, a frozen broker's seconds included, and an
		// extension sized by it would carry the worker's expiry that much
		// further than a lease ahead (keepAliveLoop).
		w, d := time.Now().Add(shown), sent.mono.Add(left)
		latest := l.workerEnd()
		if newer || w.After(latest) {
			latest = w
		}
		if newer || d.After(l.deadline) {
			l.deadline = d
		}
		l.late = max(latest.Sub(l.deadline), 0)
		// w errs late by the answer's way back, d early by the command's
		// way there: their gap is this exchange's round trip.
		if trip := w.Sub(d); trip >= 0 {
			l.trips = append(l.trips[max(len(l.trips)-2, 0):], trip)
		}
		if b := sent.boot + left; newer || l.boot == 0 || b > l.boot {
			l.boot = b
		}
	}
	if left := l.boot - l.c.bootNow(); l.boot != 0 && left > 0 {
		// An answer whose command was sent before a suspend counts its
		// monotonic deadline from a reading the suspend did not move: the
		// boot deadline is then the nearer, as checkBoot would find. One
		// passed already is left to the boot clock, whose loss blames the
		// suspend (and a late grant so lost is tried again: Campaign).
		pullIn(&l.deadline, nil, left)
	}
	if l.timer != nil {
		l.timer.Reset(time.Until(l.deadline))
	}
}

// checkBoot loses the lease if its deadline by the boot clock, now, has
// passed (see update). If it has not, but less of the lease is left by the
// boot clock than by the monotonic one (the host was suspended for less than
// the time left: the monotonic clock stood still meanwhile), the monotonic
// deadline and its timer are pulled in to the boot clock's, so that the
// lease ends at its boot deadline, not up to a bootCheckInterval after it.
func (l *Lease) checkBoot(now time.Duration) {
	l.mu.Lock()
	passed := l.err == nil && l.boot != 0 && now >= l.boot
	if l.err == nil && l.boot != 0 && !passed {
		pullIn(&l.deadline, l.timer, l.boot-now)
	}
	l.mu.Unlock()
	if passed {
		l.expire()
	}
}

// pullIn moves a monotonic deadline, and its timer (if any), in to left from
// now, when that is earlier by pullInMin or more: a boot-clock deadline,
// with left of it to go, is nearer than the monotonic one after a suspend.
// The lease's or the session's mutex is held.
func pullIn(deadline *time.Time, timer *time.Timer, left time.Duration) {
	pullInAt(time.Now(), deadline, timer, left)
}

// pullInAt is pullIn at now.
func pullInAt(now time.Time, deadline *time.Time, timer *time.Timer, left time.Duration) {
	if left > deadline.Sub(now)-pullInMin {
		return
	}
	*deadline = now.Add(left)
	if timer != nil {
		timer.Reset(left)
	}
}

// pullInMin is the least move pullIn makes: the two clocks are read at
// slightly different instants, and need not run at exactly one rate, and a
// deadline and timer moved by that much would be reset at every check for
// nothing.
const pullInMin = time.Millisecond

// pastDeadline says whether the lease's local deadline has passed by the
// monotonic clock, and by the boot clock (see update). l.mu is held.
func (l *Lease) pastDeadline() (mono, boot bool) {
	return !time.Now().Before(l.deadline), l.boot != 0 && l.c.bootNow() >= l.boot
}

// due says whether the lease's local deadline has passed by either clock.
// l.mu is held.
func (l *Lease) due() bool {
	mono, boot := l.pastDeadline()
	return mono || boot
}

func (l *Lease) key() string { return topics.LockKey(l.Namespace, l.Name) }

// ExpiresAt is when the lease ends by the worker's clock, as of the last
// acquire or extension. A lease acquired WithSession has no expiry of its
// own: it ends with its session, and ExpiresAt is the session's, as of the
// session's last keep-alive or the lease's grant, whichever is later.
// The worker's clock is PostgreSQL's, not this host's: for the time left,
// use Remaining, not time.Until(ExpiresAt()), which mixes the two clocks.
func (l *Lease) ExpiresAt() time.Time {
	if t := l.Info().ExpiresAt; t != nil {
		return t.Time
	}
	return time.Time{}
}

// Remaining is the time left before the lease's local deadline, by this
// host's clocks alone (see Lease): when the lease is lost unless an
// extension (or, WithSession, the session's keep-alive: a session's lease
// has its session's Remaining) is answered first. It errs early, as the
// deadline does. 0 once the lease has ended (lost or released).
func (l *Lease) Remaining() time.Duration {
	if l.session != nil && l.Err() == nil {
		return l.session.Remaining()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0
	}
	return l.c.timeLeft(l.deadline, l.boot)
}

// Info is the lock as the last reply about this lease described it; but
// for a lease acquired WithSession, whose lock_info shows the session's
// expires_at as of that reply, ExpiresAt is the session's as
// Lease.ExpiresAt says.
func (l *Lease) Info() topics.LockInfo {
	var session time.Time
	if l.session != nil {
		session = l.session.ExpiresAt()
	}
	l.mu.Lock()
	info := l.info
	l.mu.Unlock()
	if !session.IsZero() && (info.ExpiresAt == nil || session.After(info.ExpiresAt.Time)) {
		info.ExpiresAt = topics.NewTimePtr(session)
	}
	return info
}

// Granted is the lock.acquired reply that granted the lease.
func (l *Lease) Granted() topics.Event { return l.granted }

// Metadata is the owner_metadata stored with the lease.
func (l *Lease) Metadata() json.RawMessage { return l.Info().OwnerMetadata }

// Lost is closed when the lease is known lost. It is not closed by Release.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Context is cancelled when the lease is lost (at the moment Lost closes) or
// when Release is called. context.Cause tells which came first: an error
// wrapping ErrLeaseLost, or ErrReleased — even if that release then failed
// (the lock is then held until its lease runs out, a session's lease until
// its session ends; Release returned why).
func (l *Lease) Context() context.Context { return l.ctx }

// Err is nil while the lease is held, then why it ended (ErrLeaseLost or
// ErrReleased wrapped).
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *Lease) lostErr() error {
	err := l.Err()
	if errors.Is(err, ErrLeaseLost) {
		return err
	}
	return nil
}

// lose ends the lease as lost; the first cause wins. It reports whether
// this call ended it.
func (l *Lease) lose(cause error) bool { return l.loseIf(cause, nil) }

// loseIf is lose, if still (a func of l.mu held, nil: always) says so
// when the lease is about to end: a check made before, without l.mu, may
// be out of date by then.
func (l *Lease) loseIf(cause error, still func() bool) bool {
	if !l.endIf(cause, still) {
		return false
	}
	close(l.lost)
	return true
}

// end records why the lease ended and cancels its context, once. It reports
// whether this call ended it.
func (l *Lease) end(cause error) bool { return l.endIf(cause, nil) }

// endIf is end, if still says so, as loseIf.
func (l *Lease) endIf(cause error, still func() bool) bool {
	l.mu.Lock()
	if l.err != nil || still != nil && !still() {
		l.mu.Unlock()
		return false
	}
	l.err = cause
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
	// Out of the client's leases before its context ends: the give-back
	// that may run then (giveBackIfLost) must not take this lease for
	// another of the same token, a renewal, and send nothing.
	l.c.mu.Lock()
	if ls := slices.DeleteFunc(l.c.leases[l.Token], func(o *Lease) bool { return o == l }); len(ls) > 0 {
		l.c.leases[l.Token] = ls
	} else {
		delete(l.c.leases, l.Token)
	}
	l.c.mu.Unlock()
	l.cancel(cause)
	if l.session != nil {
		l.session.forget(l)
	}
	return true
}

// finish ends the lease for cause, from endedBy: released, when its own
// Release's answer (ErrReleased), else lost.
func (l *Lease) finish(cause error) {
	if errors.Is(cause, ErrReleased) {
		l.end(cause)
		return
	}
	l.lose(cause)
}

// endedBy is why ev, an event about the lease's fencing token, ends the
// lease: ErrReleased when it answers the lease's own Release (which may
// have given up waiting for it), an error wrapping ErrLeaseLost otherwise;
// nil when it does not end it (it is about another lock or owner: no
// worker sends one, the token being the lease's, but another producer on
// the reply topic could).
func (l *Lease) endedBy(ev topics.Event) error {
	if ev.LockInfo == nil || ev.LockInfo.OwnerID != l.Owner || !sameLock(ev.LockInfo, l.Namespace, l.Name) {
		return nil
	}
	at := ev.OccurredAt.Format(time.RFC3339Nano)
	switch ev.Type {
	case topics.TypeRevoked:
		return fmt.Errorf("%w: %w: lock.revoked at %s: %s", ErrLeaseLost, ErrRevoked, at, ev.Reason)
	case topics.TypeExpired, topics.TypeReleased:
		if ev.Reason == topics.ReasonSessionClosed || ev.Reason == topics.ReasonSessionExpired {
			// session.closed or session.expired follows, to the session.
			return fmt.Errorf("%w: %w: %s: the lease of %q ended with its session at %s (%s)",
				ErrLeaseLost, ErrSessionLost, ev.Type, l.key(), at, ev.Reason)
		}
		if ev.Type == topics.TypeExpired {
			return fmt.Errorf("%w: lock.expired: the lease of %q ended at %s", ErrLeaseLost, l.key(), at)
		}
		l.mu.Lock()
		own := l.release != nil && l.release.RequestID == ev.RequestID
		l.mu.Unlock()
		if own {
			return ErrReleased
		}
		return fmt.Errorf("%w: lock.released: the lease of %q was released at %s by another request (%s)",
			ErrLeaseLost, l.key(), at, ev.RequestID)
	}
	return nil
}

func (l *Lease) deadlinePassed() { l.expire() }

// expire ends the lease at its local deadline, passed by the monotonic
// clock (its timer) or by the boot clock (checkBoot). The error blames a
// suspend only when the monotonic clock has not passed it. Whether it
// passed is checked again as the lease ends, under l.mu: an extension's
// answer (update) may have moved both deadlines since.
func (l *Lease) expire() {
	if errors.Is(context.Cause(l.ctx), ErrReleased) {
		// Released without an answer (Release returned why): the lease
		// ran out, which is what the release was for. Lost stays open.
		l.endIf(ErrReleased, l.due)
		return
	}
	l.mu.Lock()
	mono, boot := l.pastDeadline()
	capped := l.capReached()
	answered := l.answered
	l.mu.Unlock()
	var cause error
	switch {
	case !mono && !boot:
		return // extended meanwhile
	case capped:
		cause = fmt.Errorf("%w: %w: lease of %q reached its max_hold", ErrLeaseLost, ErrMaxHoldExceeded, l.key())
	case mono:
		cause = l.c.withReplyTrouble(fmt.Errorf("%w: lease of %q reached its expiry without a confirmed extension", ErrLeaseLost, l.key()), answered)
	default:
		cause = fmt.Errorf("%w: lease of %q: the %s shows its expiry passed without a confirmed extension, the monotonic clock not (%s)", ErrLeaseLost, l.key(), bootClockName(), bootClockAhead())
	}
	l.loseIf(cause, l.due)
}

// minExtension is the contract's smallest extension_duration.
const minExtension = time.Duration(topics.MinLeaseSeconds * float64(time.Second))

// capRoom is how much the lease may still be extended under its max_hold,
// by the worker's clock (its acquired_at and expires_at); without a cap
// known, more than any extension. l.mu is held.
func (l *Lease) capRoom() time.Duration {
	if l.maxHold == 0 {
		return math.MaxInt64
	}
	if l.info.AcquiredAt == nil || l.info.ExpiresAt == nil {
		return 0
	}
	return l.info.AcquiredAt.Add(l.maxHold).Sub(l.info.ExpiresAt.Time)
}

// capReached says the keep-alive extends the lease no further for its
// max_hold: the cap leaves less than the smallest extension, or the worker
// refused an extension for it (capHit). l.mu is held.
func (l *Lease) capReached() bool {
	return l.capHit || l.capRoom() < minExtension
}

// Release ends the lease (guarded by its fencing token) and lets the next
// waiter have the lock. Context is cancelled first, so work under the lock
// stops before another owner can start. A lease already known lost (Lost
// closed) returns its loss at once, an error wrapping ErrLeaseLost, and
// sends nothing: the brokers may be down, and the worker frees the lock by
// the lease's expiry anyway. So does one past its local deadline (or its
// session's) though neither its timer nor the boot-clock watch has run yet
// (the host has just woken from a suspend): it is lost then.
// A lease the worker ended before the client knew
// is refused, and then lost: the error wraps ErrNotHeld (nobody holds the
// lock; or the owner was waiting in its queue, another acquire of it, which
// the release withdrew, as the worker does a release for an owner that
// waits), ErrNotOwner (another owner was granted it since) or
// ErrTokenMismatch (the same owner holds it under a newer lease, a later
// acquire's). A refusal that applied nothing and leaves the lease held
// (ErrRequestIDConflict: the request's stored outcome could not be read
// back; ErrForbidden: the token no longer covers the lock's namespace;
// ErrInvalidRequest: PostgreSQL refused to store the record) is sent once
// more under a new request_id (after ErrRequestIDConflict, an earlier copy
// of the release was applied: the resend finding the lease gone,
// ErrNotHeld, ErrNotOwner or ErrTokenMismatch, is taken as released, also
// where the worker had ended it before that copy, which its unreadable
// outcome cannot tell); refused again, Release returns that
// refusal, and the lease is neither lost nor released: the worker holds
// it, a lease of its own, no longer extended, until its expiry (it then
// ends as released), a session's as long as the session lives (until a
// Release that succeeds, or Session.Close). Release after Release is a
// no-op; after one that returned an error (ctx ended, no answer), it sends
// the same command again, which the worker applies once: its answer says
// whether the release took effect; after one refused so, a new one. A
// release whose answer comes after Release returned ends the lease as
// released, as does the lease's expiry then: once the local deadline has
// passed, Release returns nil without sending (the lease ran out, which is
// what the release was for, though the worker ended it as expired, with
// its lock-delay if it has one). A ctx that has ended already (a deferred
// Release after its request ended) does not stop Release: Context is
// cancelled and the release sent all the same, and Release returns ctx's
// cause without waiting for the answer. Only a Release that must wait for
// another one in flight gives up when ctx ends, sending nothing.
func (l *Lease) Release(ctx context.Context) error {
	// Past its deadline (or its session's), its timer and the boot-clock
	// watch not run yet (the host has just woken from a suspend): lost,
	// not released, as the worker may have granted the lock to another
	// already.
	if l.session != nil {
		l.session.expire()
	} else {
		l.expire()
	}
	// Ended already: no waiting for the slot, which a giveBack of the lost
	// lease may hold up to ReplyTimeout.
	if ended := l.Err(); ended != nil {
		return l.releaseEnded(ended)
	}
	if !take(ctx, l.releasing) {
		if ended := l.Err(); ended != nil { // ended while Release waited
			return l.releaseEnded(ended)
		}
		return fmt.Errorf("releasing lock %q: waiting for another Release: %w", l.key(), context.Cause(ctx))
	}
	defer l.leaveSlot()
	closed := l.c.begin()
	if closed == nil {
		defer l.c.ops.Done()
	}
	l.mu.Lock()
	ended := l.err
	var cmd topics.Command
	if ended == nil {
		cmd = l.releaseCmd()
		// A giveBack from now on leaves the release to this call.
		l.sending = closed == nil
	}
	l.mu.Unlock()
	if ended != nil {
		return l.releaseEnded(ended)
	}
	l.cancel(ErrReleased)
	if closed != nil {
		return fmt.Errorf("releasing lock %q: %w", l.key(), closed)
	}
	// Refused without an effect, the worker holds the lease still.
	ev, applied, err := sendAgainRefused(ctx, l.c.call, cmd, l.newReleaseCmd, leaseGone)
	if err != nil {
		return fmt.Errorf("releasing lock %q: %w", l.key(), err)
	}
	var refused error
	switch ev.Type {
	case topics.TypeRejected:
		refused = rejection(ev)
	case topics.TypeWithdrawn:
		// The worker withdrew a wait of the owner (another acquire of it
		// for this lock): an owner waiting holds nothing, so this lease
		// had ended before the client knew.
		refused = fmt.Errorf("%w: the owner was waiting in the lock's queue, and the release withdrew that wait", ErrNotHeld)
	}
	if applied && ev.Type == topics.TypeRejected && leaseGone(refused) && !errors.Is(refused, ErrSessionBound) {
		// The copy REQUEST_ID_CONFLICT answered for released it (and
		// handed the lock on: NOT_OWNER, TOKEN_MISMATCH), or found it
		// ended already: its outcome cannot tell, and the lease is over.
		refused = nil
	}
	if refused != nil && !leaseGone(refused) {
		// Refused again: the lease is not lost, nor forgotten (its session
		// would keep it alive for nobody): a next Release tries anew.
		l.newReleaseCmd()
		return fmt.Errorf("releasing lock %q: %w (the lease is held still)", l.key(), refused)
	}
	if refused != nil {
		l.lose(fmt.Errorf("%w: release refused: %w", ErrLeaseLost, refused))
		return fmt.Errorf("releasing lock %q: %w", l.key(), refused)
	}
	l.end(ErrReleased)
	return nil
}

// sendAgainRefused sends cmd, a release or a session's close, with send.
// Refused without an effect (a refusal gone does not say ended it), it is
// sent once more under a new request_id (renew), as the refused one would
// be answered alike (REQUEST_ID_CONFLICT: its outcome, stored, could not
// be read back). applied says that first refusal was REQUEST_ID_CONFLICT:
// an earlier copy of cmd was applied, its outcome unread, so the resend
// finding the lease or session gone is that copy's doing.
func sendAgainRefused(ctx context.Context, send func(context.Context, topics.Command) (topics.Event, error), cmd topics.Command,
	renew func() topics.Command, gone func(refusal error) bool) (ev topics.Event, applied bool, err error) {
	ev, err = send(ctx, cmd)
	if err != nil || ev.Type != topics.TypeRejected || gone(rejection(ev)) {
		return ev, false, err
	}
	applied = errors.Is(rejection(ev), ErrRequestIDConflict)
	ev, err = send(ctx, renew())
	return ev, applied, err
}

// leaseGone says a refusal of the lease's release or extension says the
// lease has ended, so that nothing is left to give back: NOT_HELD,
// NOT_OWNER, TOKEN_MISMATCH, and SESSION_BOUND (its owner, another process
// of the same WithOwner ID, renewed it into its session, same token, whose
// lease a release by the token would end). Any other (REQUEST_ID_CONFLICT,
// FORBIDDEN, INVALID_REQUEST for a record PostgreSQL would not store, ...)
// applied nothing, and the worker holds the lease still.
func leaseGone(refusal error) bool {
	return errors.Is(refusal, ErrNotHeld) || errors.Is(refusal, ErrNotOwner) || errors.Is(refusal, ErrTokenMismatch) || errors.Is(refusal, ErrSessionBound)
}

// releaseEnded is Release's answer for a lease that ended (Err) before it
// sent anything: nil when released, else the loss.
func (l *Lease) releaseEnded(ended error) error {
	if errors.Is(ended, ErrReleased) {
		return nil
	}
	return fmt.Errorf("releasing lock %q: %w", l.key(), ended)
}

// Extend lengthens the lease by d from its current expiry (the contract's
// extension_duration; 0: the lease's own duration). Its keep-alive sends
// no extension until the end so carried is back within a lease from now
// (see Lease). A refusal that says
// the lease is gone (ErrNotHeld, ErrNotOwner, ErrTokenMismatch; and
// ErrSessionBound, its owner having renewed it into a session, same
// token, which a release would end) loses it, sending nothing.
// ErrMaxHoldExceeded (past WithMaxHold), and ErrInvalidRequest showing
// the lease unchanged (an extension carrying it more than 366 days past
// now, topics.MaxLeaseAheadSeconds: extend later), leave it held until its
// current expiry, unless the error also wraps ErrLeaseLost (the refusal,
// read late, showed that expiry passed): check ErrLeaseLost first. Any
// other refusal by the worker (ErrRequestIDConflict, ErrForbidden,
// ErrInvalidRequest about the command, ...) applied nothing, and the worker holds the lease
// still: it is lost all the same, and released as below. An answer that breaks the
// contract (no lock_info, one showing another lease or fencing token, a
// lease_duration out of range) loses the lease
// too, with that answer as the cause, and releases it, best effort, by its
// fencing token (also when it was lost or released first: the worker may
// just have extended it), with the request_id of any earlier release of
// the lease, so that the worker applies it at most once and refuses it
// when the lease has ended; unless the release could end a lease held by
// someone else: another Lease of this client with the same Token (a
// renewal), an acquire of this client for the same lock and owner in
// flight (a renewal, maybe granted already, or a wait the release would
// withdraw), or, for a lease acquired WithOwner and granted without
// waiting, another process's renewal of it. A Release whose release is on
// its way is left to it (it sends it unless it fails before producing:
// credentials, encoding, the brokers); one that had not yet found the lease
// ended returns the loss, and Extend sends the release once it has.
//
// Extend of a lease already ended (lost, or released) returns why, the
// error Err reports (wrapping ErrLeaseLost, or ErrReleased), and sends
// nothing; so does the keep-alive. An extension whose grant arrives after
// the lease ended meanwhile, or past the new local deadline already (the
// host slept through it: the lease is lost then), returns that error too,
// not nil, and the lease is released as above. So is a lease lost while an
// extension went unanswered, Extend's (its context ended, or no answer
// came: it returned that error) or the keep-alive's (cut short by the
// lease's end, or tried again until then), when it is lost: the worker
// may apply it yet; unless an extension sent after it was answered (the
// answer showed the lease as the worker has it, that one included).
func (l *Lease) Extend(ctx context.Context, d time.Duration) error {
	if err := l.extend(ctx, d, l.c.cfg.ReplyTimeout); err != nil {
		return fmt.Errorf("extending lock %q: %w", l.key(), err)
	}
	return nil
}

// extend is Extend, the extension sent again every `every` without an
// answer.
func (l *Lease) extend(ctx context.Context, d, every time.Duration) error {
	if l.session != nil {
		return &Error{Code: topics.CodeSessionBound, Message: fmt.Sprintf("the lease is kept alive by session %q", l.session.ID)}
	}
	cmd := l.command(topics.OpExtend)
	cmd.ExtensionDuration = d.Seconds()
	if err := validate(cmd, l.c.cfg.Topics.ReplyPrefix); err != nil {
		return err
	}
	if ctx.Err() != nil {
		// Not sent: an extension nobody waits for (the keep-alive's, past
		// the lease's local deadline) would keep a lease the client
		// counts as lost.
		return context.Cause(ctx)
	}
	if err := l.Err(); err != nil {
		// Not sent either: the worker, applying it, would hold the lease
		// for nobody.
		return err
	}
	// One operation with the release that may follow: Close waits for both.
	if err := l.c.begin(); err != nil {
		return err
	}
	defer l.c.ops.Done()
	sent := l.c.sentNow()
	ev, err := l.callExtension(ctx, cmd, every)
	if err != nil {
		return err
	}
	if ev.Type == topics.TypeRejected {
		e := rejection(ev)
		// A cap refused, or an extend past how far a lease may run ahead
		// of now (INVALID_REQUEST showing this lease, unchanged): the
		// worker holds the lease as it was.
		if errors.Is(e, ErrMaxHoldExceeded) || errors.Is(e, ErrInvalidRequest) && l.shownBy(ev, cmd) {
			if err := l.capRefused(ev, cmd, sent); err != nil {
				return err // the refusal showed the lease over already
			}
			return e
		}
		gone := leaseGone(e)
		if gone {
			// Nothing to give back, ever: no give-back (giveBack) may
			// send a release by the token from now on, not the
			// keep-alive's for an extension cut short by this loss.
			l.mu.Lock()
			l.gone = true
			l.mu.Unlock()
		}
		l.lose(fmt.Errorf("%w: extension refused: %w", ErrLeaseLost, e))
		if !gone {
			// Nothing was applied and the worker holds it still. Lost
			// here all the same, as the next extension may be refused
			// alike: given back, or the worker holds it for nobody until
			// its expiry.
			l.giveBack()
		}
		return e
	}
	if err := l.c.replyLease(ev, cmd); err != nil {
		// The worker may hold the lease past the client's deadline, and
		// would answer each retry alike: the lease is lost now, for this
		// reply, rather than at its deadline for want of an extension, and
		// released so that the worker does not hold it for nobody: also
		// when it ended first (its deadline, a worker's event, a release
		// without an answer), as the worker may just have extended it.
		l.lose(fmt.Errorf("%w: extension answered outside the contract: %w", ErrLeaseLost, err))
		l.giveBack()
		return err
	}
	if ended, _ := l.confirm(ev, sent); ended != nil {
		// It ended here while the extension, which the worker applied, was
		// on its way: given back, or the worker holds it for nobody until
		// the new expiry.
		l.giveBack()
		return ended
	}
	return nil
}

// callExtension sends the extension cmd (again every `every` without an
// answer) and returns its first answer, keeping track of extensions left without one (unanswered). The first of
// those arms the give-back at the lease's end, for Extend's as for the
// keep-alive's: Extend's caller has gone by then, and a lease without
// keep-alive has no goroutine of its own waiting for its end.
func (l *Lease) callExtension(ctx context.Context, cmd topics.Command, every time.Duration) (topics.Event, error) {
	l.mu.Lock()
	before := l.noAnswer
	l.mu.Unlock()
	ev, err := l.c.callEvery(ctx, cmd, every)
	l.mu.Lock()
	if err != nil {
		l.unanswered = true
		l.noAnswer++
	} else if l.noAnswer == before {
		l.unanswered = false
	}
	arm := err != nil && !l.armed
	l.armed = l.armed || arm
	l.mu.Unlock()
	switch {
	case arm:
		context.AfterFunc(l.ctx, l.giveBackIfLost)
	case err != nil && l.ctx.Err() != nil:
		// The lease ended while this one was on its way: the give-back
		// armed before may have run already, finding none unanswered.
		go l.giveBackIfLost()
	}
	return ev, err
}

// capRefused reads the lease as a MAX_HOLD_EXCEEDED refusal shows it: the
// worker's expiry as of the refusal, which includes any earlier extension
// whose answer never came (the worker applies one lease's commands in
// order). capRoom, read from an older answer, would otherwise overstate the
// room left, and the local deadline stay short of the worker's expiry. The
// refusal's max_hold, if it shows one, is the lease's cap. A lock_info
// about another lease (a worker from before the refusal showed the refused
// lease: a shared lock's newest holder) or outside the contract is left
// unread. It returns the lease's loss when the refusal, read late, leaves
// the lease past its deadline.
func (l *Lease) capRefused(ev topics.Event, cmd topics.Command, sent sentAt) error {
	if !l.shownBy(ev, cmd) {
		return nil
	}
	if ended, before := l.confirm(ev, sent); !before {
		return ended
	}
	return nil
}

// shownBy reports whether ev's lock_info shows this lease in force, within
// the contract: the lease cmd, its extension, is about.
func (l *Lease) shownBy(ev topics.Event, cmd topics.Command) bool {
	return l.c.replyLease(ev, cmd) == nil
}

// confirm records an answer that shows the lease (update), unless the lease
// ended first, and ends the lease if the answer leaves it past its deadline
// already (read after the host slept through it: the worker may have ended
// it). It returns the lease's end, if it has one, and whether it came
// before the answer; nil when another answer moved the deadline on.
func (l *Lease) confirm(ev topics.Event, sent sentAt) (ended error, before bool) {
	l.mu.Lock()
	ended = l.err
	late := false
	if ended == nil {
		l.update(ev, sent, ev.OccurredAt.Time, false)
		late = l.due()
	}
	l.mu.Unlock()
	if !late {
		return ended, ended != nil
	}
	l.expire()
	return l.Err(), false
}

// giveBack releases, best effort, a lease an extension found ended, answered
// outside the contract or after the lease ended here, or refused without
// ending it, or lost with an extension unanswered: the worker may hold it
// still, however it ended here first. The release is guarded by the
// lease's fencing token, which no later lease has (a new grant gets a new
// token; a renewal, the same, only while the lease is held), so the worker
// refuses it (NOT_HELD, NOT_OWNER, TOKEN_MISMATCH) when the lease has
// ended; and it is the lease's one release command (releaseCmd: the
// request_id of a Release, or of an earlier giveBack), which the worker
// applies at most once and otherwise answers from its stored outcome. So sending it again is
// harmless, and no flag says whether it was ever sent.
//
// The lease ended (Err) before giveBack is called, so a Release that has
// not looked yet sends nothing: it returns the loss. giveBack leaves the
// release to the holder of the slot (Release's or giveBack's, releasing)
// that is sending it (sending): a Release that found the lease held before
// it ended, whose release is on its way (a release of giveBack's own
// would be the same command, one request_id, and the client keeps one
// waiter per request_id: two at once would take each other's answer), or
// another giveBack. Otherwise it waits for the slot, so that a Release
// that took it but had not looked does not leave the lease held for
// nobody. The wait is short: a Release returns at once (it finds the
// lease ended, or the client closed), as does a giveBack that sends
// nothing; a giveBack that took the slot while this one looked sends the
// release, one round trip of at most ReplyTimeout, and this one then
// sends it again. Nothing is sent
// when the release could end a lease held by someone else: another Lease
// of this client with the same token (a renewal), an acquire of this
// client for the lock and owner in flight (a renewal whose grant, unseen
// yet, the release would end, or a wait, which a release of the owner
// withdraws whatever its token), or another process's lease (mayBeShared).
// Acquires of the lock and owner started meanwhile wait for the release's
// answer, as for a withdrawal (endAcquire). The caller, the keep-alive
// goroutine, Extend's or giveBackIfLost's, has called begin and holds
// nothing the slot's holder waits for (Close waits for both).
func (l *Lease) giveBack() {
	if l.mayBeShared {
		return
	}
	l.mu.Lock()
	sending, gone := l.sending, l.gone
	l.mu.Unlock()
	if sending || gone {
		return
	}
	l.releasing <- struct{}{}
	defer l.leaveSlot()
	k := l.c.acquireKey(l.Namespace, l.Name, l.Owner)
	l.c.mu.Lock()
	a := l.c.acquiring[k]
	// Another lease of the token: l itself, lost, may not have left
	// c.leases yet (endIf).
	others := slices.ContainsFunc(l.c.leases[l.Token], func(o *Lease) bool { return o != l })
	shared := others || a.n > 0 || a.releasing != nil
	if !shared {
		l.c.acquiring[k] = acquiring{releasing: make(chan struct{})}
	}
	l.c.mu.Unlock()
	if shared {
		return
	}
	defer l.c.withdrawn(k)
	l.mu.Lock()
	cmd := l.releaseCmd()
	l.sending = true
	l.mu.Unlock()
	_, _ = l.c.bestEffort(cmd)
}

// leaveSlot gives up l.releasing, which the caller holds.
func (l *Lease) leaveSlot() {
	l.mu.Lock()
	l.sending = false
	l.mu.Unlock()
	<-l.releasing
}

// take takes slot (a channel of capacity 1). A free slot is taken even
// when ctx has ended (one select over both would pick at random); ctx is
// waited for only while another holds the slot.
func take(ctx context.Context, slot chan struct{}) bool {
	select {
	case slot <- struct{}{}:
		return true
	default:
	}
	select {
	case slot <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// newReleaseCmd replaces the lease's release command (releaseCmd) by one of
// a new request_id, after a release refused without an effect: sent again,
// the refused request_id would only get that answer again. The caller
// holds l.releasing.
func (l *Lease) newReleaseCmd() topics.Command {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.release = nil
	return l.releaseCmd()
}

// releaseCmd is the lease's release command, made on first use and the
// same (request_id) after: the worker applies it once, and its answer is
// the lease's own release. The caller holds l.releasing, and l.mu.
func (l *Lease) releaseCmd() topics.Command {
	if l.release == nil {
		cmd := l.command(topics.OpRelease)
		l.release = &cmd
	}
	return *l.release
}

// replyLease checks the lock_info of a reply that confirms a lease, a grant
// of the acquire cmd or an answer to the extend cmd (or a refusal of it that
// shows the lease: shownBy): it must show cmd's lock acquired by cmd's
// owner, with a fencing token (cmd's, the lease's, when it names one), and
// its lease_duration and max_hold in range. No worker sends another, but a
// worker's bug or another producer on the reply topic could: a Lease made of
// it would extend and release the lease it shows, another lock's or
// owner's, and keep-alives pace themselves by its durations.
func (c *Client) replyLease(ev topics.Event, cmd topics.Command) error {
	li := ev.LockInfo
	switch {
	case li == nil:
		return fmt.Errorf("%s without lock_info", ev.Type)
	case li.Status != topics.StatusAcquired:
		return fmt.Errorf("%s with status %q", ev.Type, li.Status)
	case li.FencingToken < 1:
		return fmt.Errorf("%s with fencing_token %d, below 1", ev.Type, li.FencingToken)
	case cmd.FencingToken != nil && li.FencingToken != *cmd.FencingToken:
		return fmt.Errorf("%s with fencing_token %d, not the lease's %d", ev.Type, li.FencingToken, *cmd.FencingToken)
	case !c.shows(li, cmd):
		return fmt.Errorf("%s of lock %q for owner %q, not %q for %q", ev.Type,
			topics.LockKey(li.Namespace, li.LockName), li.OwnerID, topics.LockKey(cmd.Namespace, cmd.LockName), cmd.OwnerID)
	}
	if err := replySeconds(ev, "lease_duration", li.LeaseDuration, topics.MinLeaseSeconds, topics.MaxLeaseSeconds); err != nil {
		return err
	}
	if li.MaxHold == 0 { // no cap
		return nil
	}
	return replySeconds(ev, "max_hold", li.MaxHold, topics.MinLeaseSeconds, topics.MaxMaxHoldSeconds)
}

// shows reports whether li is about cmd's lock and owner (sameOwner).
func (c *Client) shows(li *topics.LockInfo, cmd topics.Command) bool {
	return sameLock(li, cmd.Namespace, cmd.LockName) && c.sameOwner(li.OwnerID, cmd.OwnerID)
}

// sameLock reports whether li is about lock name of namespace ns.
func sameLock(li *topics.LockInfo, ns, name string) bool {
	return li.Namespace == ns && li.LockName == name
}

// sameOwner reports whether the owner_id a reply shows is the owner its
// command asked for, as the worker sees both (acquireKey's owner): under
// authentication the worker scopes it, and its replies show it scoped.
func (c *Client) sameOwner(shown, asked string) bool {
	return c.acquireKey("", "", shown).owner == c.acquireKey("", "", asked).owner
}

// command is a release or extend guarded by the lease's owner and token.
func (l *Lease) command(op string) topics.Command {
	cmd := l.c.command(op, l.Name)
	cmd.Namespace = l.Namespace
	cmd.OwnerID = l.Owner
	token := l.Token
	cmd.FencingToken = &token
	return cmd
}

// send sends a command that needs no wait and returns its first answer.
func (c *Client) send(ctx context.Context, cmd topics.Command) (topics.Event, error) {
	return c.sendEvery(ctx, cmd, c.cfg.ReplyTimeout)
}

// sendEvery is send, the command sent again every `every` without an
// answer (exchangeEvery).
func (c *Client) sendEvery(ctx context.Context, cmd topics.Command, every time.Duration) (topics.Event, error) {
	if err := c.begin(); err != nil {
		return topics.Event{}, err
	}
	defer c.ops.Done()
	return c.callEvery(ctx, cmd, every)
}

// call is send within an operation the caller has begun.
func (c *Client) call(ctx context.Context, cmd topics.Command) (topics.Event, error) {
	return c.callEvery(ctx, cmd, c.cfg.ReplyTimeout)
}

// callEvery is sendEvery within an operation the caller has begun.
func (c *Client) callEvery(ctx context.Context, cmd topics.Command, every time.Duration) (topics.Event, error) {
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	return c.exchangeEvery(ctx, cmd, firstReply, every)
}

// bestEffort sends cmd, a release or a session's close that gives back what
// the worker granted for nobody (the withdrawal of an abandoned acquire, the
// release of a lease lost to a reply outside the contract, the close of a
// session refused so), and returns its first answer: one round trip,
// bounded by ReplyTimeout. It is not cancelled when the client closes, so
// that it still goes out during Close, which waits for it: the caller has
// called begin.
func (c *Client) bestEffort(cmd topics.Command) (topics.Event, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ReplyTimeout)
	defer cancel()
	return c.exchange(ctx, cmd, firstReply)
}

// giveBackIfLost gives the lease back (giveBack) when it ended lost with an
// extension unanswered, which the worker may apply yet: it runs at the
// lease's end, once an extension went unanswered (callExtension). Not once
// the client is closing: the keep-alive stops then, and Close does not
// wait for the lease's end.
func (l *Lease) giveBackIfLost() {
	l.mu.Lock()
	send := l.unanswered && !l.gaveBack && errors.Is(context.Cause(l.ctx), ErrLeaseLost)
	l.gaveBack = l.gaveBack || send
	l.mu.Unlock()
	if !send {
		return
	}
	if l.c.begin() != nil {
		return
	}
	defer l.c.ops.Done()
	l.giveBack()
}

// keepAliveFloor is the keep-alive's shortest pause between extensions (a
// tenth of the lease for leases under a second).
const keepAliveFloor = 100 * time.Millisecond

// keepAliveRetry is the keep-alive's pause after an extension that failed
// (unanswered within Config.RequestTimeout, say) before it tries again.
const keepAliveRetry = time.Second

// keepAliveAhead is how far from now the keep-alive carries the lease's end
// at most: a lease, or for one under 0.2 s twice minExtension, so that an
// extension of at least minExtension keeps it alive. l.mu is held.
func (l *Lease) keepAliveAhead() time.Duration {
	return max(l.lease, 2*minExtension)
}

// workerEnd is the latest the worker's expiry may be, as the last answer
// showed it (see late): the keep-alive's extensions count from it, the loss
// from the local deadline. l.mu is held.
func (l *Lease) workerEnd() time.Time { return l.deadline.Add(l.late) }

// keepAliveSleep waits d, and says whether the keep-alive goes on: false
// when the lease ended or the client is closing meanwhile.
func (l *Lease) keepAliveSleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-l.ctx.Done():
		return false
	case <-l.c.closing.Done():
		return false
	}
	// Woken after a suspend, the boot clock may show the lease over.
	l.checkBoot(l.c.bootNow())
	return true
}

// keepAliveLoop extends the lease every third of its duration, by as much as
// brings its end back to a full lease_duration from now. Extending by a
// fixed amount instead would let the expiry drift away from now when ticks
// come early or late. As it asks for the contract's smallest extension,
// minExtension, at least, a round waits until that carries the end no
// further than keepAliveAhead from now: else the rounds of a lease under
// 0.3 s, less than minExtension apart, would carry the end ever further
// ahead (a holder that died would hold the lock that much longer), and a
// lease Extend carried far ahead would be extended for nothing. The end
// is the worker's as the last answer showed it (workerEnd), not the local
// deadline, which errs early by the command's way to the worker: an
// extension the worker applied late (a broker stalled) left the deadline
// that much short, and the next one, sized by it, carried the worker's
// expiry that much further than a lease ahead. The worker's expiry so
// stays within keepAliveAhead of now, but for extensions left unanswered
// that the worker applies late, and for an answer slower than about two
// thirds of the lease (Extend's, whose end lay further ahead): the wait
// ends once a third of the lease is left by the deadline, however far the
// worker's end may lie, or the lease would be lost with the worker holding
// it. The next extension goes a third of the lease after an
// answer, or later, once the end is that near, and must be answered within
// a lease of the answered one's send, so a round trip over about a third of
// the lease loses it (see Lease). It stops when the lease ends or the
// client closes, or when the lease reached its max_hold or an extension was
// refused for it with no room left to ask for (it then ends at its expiry,
// lost with ErrMaxHoldExceeded).
func (l *Lease) keepAliveLoop() {
	defer l.c.ops.Done()
	// unanswered says the last extension failed without an answer (none
	// in time, Kafka unreachable, the lease's end): the worker may apply it
	// yet. Another is sent a second later, a new command: its answer, the
	// worker's expiry as of then, is read from its own send (update), so
	// the local deadline stays before the worker's expiry whether the
	// worker applied one of them or both (each adds to the expiry: the
	// answer says so). A lease lost with one unanswered is given back
	// (callExtension), or the worker may hold it for nobody. owed sums
	// the extensions sent since the last answer, which a worker lagging
	// behind may apply yet: each next one asks for that much less, so that
	// applied together they bring the expiry no further than a lease from
	// now.
	unanswered := false
	var owed time.Duration
	for {
		l.mu.Lock()
		interval := l.lease / 3
		// An answer may leave less than two thirds (an extension the
		// worker applied late): the next one goes halfway to the
		// deadline then.
		interval = max(min(interval, time.Until(l.deadline)/2), min(keepAliveFloor, l.lease/10))
		l.mu.Unlock()
		if unanswered {
			// The last extension went unanswered (Config.RequestTimeout
			// may be shorter than the time left): try again soon, not a
			// third later, which may be past the deadline.
			interval = min(interval, keepAliveRetry)
		}
		if !l.keepAliveSleep(interval) {
			return
		}
		// No extension while even the smallest would carry the end further
		// than keepAliveAhead from now: the round comes when it no longer
		// would (an extension left unanswered included, which the worker
		// may not have applied: the lease needs one then), or once a third
		// of the lease is left by the deadline (above). Looked at again
		// every third of the lease meanwhile, as the deadline may move in
		// (a suspend, an answer of a newer revision).
		for {
			l.mu.Lock()
			early := min(time.Until(l.workerEnd())+minExtension-l.keepAliveAhead(), time.Until(l.deadline)-l.lease/3)
			lease := l.lease
			l.mu.Unlock()
			if early <= 0 {
				break
			}
			if !l.keepAliveSleep(min(early, lease/3)) {
				return
			}
		}
		l.mu.Lock()
		deadline, end, lease, room, capped := l.deadline, l.workerEnd(), l.lease, l.capRoom(), l.capReached()
		// Less a usual round trip, at most what the end may lie past the
		// deadline: the last answer's way back, by which the end errs
		// late, and the extension's way to the worker, which it will have
		// gone when the worker adds it. Sized by the end alone, each
		// extension came a round trip short, and a round trip over a
		// quarter of the lease lost it.
		if len(l.trips) > 0 {
			end = end.Add(-min(slices.Min(l.trips), l.late))
		}
		l.mu.Unlock()
		if capped {
			return
		}
		// The worker's end goes back to a lease from now or, where less
		// than minExtension is due, that much further: within
		// keepAliveAhead either way (the wait above).
		ext := lease - time.Until(end) - owed
		ext = max(ext, minExtension)
		ext = min(ext, time.Duration(topics.MaxLeaseSeconds)*time.Second, room)
		// An extension that cannot arrive before the lease ends is useless;
		// the deadline timer declares the lease lost then. One left
		// without an answer (it, or its answer, lost in transit) is sent
		// again every third of the lease, or ReplyTimeout if shorter, as
		// the session's keep-alive is: exchange's usual resend after
		// ReplyTimeout would come past the deadline for a lease under 1.5
		// ReplyTimeout. Each copy has the same request_id, which the
		// worker applies once, and its answer counts from the first send.
		ctx, cancel := context.WithDeadline(l.ctx, deadline)
		ext = ext.Truncate(time.Millisecond)
		err := l.extend(ctx, ext, min(l.c.cfg.ReplyTimeout, lease/3))
		cancel()
		if errors.Is(err, ErrMaxHoldExceeded) {
			// Past the room an answer out of date showed (an extension
			// applied but not answered): the refusal's lock_info
			// (capRefused) shows the room left, which the next extension
			// asks for at most, up to the cap. The keep-alive stops, and
			// the lease ends at its expiry, lost for its max_hold, when no
			// cap is known even now (a lease granted WithOwner without
			// waiting, maybe a renewal, by a worker from before lock_info
			// showed max_hold), or when the refusal left the room as it
			// was (its lock_info another lease's or older): every next
			// extension would be refused alike.
			l.mu.Lock()
			l.capHit = l.maxHold == 0 || l.capRoom() == room
			capped = l.capReached()
			l.mu.Unlock()
			if capped {
				return
			}
		}
		refused := (*Error)(nil)
		unanswered = err != nil && !errors.As(err, &refused) // a refusal is an answer
		if unanswered {
			owed += ext
		} else {
			owed = 0
		}
		if errors.Is(err, ErrUnauthenticated) {
			// The token expired: no extension can be sent any more, and the
			// lease is lost for that, not later for want of an answer.
			l.lose(fmt.Errorf("%w: keep-alive: %w", ErrLeaseLost, err))
		}
	}
}
