// Package rules is the lock model as pure functions: given the state of one
// lock (its limit, its holders, its queue and the database's time), what a
// command or the passing of time does to it. The handlers load a lock's
// state, ask these functions, and write what they decide; nothing here
// touches a database (the callbacks Lock.NextTokens and Lock.More do, for
// the handlers), so every rule is written once, in Go, and tested on its
// own. Memory holds a lock's whole state in memory: the reference model
// that the handlers' differential test checks their database paths, the
// one-statement common cases included, against.
//
// # The model
//
// A lock has a limit L (1 unless an acquire asks for more) and holders,
// each with its own owner, mode, fencing token and lease. A holder in
// exclusive mode takes one of the L places: with L = 1 it is a mutex's
// holder or a read/write lock's writer, with L > 1 one of a counting
// semaphore's holders. Holders in shared mode (read locks, L = 1 only) take
// no place but exclude exclusive ones: any number of shared holders
// together, or up to L exclusive ones. So a request is compatible with the
// holders when, exclusive, there are fewer than L of them, or, shared, none
// of them is exclusive.
//
// Waiters queue in FIFO order and are served strictly in it: a waiter is
// granted only when it is compatible with every holder and no earlier
// waiter still waits, so a writer waiting behind readers is never starved
// by later readers. When holders leave, the compatible waiters at the head
// of the queue are granted together (a run of readers, or as many
// semaphore holders as there are free places). A waiter past its deadline
// is never granted, only answered (LOCK_TIMEOUT): the FIFO order is the
// order of the grants, and a live waiter may be granted while one before
// it, past its deadline, is still to be answered (Lock.Due).
//
// A lease ends when its holder releases it, when the database's time
// passes its expiry, when it is revoked, or, for a lease of a session,
// when the session ends (EndSessions; or, past the session's expiry, at its
// owner's acquire: Acquire); a wait ends at its deadline, or with
// its session (or, once the session is past its expiry, at a hand-off that
// reaches it: HandOff). Ended leases and waits are settled (lock.expired,
// LOCK_TIMEOUT) by whatever looks at the lock first: a command, the expiry
// scheduler or cleanup.
//
// A lease may carry a lock-delay and a cap on its hold time (max_hold).
// Every end of a lease but its holder's own release (or its session's
// close) starts its lock-delay (Lock.EndLease): the lock then grants
// nothing, to new acquires or to waiters, until the delay passes, so that a
// holder that lost its lease unawares cannot meet the next one. No
// extension or renewal carries a lease past its acquired_at + max_hold
// (MAX_HOLD_EXCEEDED), and no extension more than
// topics.MaxLeaseAheadSeconds past now (INVALID_REQUEST).
//
// # Exported names
//
// Everything here is for the handlers package of this module and its tests.
package rules

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/omninode/lockworker/topics"
)

// Mode is how a holder holds a lock.
type Mode string

// Modes.
const (
	Exclusive Mode = "exclusive"
	Shared    Mode = "shared"
)

// Holder is one lease of a lock: in force, or ended by time and not yet
// settled.
type Holder struct {
	Owner      string
	Mode       Mode
	Token      int64
	AcquiredAt time.Time
	ExpiresAt  time.Time
	Lease      float64 // seconds, the acquire's lease_duration
	Metadata   []byte
	Extensions int64
	ReplyTo    string
	RequestID  string
	// Partition is the commands partition whose expiry scheduler watches
	// the lease.
	Partition int32
	// Session, when set, keeps the lease alive: it has no expiry of its own
	// and ends with the session (EndSessions) or by its release; ExpiresAt
	// is then the session's as the caller read it, which lock_info shows
	// and past which no acquire of the owner keeps the lease (Acquire).
	Session string
	// LockDelay (seconds, 0: none) keeps the lock from granting for that
	// long after the lease ends otherwise than by its holder's release;
	// MaxHold (seconds, 0: none) caps the lease at AcquiredAt + MaxHold.
	LockDelay, MaxHold float64
}

// Waiter is a queued acquire.
type Waiter struct {
	ID        int64 // queue order: lower first
	Owner     string
	Mode      Mode
	RequestID string
	Lease     float64
	Metadata  []byte
	ReplyTo   string
	Deadline  time.Time
	Partition int32
	// Session is the session the wait ends with, and SessionExpires that
	// session's expiry (what a grant's lease shows).
	Session        string
	SessionExpires time.Time
	// LockDelay and MaxHold are the acquire's, for its lease.
	LockDelay, MaxHold float64
	// Position is the waiter's place in the whole queue (1 = next), for
	// Lock.Mine only, and loaded only for an acquire, which a requeue
	// answers with (0 otherwise: counting it reads every waiter ahead).
	Position int
}

// Lock is one lock's state as a transaction sees it. The queue may be
// long, so the caller loads only what a decision can need: the first live
// waiters (Head), the waiters whose deadline has passed (Due: all, or the
// oldest of them) and the command owner's own waiter (Mine); Waiting
// counts them all.
type Lock struct {
	Limit   int
	Holders []Holder // by token
	// Head is the first live waiters (deadline after Now), in order; the
	// rest are loaded by More when Head runs out.
	Head []Waiter
	// More returns the live waiters after the one of ID after, in order,
	// as many as the caller likes, and whether any live waiter follows
	// them (none, and false: Head held them all). Nil: Head holds every
	// live waiter. Each read says where the live waiters end, as Waiting
	// cannot (it counts those past their deadline that Due does not hold):
	// retryAfter is exact up to the last one read.
	More func(after int64) (ws []Waiter, more bool)
	// Due is the waiters whose deadline has passed that the decision
	// answers (LOCK_TIMEOUT), in order: every one, or as many as the
	// caller bounds a decision to, those of the oldest deadlines (and the
	// owner's, Mine), so that a backlog is answered a bound at a time.
	// The others count in Waiting (live then counts too many) and wait
	// for a later decision: they are never granted, so the live waiters
	// behind them are handed the lock as if they were gone, and only
	// their answer comes later. (Strict FIFO orders grants: a waiter past
	// its deadline never holds the lock, whenever it is answered.)
	Due []Waiter
	// Mine is the command owner's waiter, if it waits, with its Position.
	Mine *Waiter
	// Waiting counts every waiter, live and due.
	Waiting int
	// Ended is the lease that ended last, and how (Released or Expired):
	// what the lock shows when nobody holds it.
	Ended       *Holder
	EndedStatus Status
	// Acquisitions counts the grants of the lock so far.
	Acquisitions int64
	// DelayUntil, when not zero, is the end of the lock's lock-delay: it
	// grants nothing before then. Settle clears a delay that has passed.
	DelayUntil time.Time
	// Now is the database's time, which decides every expiry.
	Now time.Time
	// NextTokens hands out n (> 0) new fencing tokens, increasing, in one
	// call (the database's sequence: one round trip for a hand-off's whole
	// run of grants).
	NextTokens func(n int) []int64
	// SessionLive, asked only about a waiter a hand-off would grant, or a
	// lease a revoke would end, whose session looks past its expiry, tells
	// whether that session may still be granted a lease and keep its
	// leases, with its expiry as it stands: false when it has ended or is
	// past its expiry with nothing in flight that could renew it; true when
	// it was renewed meanwhile, or when a command of it or its end is in
	// flight (which then settles what is granted, and finds a revoked
	// lease gone). Nil: the expiries loaded are the truth.
	SessionLive func(id string) (expires time.Time, live bool)

	// last is the ID of the last waiter taken from or loaded into Head;
	// withdrawn the waiters the decision took off the queue (More still
	// sees them): the owner's, or the waits of ending sessions; drained
	// that More said no live waiter follows last.
	last      int64
	withdrawn []int64
	drained   bool
}

// Status is what lock_info calls the state of the lease an event is about.
type Status string

// Statuses.
const (
	Acquired Status = "acquired"
	Released Status = "released"
	Expired  Status = "expired"
	// Revoked: the lease was ended by a revoke.
	Revoked Status = "revoked"
	Free    Status = "free"
)

// Kind is what an Effect does.
type Kind int

// Kinds of effects.
const (
	// Grant makes Holder a holder: the command's owner (Waiter zero) or the
	// waiter Waiter, taken off the queue.
	Grant Kind = iota + 1
	// Renew: the command's owner held the lock already; Holder is its lease
	// with the later expiry.
	Renew
	// Queue puts the command in the queue as Waiter, at Position.
	Queue
	// Requeue gives the place of the owner's waiting request Prev to the
	// command, Waiter, at Position: Prev is answered lock.withdrawn.
	Requeue
	// Withdraw takes the command's owner, Waiter, off the queue.
	Withdraw
	// Timeout ends the wait of Waiter: LOCK_TIMEOUT.
	Timeout
	// Expire ends Holder's lease, past its expiry.
	Expire
	// Release ends the command owner's lease, Holder.
	Release
	// Extend lengthens the command owner's lease, Holder.
	Extend
	// Refuse answers the command lock.rejected with Code.
	Refuse
	// Revoke ends Holder's lease by a revoke.
	Revoke
	// Lose ends Holder's lease because its session ended (Reason; Info's
	// status is released for a closed session, expired for an expired one),
	// or, past the session's expiry, at its owner's acquire.
	Lose
	// Drop takes Waiter off the queue because its session ended (Reason).
	Drop
)

// Effect is one thing a decision does, in the order it happens. Info is
// the lock as the effect's event shows it: the holder it is about, or for
// effects not about a holder the lock as it is at that moment.
type Effect struct {
	Kind       Kind
	Holder     Holder
	Waiter     Waiter
	Prev       Waiter
	Position   int
	Code       string
	Message    string
	RetryAfter time.Duration
	// Reason is why a session's end did Lose or Drop.
	Reason string
	Info   Info
}

// Info is what lock_info shows: a lease (Holder zero when the lock is free)
// and its status, and the lock's counts at that moment.
type Info struct {
	Holder       Holder
	Status       Status
	Acquisitions int64
	Limit        int
	Holders      int
}

// Error codes the rules answer with (those of the contract).
const (
	CodeLockHeld      = "LOCK_HELD"
	CodeNotOwner      = "NOT_OWNER"
	CodeNotHeld       = "NOT_HELD"
	CodeTokenMismatch = "TOKEN_MISMATCH"
	CodeLimitMismatch = "LIMIT_MISMATCH"
	CodeModeMismatch  = "MODE_MISMATCH"
	CodeMaxHold       = "MAX_HOLD_EXCEEDED"
	CodeSessionBound  = "SESSION_BOUND"
	// CodeInvalidRequest answers a renewal, or a release of a lease
	// without its token, that the deployment's REQUIRE_FENCING_TOKEN
	// forbids (Request.TokenOnly, Release's tokenRequired), and an extend
	// past topics.MaxLeaseAheadSeconds.
	CodeInvalidRequest = "INVALID_REQUEST"
)

// Request is an acquire.
type Request struct {
	Owner     string
	Mode      Mode
	Limit     int
	Lease     float64
	Wait      float64 // seconds; 0: refuse at once rather than wait
	Metadata  []byte
	ReplyTo   string
	RequestID string
	Partition int32
	Key       string // the lock key, for messages
	// Session ties the lease and the wait to a live session, which expires
	// at SessionExpires (checked by the caller).
	Session        string
	SessionExpires time.Time
	// LockDelay and MaxHold are the lease's if granted (see Holder);
	// Lease is at most MaxHold.
	LockDelay, MaxHold float64
	// TokenOnly refuses the owner's renewal of a lease it holds: under
	// REQUIRE_FENCING_TOKEN only the lease's fencing_token keeps it
	// (extend), so an owner_id alone, which events show, cannot.
	TokenOnly bool
}

// RenewSession brings the leases and waits of session id, as loaded with
// the lock, up to expires, the session's expiry read again since (a
// keep-alive committed after they were read): what the lock decides then
// sees the session as live as the caller found it, and does not end its
// lease as lapsed.
func (l *Lock) RenewSession(id string, expires time.Time) {
	for i := range l.Holders {
		if h := &l.Holders[i]; h.Session == id && h.ExpiresAt.Before(expires) {
			h.ExpiresAt = expires
		}
	}
	renew := func(w *Waiter) {
		if w.Session == id && w.SessionExpires.Before(expires) {
			w.SessionExpires = expires
		}
	}
	for i := range l.Head {
		renew(&l.Head[i])
	}
	for i := range l.Due {
		renew(&l.Due[i])
	}
	if l.Mine != nil {
		renew(l.Mine)
	}
}

// holder returns the index of owner's lease, or -1.
func (l *Lock) holder(owner string) int {
	return slices.IndexFunc(l.Holders, func(h Holder) bool { return h.Owner == owner })
}

// counts is a lock's holders as compatibility sees them: how many, and how
// many of them are exclusive.
type counts struct{ n, x int }

func (c *counts) add(m Mode, d int) {
	c.n += d
	if m == Exclusive {
		c.x += d
	}
}

// fits reports whether a request of mode could hold a lock of limit beside
// holders c: exclusive, when there are fewer than limit of them; shared,
// when none of them is exclusive (compatible's rule, on counts).
func (c counts) fits(mode Mode, limit int) bool {
	if mode == Shared {
		return c.x == 0
	}
	return c.n < limit
}

// compatible reports whether a request of mode could hold the lock beside
// its holders: fits's rule, on the holders themselves.
func (l *Lock) compatible(mode Mode) bool {
	if mode == Shared {
		return !slices.ContainsFunc(l.Holders, func(h Holder) bool { return h.Mode == Exclusive })
	}
	return len(l.Holders) < l.Limit
}

// Info is the lock as it is now: its newest lease in force, or the lease
// that ended last, or free. A lease past its expiry shows as expired, a
// session's once its session has ended (Live).
func (l *Lock) Info() Info { return l.info(Holder.Live) }

// ReadInfo is Info as a read (query) shows it: a session's lease past its
// session's expiry shows as expired too (Lasts).
func (l *Lock) ReadInfo() Info { return l.info(Holder.Lasts) }

// info is Info, with the newest lease expired unless live.
func (l *Lock) info(live func(Holder, time.Time) bool) Info {
	in := Info{Acquisitions: l.Acquisitions, Limit: l.Limit, Holders: len(l.Holders), Status: Free}
	switch {
	case len(l.Holders) > 0:
		in.Holder = l.Holders[len(l.Holders)-1]
		in.Status = Acquired
		if !live(in.Holder, l.Now) {
			in.Status = Expired
		}
	case l.Ended != nil:
		in.Holder, in.Status = *l.Ended, l.EndedStatus
	}
	return in
}

// about is Info for an effect about h.
func (l *Lock) about(h Holder, s Status) Info {
	in := l.Info()
	in.Holder, in.Status = h, s
	return in
}

// Settle ends every lease past its expiry (lock.expired, in token order)
// and hands the lock to its waiters if that frees it for them, clearing
// first a lock-delay that has passed. It returns the owners whose leases
// it ended.
func (l *Lock) Settle() (effs []Effect, ended []string) {
	effs, ended = l.settleExpired()
	return append(effs, l.HandOff()...), ended
}

// settleExpired is Settle without the hand-off.
func (l *Lock) settleExpired() (effs []Effect, ended []string) {
	l.delayed()
	effs = l.endLeases(Expire, Expired, "", func(h *Holder) bool { return !h.Live(l.Now) })
	for _, e := range effs {
		ended = append(ended, e.Holder.Owner)
	}
	return effs, ended
}

// SettledDelay is DelayUntil as ending the leases past their expiry would
// leave it, without changing the lock: with the lock-delays they start as
// they are ended (noteEnd, on a copy), by Settle, or, a session's, by its
// session's end (Lasts). A time not after Now means no lock-delay.
func (l *Lock) SettledDelay() time.Time {
	c := *l
	for _, h := range l.Holders {
		if !h.Lasts(l.Now) {
			c.noteEnd(h, Expired)
		}
	}
	return c.DelayUntil
}

// Live reports whether the lease is in force at now as Settle sees it: a
// session's lease is until its session ends, whatever the time.
func (h Holder) Live(now time.Time) bool { return h.Session != "" || h.Lasts(now) }

// Lasts reports whether the lease runs past now: whether its expiry (a
// session's lease's is its session's, as loaded) is after now. A session's
// lease that does not has ended with its session, though nothing may have
// ended the session yet (lapsed): a read shows it expired (ReadInfo,
// SettledDelay).
func (h Holder) Lasts(now time.Time) bool { return h.ExpiresAt.After(now) }

// EndLease ends the lease of Holders[i], which ended as s, and returns it:
// it becomes the lease that ended last. Every end but its holder's own
// release (Released) starts the lease's lock-delay, if it has one: an
// expiry, a revoke, and any other end a holder did not ask for. The delay
// runs from the lease's end: an expired lease's expires_at (or its
// session's), however late the expiry is seen, else now.
func (l *Lock) EndLease(i int, s Status) Holder {
	h := l.Holders[i]
	l.Holders = slices.Delete(l.Holders, i, i+1)
	l.noteEnd(h, s)
	return h
}

// noteEnd is what EndLease does for h, taken off Holders already.
func (l *Lock) noteEnd(h Holder, s Status) {
	l.Ended, l.EndedStatus = &h, s
	if s != Released && h.LockDelay > 0 {
		if until := h.delayEnd(s, l.Now); until.After(l.Now) && until.After(l.DelayUntil) { // not one passed already
			l.DelayUntil = until
		}
	}
}

// endLeases ends, in token order, the leases of the holders that end picks
// (end may bring a holder's session expiry up to date: Revoke), each as
// EndLease does, and returns an effect of kind (with reason) about each,
// whose lock_info counts the holders left and the leases still to end
// after it, as if EndLease had ended them one by one. It does so in one
// pass, keeping the holders left in their order: EndLease moves every
// later holder, so ending k of n leases one at a time would take O(n·k) (a
// shared lock's readers granted together expire together), all under the
// partition's offset row.
func (l *Lock) endLeases(kind Kind, s Status, reason string, end func(h *Holder) bool) []Effect {
	var gone []Holder
	left := l.Holders[:0]
	for i := range l.Holders {
		if h := &l.Holders[i]; end(h) {
			gone = append(gone, *h)
		} else {
			left = append(left, *h)
		}
	}
	clear(l.Holders[len(left):]) // as slices.Delete does
	l.Holders = left
	var effs []Effect
	for j, h := range gone {
		l.noteEnd(h, s)
		in := l.about(h, s)
		in.Holders += len(gone) - 1 - j
		effs = append(effs, Effect{Kind: kind, Holder: h, Reason: reason, Info: in})
	}
	return effs
}

// delayEnd is the end of the lock-delay h starts when its lease, seen
// ending as s at seen, ends otherwise than by its holder's release: the
// delay runs from an expired lease's expires_at (or its session's), however
// late the expiry is seen, else from seen.
func (h Holder) delayEnd(s Status, seen time.Time) time.Time {
	end := seen
	if s == Expired && h.ExpiresAt.Before(end) && h.ExpiresAt.After(h.AcquiredAt) {
		end = h.ExpiresAt
	}
	return end.Add(seconds(h.LockDelay))
}

// delayed reports whether the lock is in a lock-delay now, clearing one
// that has passed.
func (l *Lock) delayed() bool {
	if !l.DelayUntil.IsZero() && !l.DelayUntil.After(l.Now) {
		l.DelayUntil = time.Time{}
	}
	return !l.DelayUntil.IsZero()
}

// HandOff grants the lock to the waiters at the head of the queue that are
// compatible with its holders, in order, stopping at the first that is not.
// When it can grant (or the lock has neither holders nor live waiters), it
// first answers the waiters whose deadline has passed (Due), none of which
// is granted, and on its way drops the waits of sessions past their expiry
// (Drop, session_expired: sessionLive). In a lock-delay it grants nothing.
// The run is chosen first, then its fencing tokens are drawn together.
func (l *Lock) HandOff() []Effect {
	if l.Waiting == 0 || l.delayed() {
		return nil
	}
	l.fill()
	open := len(l.Head) > 0 && l.compatible(l.Head[0].Mode) || len(l.Head) == 0 && len(l.Holders) == 0
	if !open {
		return nil
	}
	effs := l.TimeOut()
	type next struct {
		w     Waiter
		grant bool // else dropped
	}
	var run []next
	grants := 0
	c := l.counts()
	for l.fill(); len(l.Head) > 0 && c.fits(l.Head[0].Mode, l.Limit); l.fill() {
		w := l.Head[0]
		l.Head = l.Head[1:]
		l.last = w.ID
		l.Waiting--
		l.leave(w)
		live := l.sessionLive(w.Session, &w.SessionExpires)
		if live {
			c.add(w.Mode, 1)
			grants++
		}
		run = append(run, next{w, live})
	}
	tokens := l.tokens(grants)
	for _, n := range run {
		if !n.grant {
			effs = append(effs, Effect{Kind: Drop, Waiter: n.w, Reason: ReasonSessionExpired, Info: l.Info()})
			continue
		}
		effs = append(effs, l.grant(n.w, tokens[0]))
		tokens = tokens[1:]
	}
	return effs
}

// counts is the lock's holders as compatibility sees them.
func (l *Lock) counts() counts {
	var c counts
	for _, h := range l.Holders {
		c.add(h.Mode, 1)
	}
	return c
}

// tokens draws n fencing tokens, increasing (none for 0).
func (l *Lock) tokens(n int) []int64 {
	if n == 0 {
		return nil
	}
	return l.NextTokens(n)
}

// sessionLive reports whether session id (none: "") of a waiter, or of a
// holder, is live, bringing its expiry as loaded, expires, up to date. A
// session past its expiry that its scheduler has not ended yet (another
// partition's, or before its tick) is never granted a lease, as an acquire
// in it is refused: a hand-off drops its wait instead; and its lease has
// ended with it, which a revoke does not revoke. The session is asked again
// (SessionLive), since a keep-alive that found it live may have committed
// after its old expiry.
func (l *Lock) sessionLive(id string, expires *time.Time) bool {
	if id == "" || expires.After(l.Now) {
		return true
	}
	if l.SessionLive == nil {
		return false
	}
	exp, live := l.SessionLive(id)
	if live {
		*expires = exp
	}
	return live
}

// fill loads the next live waiters into an empty Head, as this decision
// left them: the owner's waiter as the command changed it, and none it
// withdrew (the owner's, or the waits of ending sessions). Head is then
// empty only when no live waiter is left.
func (l *Lock) fill() {
	if l.More == nil {
		return
	}
	for len(l.Head) == 0 && l.live() > 0 && !l.drained {
		ws, more := l.More(l.last)
		l.drained = !more
		for _, w := range ws {
			l.last = w.ID
			switch {
			case slices.Contains(l.withdrawn, w.ID):
			case l.Mine != nil && w.ID == l.Mine.ID:
				l.Head = append(l.Head, *l.Mine)
			default:
				l.Head = append(l.Head, w)
			}
		}
	}
}

// TimeOut answers the waiters whose deadline has passed that Due holds
// (LOCK_TIMEOUT).
func (l *Lock) TimeOut() []Effect {
	var effs []Effect
	for _, w := range l.Due {
		l.Waiting--
		l.leave(w)
		effs = append(effs, Effect{Kind: Timeout, Waiter: w, Info: l.Info()})
	}
	l.Due = nil
	return effs
}

// leave keeps Mine true when w leaves the queue.
func (l *Lock) leave(w Waiter) {
	switch {
	case l.Mine == nil:
	case l.Mine.ID == w.ID:
		l.Mine = nil
	case w.ID < l.Mine.ID:
		l.Mine.Position--
	}
}

// grant makes w a holder with fencing token token: a waiter taken off the
// queue, or (ID 0) the command's owner.
func (l *Lock) grant(w Waiter, token int64) Effect {
	h := Holder{Owner: w.Owner, Mode: w.Mode, Token: token, AcquiredAt: l.Now, ExpiresAt: l.Now.Add(seconds(w.Lease)),
		Lease: w.Lease, Metadata: w.Metadata, ReplyTo: w.ReplyTo, RequestID: w.RequestID, Partition: w.Partition, Session: w.Session,
		LockDelay: w.LockDelay, MaxHold: w.MaxHold}
	if w.Session != "" {
		h.ExpiresAt = w.SessionExpires
	}
	l.Holders = append(l.Holders, h)
	l.Acquisitions++
	if w.ID == 0 {
		w = Waiter{}
	}
	return Effect{Kind: Grant, Holder: h, Waiter: w, Info: l.about(h, Acquired)}
}

// capped refuses to carry h's lease to until when that is past its max_hold.
func (l *Lock) capped(h Holder, until time.Time, key string) (Effect, bool) {
	if h.MaxHold == 0 {
		return Effect{}, false
	}
	end := h.AcquiredAt.Add(seconds(h.MaxHold))
	if !until.After(end) {
		return Effect{}, false
	}
	return l.refuseLease(h, CodeMaxHold, fmt.Sprintf("the lease of lock %q would end at %s, past acquired_at + max_hold (%gs) = %s",
		key, until.UTC().Format(time.RFC3339Nano), h.MaxHold, end.UTC().Format(time.RFC3339Nano))), true
}

// Acquire decides an acquire, after settling the lock: renew the owner's
// lease, grant, refuse, or queue.
func (l *Lock) Acquire(r Request) []Effect {
	// One hand-off, once the owner's lapsed lease has ended too, as a
	// session's end does (EndSessions): that lease's lock-delay keeps the
	// place another ended lease freed.
	effs, _ := l.settleExpired()
	effs = append(effs, l.lapsed(r.Owner)...)
	effs = append(effs, l.HandOff()...)
	if i := l.holder(r.Owner); i >= 0 {
		h := &l.Holders[i]
		switch {
		case r.TokenOnly:
			return append(effs, l.refuse(CodeInvalidRequest, fmt.Sprintf(
				"%q holds lock %q already: under REQUIRE_FENCING_TOKEN a lease is kept only with its fencing_token (extend), not renewed by an acquire", r.Owner, r.Key)))
		case h.Mode != r.Mode:
			return append(effs, l.refuse(CodeModeMismatch, fmt.Sprintf("%q holds lock %q in %s mode", r.Owner, r.Key, h.Mode)))
		case r.Limit != l.Limit:
			return append(effs, l.limitMismatch(r))
		}
		switch until := l.Now.Add(seconds(r.Lease)); {
		case r.Session != "" && h.MaxHold > 0:
			// The session would keep it alive past any cap.
			return append(effs, l.refuseLease(*h, CodeMaxHold, fmt.Sprintf("the lease of lock %q has a max_hold: no session may keep it alive", r.Key)))
		case r.Session != "":
			// The latest acquire decides what keeps the lease: its session.
			h.Session, h.ExpiresAt = r.Session, r.SessionExpires
		case h.Session != "":
			// Or its own lease, from now.
			h.Session, h.ExpiresAt = "", until
		case until.After(h.ExpiresAt):
			if e, ok := l.capped(*h, until, r.Key); ok {
				return append(effs, e)
			}
			h.ExpiresAt = until
		}
		if r.ReplyTo != "" {
			h.ReplyTo = r.ReplyTo
		}
		return append(effs, Effect{Kind: Renew, Holder: *h, Info: l.about(*h, Acquired)})
	}
	// Waiters past their deadline hold nothing to agree with: in a
	// lock-delay, where HandOff does not answer them, they would otherwise
	// keep a lock nobody holds or waits for at their limit until the
	// scheduler's next pass.
	if (len(l.Holders) > 0 || l.waits()) && r.Limit != l.Limit {
		return append(effs, l.limitMismatch(r))
	}
	if !l.waits() && l.compatible(r.Mode) && !l.delayed() {
		if len(l.Holders) == 0 {
			l.Limit = r.Limit
		}
		effs = append(effs, l.TimeOut()...)
		return append(effs, l.grant(r.waiter(l.Now), l.tokens(1)[0]))
	}
	if r.Wait == 0 {
		return append(effs, l.lockHeld(r))
	}
	effs = append(effs, l.TimeOut()...)
	w := r.waiter(l.Now)
	if l.Mine != nil {
		prev := *l.Mine
		w.ID, w.Position = prev.ID, prev.Position
		l.Mine = &w
		for i := range l.Head {
			if l.Head[i].ID == w.ID {
				l.Head[i] = w
			}
		}
		effs = append(effs, Effect{Kind: Requeue, Waiter: w, Prev: prev, Position: w.Position, Info: l.Info()})
		// A waiter asking again in the other mode may be compatible now.
		return append(effs, l.HandOff()...)
	}
	if len(l.Holders) == 0 && !l.waits() {
		// The first waiter of a free lock (in its lock-delay) sets the
		// limit every later holder and waiter must agree with (those past
		// their deadline Due did not hold are never granted).
		l.Limit = r.Limit
	}
	l.Waiting++
	w.Position = l.Waiting
	l.Mine = &w
	if len(l.Head) == l.Waiting-1 && l.More == nil {
		l.Head = append(l.Head, w) // the queue was all loaded: it still is
	}
	return append(effs, Effect{Kind: Queue, Waiter: w, Position: w.Position, Info: l.Info()})
}

// lapsed ends owner's lease when it is a session's whose expiry has passed
// (its end not seen yet), as that end will (Lose, session_expired, its
// lock-delay from the session's expiry); the caller then hands the lock
// on, and the session's end finds nothing of it. Else a renewal would
// keep, with its own expiry or another session's, a lease that ended with
// its session, skipping its lock.expired and its lock-delay. The caller reads
// such a session's expiry again before it reads Now, once no keep-alive of
// it is in flight (handlers: rereadLapsedSession): one that found it live
// may commit its new expiry after the old one, and the lease then lives
// on, showing that expiry, if Now has not passed it.
func (l *Lock) lapsed(owner string) []Effect {
	return l.loseLapsed(func(h *Holder) bool { return h.Owner == owner && h.Session != "" && !h.Lasts(l.Now) })
}

// loseLapsed ends the leases that lapsed picks, each of a session past its
// expiry, as that session's end will: Lose, session_expired, its lock-delay
// from the session's expiry.
func (l *Lock) loseLapsed(lapsed func(h *Holder) bool) []Effect {
	return l.endLeases(Lose, Expired, ReasonSessionExpired, lapsed)
}

// waiter is the acquire as a waiter that would queue at now.
func (r Request) waiter(now time.Time) Waiter {
	return Waiter{Owner: r.Owner, Mode: r.Mode, RequestID: r.RequestID, Lease: r.Lease, Metadata: r.Metadata,
		ReplyTo: r.ReplyTo, Deadline: now.Add(seconds(r.Wait)), Partition: r.Partition, Session: r.Session, SessionExpires: r.SessionExpires,
		LockDelay: r.LockDelay, MaxHold: r.MaxHold}
}

// live counts the waiters whose deadline has not passed, and those past it
// that Due does not hold (see Due): 0 only when none is live.
func (l *Lock) live() int { return l.Waiting - len(l.Due) }

// waits reports whether a live waiter waits (Head, after loading it).
func (l *Lock) waits() bool {
	l.fill()
	return len(l.Head) > 0
}

func (l *Lock) limitMismatch(r Request) Effect {
	return l.refuse(CodeLimitMismatch, fmt.Sprintf("lock %q has limit %d, the acquire asked for %d", r.Key, l.Limit, r.Limit))
}

// lockHeld refuses an acquire that would have to wait, RetryAfter until
// it could be granted (retryAfter).
func (l *Lock) lockHeld(r Request) Effect {
	owner := l.Info().Holder.Owner
	e := l.refuse(CodeLockHeld, fmt.Sprintf("lock %q is held by %q", r.Key, owner))
	if l.delayed() {
		e.Message = fmt.Sprintf("lock %q grants nothing until %s: the lock-delay of a lease that ended without its holder's release",
			r.Key, l.DelayUntil.UTC().Format(time.RFC3339Nano))
	}
	e.RetryAfter = l.retryAfter(r)
	return e
}

// retryAfter is how long until r could be granted if no other command
// came, never more than the cap: when every lease now held has ended and
// every lock-delay too, the lock's and those the leases start.
//
// The leases now held end at their expiry (a session's with its session),
// each starting its lock-delay as EndLease does; nothing is granted before
// a delay ends. The live waiters are served in order whenever the one at
// the front fits, and a waiter granted holds on (its lease has not begun);
// a wait ends at its deadline, or with its session. Only the front's end
// changes who is served next: a wait behind it that ends first is passed
// over when it reaches the front. r is served at its owner's wait while
// that waits in r's mode (in the other mode it is granted there and r is
// not: the cap), else after every waiter; the cap when that is never, or
// when r would be reached only past the waiters loaded. A session past its
// expiry, its end not seen yet, ends now: its lease, then its lock-delay
// begins (from the session's expiry), and its wait.
//
// The cost: the holders sorted by expiry, then one step per lease, wait or
// delay that ends; the waiters are read in place (with the limit at its
// 10,000, Head holds 10,016 of them).
func (l *Lock) retryAfter(r Request) time.Duration {
	type lease struct {
		mode       Mode
		end, until time.Duration // from Now: its expiry, the end of the lock-delay it starts
	}
	var delay time.Duration // nothing is granted before
	if l.delayed() {
		delay = l.DelayUntil.Sub(l.Now)
	}
	last := delay // the cap
	var c counts
	hs := make([]lease, len(l.Holders))
	for i, h := range l.Holders {
		seen := h.ExpiresAt
		if seen.Before(l.Now) {
			seen = l.Now
		}
		hs[i] = lease{mode: h.Mode, end: h.ExpiresAt.Sub(l.Now), until: h.delayEnd(Expired, seen).Sub(l.Now)}
		last = max(last, hs[i].end, hs[i].until)
		c.add(h.Mode, 1)
	}
	slices.SortFunc(hs, func(a, b lease) int { return cmp.Compare(a.end, b.end) })
	ws, all := l.queue()
	mine := -1 // r's owner's wait, in ws
	if l.Mine != nil {
		mine = slices.IndexFunc(ws, func(w Waiter) bool { return w.ID == l.Mine.ID })
	}
	ends := func(w *Waiter) time.Duration { // the wait, from Now
		if w.Session != "" && w.SessionExpires.Before(w.Deadline) {
			return w.SessionExpires.Sub(l.Now)
		}
		return w.Deadline.Sub(l.Now)
	}
	for t := time.Duration(0); ; {
		for ; len(hs) > 0 && hs[0].end <= t; hs = hs[1:] {
			c.add(hs[0].mode, -1)
			delay = max(delay, hs[0].until)
		}
		if t >= delay {
			for ; len(ws) > 0; ws = ws[1:] {
				w := &ws[0]
				switch {
				case ends(w) <= t:
					mine-- // passed over (r's owner's wait too: r then comes last)
					continue
				case !c.fits(w.Mode, l.Limit):
				case mine == 0 && w.Mode == r.Mode:
					return t
				case mine == 0:
					return last
				default:
					c.add(w.Mode, 1)
					mine--
					continue
				}
				break
			}
			switch {
			case len(ws) > 0:
			case !all:
				return last
			case c.fits(r.Mode, l.Limit):
				return t
			}
		}
		// The next moment anything may change: a lease or the delay ends,
		// or the wait at the front.
		next := last
		if len(hs) > 0 {
			next = min(next, hs[0].end)
		}
		if t < delay {
			next = min(next, delay)
		} else if len(ws) > 0 {
			next = min(next, ends(&ws[0]))
		}
		if next <= t {
			return last
		}
		t = next
	}
}

// queue is the live waiters in order, as far as they are loaded (Head,
// read in place), and whether they are all of them: as the last read said
// (More), not by Waiting, which counts the waiters past their deadline
// that Due does not hold.
func (l *Lock) queue() (ws []Waiter, all bool) {
	l.fill() // a hand-off in a lock-delay loads no Head
	return l.Head, l.More == nil || l.drained
}

func (l *Lock) refuse(code, msg string) Effect {
	return Effect{Kind: Refuse, Code: code, Message: msg, Info: l.Info()}
}

// refuseLease is refuse about h, a holder's lease the refusal leaves as it
// was (MAX_HOLD_EXCEEDED): its lock_info shows that lease, whose expiry
// and room its holder reads from it, not the lock's newest.
func (l *Lock) refuseLease(h Holder, code, msg string) Effect {
	e := l.refuse(code, msg)
	e.Info = l.about(h, Acquired)
	return e
}

// Release decides a release by owner (guarded by token when given; a
// lease is not ended without it when tokenRequired): an owner still
// waiting leaves the queue, before any ended lease is settled (settling
// must not grant the lock to the owner giving it up); a holder's lease
// ends and the lock goes to the next waiters.
func (l *Lock) Release(owner, key string, token *int64, tokenRequired bool) []Effect {
	if l.Mine != nil {
		w := *l.Mine
		l.withdraw(w)
		effs := []Effect{{Kind: Withdraw, Waiter: w, Info: l.Info()}}
		more, _ := l.Settle()
		return append(effs, more...)
	}
	effs, ended := l.Settle()
	i := l.holder(owner)
	switch {
	case i >= 0 && token != nil && *token != l.Holders[i].Token:
		return append(effs, l.refuse(CodeTokenMismatch, fmt.Sprintf("fencing_token %d is not the holder's", *token)))
	case i >= 0 && token == nil && tokenRequired:
		return append(effs, l.refuse(CodeInvalidRequest,
			"fencing_token is required to release a lease (REQUIRE_FENCING_TOKEN); without it a release only withdraws a wait"))
	case i >= 0:
		h := l.EndLease(i, Released)
		effs = append(effs, Effect{Kind: Release, Holder: h, Info: l.about(h, Released)})
		return append(effs, l.HandOff()...)
	}
	return append(effs, l.notHolder(owner, key, ended))
}

// notHolder refuses a holder's command from an owner that holds nothing.
func (l *Lock) notHolder(owner, key string, ended []string) Effect {
	switch {
	case slices.Contains(ended, owner):
		return l.refuse(CodeNotHeld, "the lease had already expired")
	case len(l.Holders) > 0:
		return l.refuse(CodeNotOwner, fmt.Sprintf("lock %q is held by another owner", key))
	}
	return l.refuse(CodeNotHeld, fmt.Sprintf("lock %q is not held", key))
}

// withdraw takes w, wherever it waits, off the queue.
func (l *Lock) withdraw(w Waiter) {
	l.Waiting--
	l.leave(w)
	l.withdrawn = append(l.withdrawn, w.ID)
	l.Head = slices.DeleteFunc(l.Head, func(x Waiter) bool { return x.ID == w.ID })
	l.Due = slices.DeleteFunc(l.Due, func(x Waiter) bool { return x.ID == w.ID })
}

// Extend decides an extend by owner (guarded by token when given): its
// lease, still in force, ends by seconds later (0: by its lease_duration),
// within its max_hold (MAX_HOLD_EXCEEDED) and at most
// topics.MaxLeaseAheadSeconds past now (INVALID_REQUEST), else the lease
// stays as it was.
func (l *Lock) Extend(owner, key string, token *int64, by float64) []Effect {
	effs, ended := l.Settle()
	i := l.holder(owner)
	switch {
	case i < 0:
		return append(effs, l.notHolder(owner, key, ended))
	case token != nil && *token != l.Holders[i].Token:
		return append(effs, l.refuse(CodeTokenMismatch, fmt.Sprintf("fencing_token %d is not the holder's", *token)))
	case l.Holders[i].Session != "":
		return append(effs, l.refuse(CodeSessionBound, fmt.Sprintf("the lease of lock %q is kept alive by session %q: keep the session alive instead",
			key, l.Holders[i].Session)))
	}
	h := &l.Holders[i]
	if by == 0 {
		by = h.Lease
	}
	until := h.ExpiresAt.Add(seconds(by))
	if e, ok := l.capped(*h, until, key); ok {
		return append(effs, e)
	}
	if limit := l.Now.Add(seconds(topics.MaxLeaseAheadSeconds)); until.After(limit) {
		return append(effs, l.refuseLease(*h, CodeInvalidRequest, fmt.Sprintf(
			"the lease of lock %q would end at %s, more than %d days (%d s) past now, the furthest a lease may run ahead: extend it later",
			key, until.UTC().Format(time.RFC3339Nano), topics.MaxLeaseAheadSeconds/86400, topics.MaxLeaseAheadSeconds)))
	}
	h.ExpiresAt = until
	h.Extensions++
	return append(effs, Effect{Kind: Extend, Holder: *h, Info: l.about(*h, Acquired)})
}

// Expire is the expiry step for one lock: leases past their expiry end,
// the lock goes to the next waiters, and the waits past their deadline
// end.
func (l *Lock) Expire() []Effect {
	effs, _ := l.Settle()
	return append(effs, l.TimeOut()...)
}

// seconds converts the contract's seconds to a Duration, to the
// microsecond, exactly as PostgreSQL's make_interval does (rint of the
// same IEEE product: nearest, ties to even), so that the general path and
// the common cases' statements (handlers/atonce.go) compute the same
// expiries and max_hold caps. Truncating would put 4.1 s at 4.099999 s.
func seconds(s float64) time.Duration {
	return time.Duration(math.RoundToEven(s*1e6)) * time.Microsecond
}
