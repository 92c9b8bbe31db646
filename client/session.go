package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/omninode/lockworker/topics"
)

// Session is one liveness signal for many locks, like an etcd lease or a
// Consul session: the leases acquired WithSession have no keep-alive of
// their own; the session's keep-alive (every third of its TTL) keeps them
// all. When the session ends, the worker releases every lease it holds and
// withdraws every acquire it waits with, in one transaction, and grants the
// locks to their next waiters: at Close, or when TTL passes without a
// keep-alive (the process died, or lost the brokers).
//
// Client.Close stops the keep-alive without closing the session: its
// leases then end at its expiry, as if the process had been killed.
type Session struct {
	// ID is the session_id, Owner the owner_id of the session and of every
	// lease acquired in it.
	ID    string
	Owner string
	// TTL is how long the session lives without a keep-alive.
	TTL time.Duration

	c      *Client
	lost   chan struct{}
	ctx    context.Context
	cancel context.CancelCauseFunc
	// opened and openedExpires are the occurred_at and
	// session_info.expires_at of the session.opened that answered its
	// open, set before it is registered: they tell its end events from
	// those of an earlier session of its ID (ofThisSession).
	opened, openedExpires time.Time
	// generation is that session.opened's session_info.generation (0 from
	// a worker before it), set with them: every command of the session
	// names it, so that one applied late, once the ID was opened again,
	// is refused rather than applied to the new session.
	generation int64

	mu       sync.Mutex
	expires  time.Time     // the worker's expires_at, as of the last answer
	deadline time.Time     // local estimate of expires (monotonic clock), as Lease.update's
	boot     time.Duration // the same by the boot clock
	timer    *time.Timer
	err      error     // why the session ended
	answered time.Time // when the last answer confirming it was read, as Lease.answered
	leases   map[*Lease]bool
	// closeCmd is Close's command, sent again (same request_id) by a Close
	// after one that got no answer, made anew after one refused without
	// effect (newCloseCmd); closed is set once one was answered otherwise,
	// and closeRefused to that answer when it was a refusal (the session is
	// not ours: sessionGone), which a later Close returns again.
	closeCmd     *topics.Command
	closed       bool
	closeRefused error
	// closing serializes Close calls (capacity 1), which send one command,
	// as Lease.releasing does Release calls.
	closing chan struct{}
}

// SessionOption tunes NewSession.
type SessionOption func(*Session)

// WithSessionOwner sets the owner_id of the session and of its leases.
// Default: "<requester>-<random>", a new one per session.
func WithSessionOwner(id string) SessionOption {
	return func(s *Session) { s.Owner = id }
}

// WithSessionID sets the session_id. Default: a new UUID. An ID may be
// opened again once its session ended: a late copy of that session's
// session.closed or session.expired (delivery is at least once) does not
// end the new one, told apart by its generation or its times (see
// Session.Lost); and a command of that session applied late (its lock's
// partition lagged) names that session's generation, so the worker
// refuses it (an Acquire's is ErrSessionNotFound) rather than grant the
// new session a lease it never asked for, or close it.
func WithSessionID(id string) SessionOption {
	return func(s *Session) { s.ID = id }
}

// NewSession opens a session that lives ttl (1 s .. 1 h; 0: the worker's
// default of 10 s) past each keep-alive, and keeps it alive until Close
// or the client closes. Errors wrap ErrSessionExists for an ID in use. A
// session.opened that breaks the contract (among others, one naming
// another session ID or owner than asked for) is refused, and the session
// it opened closed, best effort; so is one read past the session's local
// deadline (the host slept through it), whose error wraps ErrSessionLost.
// A NewSession given up unanswered (ctx ended, no reply, the client
// closed) closes the session it may have opened, best effort, before it
// returns (one more round trip, up to ReplyTimeout), unless its ID was
// given WithSessionID: that session may be another process's.
func (c *Client) NewSession(ctx context.Context, ttl time.Duration, opts ...SessionOption) (*Session, error) {
	if err := c.sends(); err != nil {
		return nil, fmt.Errorf("opening session: %w", err)
	}
	ctx2, cancel := context.WithCancelCause(context.Background())
	generatedID := newRequestID()
	s := &Session{ID: generatedID, TTL: ttl, c: c, lost: make(chan struct{}), ctx: ctx2, cancel: cancel, leases: map[*Lease]bool{},
		closing: make(chan struct{}, 1)}
	applyOptions(s, opts)
	if s.Owner == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		s.Owner = c.cfg.Requester + "-" + hex.EncodeToString(b[:])
	}
	cmd := s.command(topics.OpSessionOpen)
	cmd.TTL = ttl.Seconds()
	if err := validate(cmd, c.cfg.Topics.ReplyPrefix); err != nil {
		cancel(err)
		return nil, fmt.Errorf("opening session: %w", err)
	}
	// One operation with the close that may follow: Close waits for both.
	if err := c.begin(); err != nil {
		cancel(err)
		return nil, fmt.Errorf("opening session %q: %w", s.ID, err)
	}
	defer c.ops.Done()
	sent := c.sentNow()
	ev, err := c.call(ctx, cmd)
	if err == nil && ev.Type == topics.TypeRejected {
		err = rejection(ev)
	}
	if err != nil {
		var refused *Error
		if s.ID == generatedID && !errors.As(err, &refused) {
			// Given up unanswered: the worker may have opened it, and
			// would keep it for nobody until its TTL ran out. An ID
			// given WithSessionID may be another process's session.
			_, _ = c.bestEffort(s.command(topics.OpSessionClose))
		}
		cancel(err)
		return nil, fmt.Errorf("opening session %q: %w", s.ID, err)
	}
	if err := s.opens(ev); err != nil {
		// The worker opened the session, and would keep it until its TTL
		// ran out, refusing a retry of the same ID (SESSION_EXISTS).
		_, _ = c.bestEffort(s.command(topics.OpSessionClose))
		cancel(err)
		return nil, fmt.Errorf("opening session %q: %w", s.ID, err)
	}
	// The owner as the worker sees it (opens compared it): scoped by the
	// requester under authentication, as events show it.
	s.Owner, s.TTL = ev.SessionInfo.OwnerID, seconds(ev.SessionInfo.TTL)
	s.opened, s.openedExpires, s.generation = ev.OccurredAt.Time, ev.SessionInfo.ExpiresAt.Time, ev.SessionInfo.Generation
	// Registered before its deadline timer starts: a session lost at once
	// (its answer came late) is then removed by its end (finish).
	c.mu.Lock()
	c.sessions[s.ID] = s
	c.watchBoot()
	c.mu.Unlock()
	s.mu.Lock()
	s.update(ev, sent)
	late := s.due()
	if !late {
		s.timer = time.AfterFunc(time.Until(s.deadline), s.deadlinePassed)
	}
	s.mu.Unlock()
	if late {
		// Past its deadline when read (the host slept through it): lost,
		// and closed so that the worker does not keep it for nobody.
		s.expire()
		_, _ = c.bestEffort(s.command(topics.OpSessionClose))
		return nil, fmt.Errorf("opening session %q: %w", s.ID, s.Err())
	}
	if c.begin() == nil {
		go s.keepAliveLoop()
	}
	return s, nil
}

// replySession checks the session_info of a reply that confirms a session.
func replySession(ev topics.Event) error {
	switch {
	case ev.SessionInfo == nil:
		return fmt.Errorf("%s without session_info", ev.Type)
	case ev.SessionInfo.Generation < 0:
		return fmt.Errorf("%s with session_info.generation %d, below 1", ev.Type, ev.SessionInfo.Generation)
	}
	return replySeconds(ev, "ttl", ev.SessionInfo.TTL, topics.MinSessionTTLSeconds, topics.MaxSessionTTLSeconds)
}

// confirms checks a reply that confirms s (a keep-alive's) as replySession
// does, and that it is about s: its ID, and its generation where the
// worker gives one.
func (s *Session) confirms(ev topics.Event) error {
	if err := replySession(ev); err != nil {
		return err
	}
	switch info := ev.SessionInfo; {
	case info.SessionID != s.ID:
		return fmt.Errorf("%s of session %q, not %q", ev.Type, info.SessionID, s.ID)
	case info.Generation != 0 && s.generation != 0 && info.Generation != s.generation:
		return fmt.Errorf("%s of generation %d, not %d", ev.Type, info.Generation, s.generation)
	}
	return nil
}

// opens checks the answer to s's open as confirms does a keep-alive's, and
// that it shows s's owner as the worker scopes it (sameOwner, as a grant's
// is compared): s, and every lease acquired WithSession s, take their
// owner from it.
func (s *Session) opens(ev topics.Event) error {
	if err := s.confirms(ev); err != nil {
		return err
	}
	if owner := ev.SessionInfo.OwnerID; !s.c.sameOwner(owner, s.Owner) {
		return fmt.Errorf("%s for owner %q, not %q", ev.Type, owner, s.Owner)
	}
	return nil
}

// update records an answer that confirmed the session until
// session_info.expires_at: locally, that is its remaining time by the
// worker's clock from when the command was sent, on the monotonic clock
// and on the boot clock, as Lease.update says. s.mu is held.
func (s *Session) update(ev topics.Event, sent sentAt) {
	s.answered = time.Now()
	s.expires = ev.SessionInfo.ExpiresAt.Time
	left := s.expires.Sub(ev.OccurredAt.Time)
	s.deadline = sent.mono.Add(left)
	s.boot = sent.boot + left
	if left := s.boot - s.c.bootNow(); left > 0 {
		pullIn(&s.deadline, nil, left) // as Lease.update
	}
	if s.timer != nil {
		s.timer.Reset(time.Until(s.deadline))
	}
}

// Lost is closed when the session is known lost: the worker ended it
// (session.expired, or session.closed by another process of its owner;
// one of another generation than the session.opened that answered
// NewSession, or, where either tells none, one that occurred no later
// than it or whose expires_at is earlier than its, is an earlier
// session's of the ID, and ignored),
// refused a keep-alive (the session is then closed, best effort, unless
// the refusal wraps ErrSessionNotFound or ErrNotOwner: any other applied
// nothing, and the worker holds the session still), answered one outside
// the contract (closed too, best effort), a keep-alive could not be sent
// as the token (Config.Token) has expired (ErrUnauthenticated), or its expiry passed
// without a confirmed keep-alive (saying, as Lease's loss does, what the
// client saw of its reply topic since the last answer). Every lease of the
// session is then lost too. It is not closed by Close.
func (s *Session) Lost() <-chan struct{} { return s.lost }

// Context is cancelled when the session is lost or closed: context.Cause
// wraps ErrSessionLost, or is ErrSessionClosed.
func (s *Session) Context() context.Context { return s.ctx }

// Err is nil while the session is open, then why it ended.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// ExpiresAt is when the session ends without another keep-alive, by the
// worker's clock, as of the last keep-alive. The worker's clock is
// PostgreSQL's, not this host's: for the time left, use Remaining, not
// time.Until(ExpiresAt()), which mixes the two clocks.
func (s *Session) ExpiresAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expires
}

// Remaining is the time left before the session's local deadline, by this
// host's clocks alone (see Lease): when the session is lost unless a
// keep-alive is answered first. It errs early, as the deadline does. 0
// once the session has ended (lost or closed).
func (s *Session) Remaining() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0
	}
	return s.c.timeLeft(s.deadline, s.boot)
}

// Close closes the session: the worker releases every lease it holds and
// withdraws every acquire it waits with. The leases' Contexts are
// cancelled first (with ErrReleased), so work under them stops before
// another owner starts. A session already lost returns its loss at once,
// and so does one whose local deadline has passed though neither its
// timer nor the boot-clock watch has run yet (the host has just woken from
// a suspend): it is lost then, not closed.
// The keep-alive stops at the first Close. A refusal that applied nothing
// and leaves the session open (any but ErrSessionNotFound and ErrNotOwner:
// ErrRequestIDConflict, the request's stored outcome could not be read
// back; ErrInvalidRequest, PostgreSQL refused to store the record;
// ErrUnsupportedVersion) is sent once more under a new request_id (after
// ErrRequestIDConflict, an earlier copy of the close was applied: the
// resend finding the session gone, ErrSessionNotFound or ErrNotOwner, is
// taken as closed, also where it had ended before that copy, which its
// unreadable outcome cannot tell); refused again, Close returns that refusal, and the session is not closed: the
// worker holds it, and its locks, until a Close that succeeds or its
// expiry (its leases have ended as released here all the same). Close
// after a Close that was answered otherwise sends nothing and returns what
// that one did (nil, or the refusal); after one that returned an error
// (ctx ended, no answer), it sends the same command again, which the
// worker applies once: its answer says whether the close took effect;
// after one refused again as above, a new one. Once the session's expiry
// has passed, though, Close returns nil without sending: the session has
// ended by itself, as expired, which is what the close was for. As with
// Lease.Release, a ctx that has ended already does not stop Close: the
// leases' Contexts are cancelled and the close sent all the same, and
// Close returns ctx's cause without waiting for the answer; only a Close
// that must wait for another one in flight gives up when ctx ends.
func (s *Session) Close(ctx context.Context) error {
	// Past its deadline, its timer and the boot-clock watch not run yet
	// (the host has just woken from a suspend): lost, not closed, as the
	// worker may have granted its locks to others already.
	s.expire()
	if ended := s.Err(); ended != nil && !errors.Is(ended, ErrSessionClosed) {
		// Lost: no waiting for another Close in flight.
		return fmt.Errorf("closing session %q: %w", s.ID, ended)
	}
	if !take(ctx, s.closing) {
		return fmt.Errorf("closing session %q: waiting for another Close: %w", s.ID, context.Cause(ctx))
	}
	defer func() { <-s.closing }()
	leases, ended := s.finish(ErrSessionClosed)
	if ended != nil && !errors.Is(ended, ErrSessionClosed) {
		return fmt.Errorf("closing session %q: %w", s.ID, ended)
	}
	for _, l := range leases {
		l.end(ErrReleased)
	}
	s.mu.Lock()
	again := s.closeCmd != nil
	cmd, done, refused := s.closeCommand(), s.closed || again && s.due(), s.closeRefused
	s.mu.Unlock()
	if done {
		if refused != nil {
			return fmt.Errorf("closing session %q: %w", s.ID, refused)
		}
		return nil
	}
	// Refused without an effect, the worker holds the session still.
	ev, applied, err := sendAgainRefused(ctx, s.c.send, cmd, s.newCloseCmd, sessionGone)
	if err != nil {
		return fmt.Errorf("closing session %q: %w", s.ID, err)
	}
	if ev.Type == topics.TypeRejected {
		refused = rejection(ev)
	}
	if applied && sessionGone(refused) {
		refused = nil // the copy REQUEST_ID_CONFLICT answered for closed it, or found it ended
	}
	if refused != nil && !sessionGone(refused) {
		// Refused again: not closed, so a next Close tries anew.
		s.newCloseCmd()
		return fmt.Errorf("closing session %q: %w (the session may be held still, until its expiry)", s.ID, refused)
	}
	s.mu.Lock()
	s.closed, s.closeRefused = true, refused
	s.mu.Unlock()
	if refused != nil {
		return fmt.Errorf("closing session %q: %w", s.ID, refused)
	}
	return nil
}

// closeCommand is Close's command, made on first use and the same
// (request_id) after, as Lease.releaseCmd. s.mu is held.
func (s *Session) closeCommand() topics.Command {
	if s.closeCmd == nil {
		cmd := s.command(topics.OpSessionClose)
		s.closeCmd = &cmd
	}
	return *s.closeCmd
}

// newCloseCmd makes Close's command anew, under a new request_id, after
// one refused without effect, which would be answered alike.
func (s *Session) newCloseCmd() topics.Command {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeCmd = nil
	return s.closeCommand()
}

// sessionGone says a refusal of the session's keep-alive or close says the
// session is not (or no longer) ours, so that nothing is left to close:
// SESSION_NOT_FOUND, NOT_OWNER. Any other (REQUEST_ID_CONFLICT,
// INVALID_REQUEST for a record PostgreSQL would not store,
// UNSUPPORTED_VERSION) applied nothing, and the worker holds the session
// still, as leaseGone says of a lease.
func sessionGone(refusal error) bool {
	return errors.Is(refusal, ErrSessionNotFound) || errors.Is(refusal, ErrNotOwner)
}

// lose ends the session as lost, and every lease in it; the first cause
// wins.
func (s *Session) lose(cause error) { s.loseIf(cause, nil) }

// loseIf is lose, if still (a func of s.mu held, nil: always) says so when
// the session is about to end, as Lease.loseIf.
func (s *Session) loseIf(cause error, still func() bool) {
	leases, ended := s.finishIf(cause, still)
	if ended != nil || leases == nil {
		return
	}
	close(s.lost)
	for _, l := range leases {
		l.lose(fmt.Errorf("%w: %w", ErrLeaseLost, cause))
	}
}

// finish records why the session ended, once, and returns its leases; or
// why it had ended already.
func (s *Session) finish(cause error) ([]*Lease, error) { return s.finishIf(cause, nil) }

// finishIf is finish, if still says so (else it returns nil, nil), as
// loseIf.
func (s *Session) finishIf(cause error, still func() bool) ([]*Lease, error) {
	s.mu.Lock()
	if s.err != nil {
		defer s.mu.Unlock()
		return nil, s.err
	}
	if still != nil && !still() {
		s.mu.Unlock()
		return nil, nil
	}
	s.err = cause
	if s.timer != nil {
		s.timer.Stop()
	}
	leases := make([]*Lease, 0, len(s.leases))
	for l := range s.leases {
		leases = append(leases, l)
	}
	s.mu.Unlock()
	s.cancel(cause)
	s.c.mu.Lock()
	if s.c.sessions[s.ID] == s {
		delete(s.c.sessions, s.ID)
	}
	s.c.mu.Unlock()
	return leases, nil
}

// add registers a lease acquired in the session; false when the session
// has ended (the lease is then lost).
func (s *Session) add(l *Lease) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return false
	}
	s.leases[l] = true
	return true
}

// forget drops a lease that ended.
func (s *Session) forget(l *Lease) {
	s.mu.Lock()
	delete(s.leases, l)
	s.mu.Unlock()
}

func (s *Session) deadlinePassed() { s.expire() }

// pastDeadline says whether the session's local deadline has passed by the
// monotonic clock, and by the boot clock (see Lease.update). s.mu is held.
func (s *Session) pastDeadline() (mono, boot bool) {
	return !time.Now().Before(s.deadline), s.boot != 0 && s.c.bootNow() >= s.boot
}

// due says whether the session's local deadline has passed by either
// clock. s.mu is held.
func (s *Session) due() bool {
	mono, boot := s.pastDeadline()
	return mono || boot
}

// expire loses the session at its local deadline, as Lease.expire: the
// error blames a suspend only when the monotonic clock has not passed it,
// and whether it passed is checked again as the session ends, under s.mu,
// as a keep-alive's answer may have moved both deadlines since.
func (s *Session) expire() {
	s.mu.Lock()
	mono, boot := s.pastDeadline()
	answered := s.answered
	s.mu.Unlock()
	switch {
	case mono:
		s.loseIf(s.c.withReplyTrouble(fmt.Errorf("%w: session %q reached its expiry without a confirmed keep-alive", ErrSessionLost, s.ID), answered), s.due)
	case boot:
		s.loseIf(fmt.Errorf("%w: session %q: the %s shows its expiry passed without a confirmed keep-alive, the monotonic clock not (%s)", ErrSessionLost, s.ID, bootClockName(), bootClockAhead()), s.due)
	}
}

// checkBoot loses the session if its deadline by the boot clock, now, has
// passed (see Lease.update), or else pulls its monotonic deadline in to the
// boot clock's, as Lease.checkBoot.
func (s *Session) checkBoot(now time.Duration) {
	s.mu.Lock()
	passed := s.err == nil && s.boot != 0 && now >= s.boot
	if s.err == nil && s.boot != 0 && !passed {
		pullIn(&s.deadline, s.timer, s.boot-now) // as Lease.checkBoot
	}
	s.mu.Unlock()
	if passed {
		s.expire()
	}
}

// command is a session command of this session.
func (s *Session) command(op string) topics.Command {
	cmd := s.c.command(op, "")
	cmd.OwnerID = s.Owner
	s.name(&cmd)
	return cmd
}

// name makes cmd a command of this session: its ID, and its generation
// once the open's answer told it.
func (s *Session) name(cmd *topics.Command) {
	cmd.SessionID = s.ID
	if s.generation != 0 {
		g := s.generation
		cmd.SessionGeneration = &g
	}
}

// keepAliveLoop keeps the session alive every third of its TTL until it
// ends or the client closes. A refused keep-alive loses the session
// (keepAliveAnswered). One left without an answer (it, or its answer, lost
// in transit) for a third of the TTL, or ReplyTimeout if shorter, is sent again (the same
// request_id: the answer to any copy is taken, however late, until the
// session's deadline or RequestTimeout, whichever comes first), where exchange's usual resend after ReplyTimeout
// would come past the deadline for a TTL under 1.5 ReplyTimeout. Its
// answer counts the deadline from the first copy's send (keptAlive), and
// the worker's expiry, set as it applies the command, once, is no earlier.
func (s *Session) keepAliveLoop() {
	defer s.c.ops.Done()
	interval := s.TTL / 3
	retry := min(interval, s.c.cfg.ReplyTimeout)
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return
		case <-s.c.closing.Done():
			return
		}
		s.checkBoot(s.c.bootNow()) // woken after a suspend, it may be over
		s.mu.Lock()
		deadline, ended := s.deadline, s.err
		s.mu.Unlock()
		start := time.Now()
		if ended != nil || !start.Before(deadline) {
			// Too late: a keep-alive applied now would keep a session the
			// deadline timer counts as lost.
			t.Reset(retry)
			continue
		}
		ctx, cancel := context.WithDeadline(s.ctx, deadline)
		sent := s.c.sentNow()
		ev, err := s.c.sendEvery(ctx, s.command(topics.OpSessionKeepAlive), retry)
		cancel()
		s.keepAliveAnswered(ev, err, sent)
		next := interval
		if err != nil {
			// A failure at once (the brokers refused the command) is
			// tried again a retry later, not in a busy loop.
			next = retry
		}
		t.Reset(time.Until(start.Add(next)))
	}
}

// keepAliveAnswered records the outcome of a keep-alive sent at sent: its
// answer ev, or err. A keep-alive that failed (no answer, or cut short)
// because the session was lost here meanwhile, by its deadline, may have
// been applied by the worker all the same: the session is then closed,
// best effort, as keptAlive closes one lost to a late answer; not when the
// worker ended it (session.expired, session.closed), nor when Close did.
// A refusal, or an answer outside the contract (confirms), loses the
// session, and closes it, best effort, as NewSession does one so opened:
// the worker may keep it (a refusal applied nothing, unless it says the
// session is not ours: sessionGone), and would answer every keep-alive
// alike.
func (s *Session) keepAliveAnswered(ev topics.Event, err error, sent sentAt) {
	switch {
	case errors.Is(err, ErrUnauthenticated):
		// The token expired: no keep-alive can be sent any more.
		s.lose(fmt.Errorf("%w: keep-alive: %w", ErrSessionLost, err))
	case err != nil:
		// The send's context ends at the deadline (or sooner, where the
		// loop sends another), and may do so before the deadline's timer
		// has lost the session.
		s.expire()
		s.closeLostHere()
	case ev.Type == topics.TypeRejected:
		refused := rejection(ev)
		s.lose(fmt.Errorf("%w: keep-alive refused: %w", ErrSessionLost, refused))
		if !sessionGone(refused) {
			// Nothing applied: the worker holds the session still. Lost
			// here all the same, as the next keep-alive may be refused
			// alike, and closed, or the worker holds its locks for nobody
			// until its TTL.
			s.closeLostHere()
		}
	default:
		if err := s.confirms(ev); err != nil {
			s.lose(fmt.Errorf("%w: keep-alive answered outside the contract: %w", ErrSessionLost, err))
			s.closeLostHere()
			return
		}
		s.keptAlive(ev, sent)
	}
}

// closeLostHere closes the session, best effort, when it was lost here
// (lostHere): not ended by the worker or Close before, as the worker may
// hold it still.
func (s *Session) closeLostHere() {
	if s.lostHere() {
		_, _ = s.c.bestEffort(s.command(topics.OpSessionClose))
	}
}

// lostHere says whether the session was lost (ErrSessionLost), and not by
// the worker's word (workerEnded): the worker may hold it still.
func (s *Session) lostHere() bool {
	err := s.Err()
	var byWorker *workerEnded
	return errors.Is(err, ErrSessionLost) && !errors.As(err, &byWorker)
}

// workerEnded marks the loss of a session the worker ended (routeSession):
// a close would find it gone.
type workerEnded struct{ error }

func (e *workerEnded) Unwrap() error { return e.error }

// keptAlive records a keep-alive's answer, sent at sent. One read past the
// session's new local deadline already (the host slept through it while
// the keep-alive was on its way), or after the session was lost here
// meanwhile, loses the session, as Lease.extend does a lease, and closes
// it, best effort: the worker, which applied the keep-alive, would
// otherwise keep it, and its locks, for nobody.
func (s *Session) keptAlive(ev topics.Event, sent sentAt) {
	s.mu.Lock()
	late := false
	if s.err == nil {
		s.update(ev, sent)
		late = s.due()
	}
	s.mu.Unlock()
	if late {
		s.expire()
	}
	s.closeLostHere()
}

// WithSession acquires the lock in session s: the lease has no keep-alive
// of its own (its lease duration is ignored) and ends when s ends, or at
// its Release. The owner is the session's: two acquires of one lock in s
// are one lease (the second a renewal, see WithOwner: the goroutines that
// made them do not exclude each other), and the Release of either ends
// the other (lost); two that wait at once are one wait, the earlier
// withdrawn (ErrWithdrawn) when the later takes its place; and a semaphore
// (WithLimit) gives s one place. Acquires that must exclude each other
// need a session each, or none. A nil s (a session not opened yet) fails
// the acquire with an error wrapping ErrInvalidRequest.
func WithSession(s *Session) AcquireOption {
	return func(o *acquireOptions) {
		if s == nil {
			o.invalid = "WithSession(nil): no session to acquire in"
			return
		}
		o.session, o.owner, o.keepAlive, o.dedicatedOwner = s, s.Owner, false, true
	}
}

// routeSession gives a session.expired, or a session.closed this session
// did not send (its Close ends it first), to its session, unless it is
// an earlier session's of the same ID (ofThisSession). c.mu is not held.
func (c *Client) routeSession(ev topics.Event) {
	if ev.Type != topics.TypeSessionExpired && ev.Type != topics.TypeSessionClosed || ev.SessionInfo == nil {
		return
	}
	c.mu.Lock()
	s := c.sessions[ev.SessionInfo.SessionID]
	c.mu.Unlock()
	if s != nil && s.Owner == ev.SessionInfo.OwnerID && s.ofThisSession(ev) {
		s.lose(&workerEnded{fmt.Errorf("%w: %s: session %q ended at %s", ErrSessionLost, ev.Type, s.ID, ev.OccurredAt.Format(time.RFC3339Nano))})
	}
}

// ofThisSession says whether the end event ev (session.expired or
// session.closed of s's ID and owner) ends s, not an earlier session of
// its ID, closed or expired before s was opened again (WithSessionID), of
// which a copy came late (delivery is at least once): by its generation,
// which tells them apart, when both it and s's open have one. Else (a
// worker from before generations) by its times. The worker stamps
// both times by the database's clock (clock_timestamp(), one clock for
// every replica, so skew between replicas does not matter), and an open
// of an ID succeeds only once the earlier session's end has deleted its
// row. So an end of s occurred after its open (a later transaction), and
// its expires_at is at least the open's (keep-alives only push it
// later), while an earlier session's end occurred before the open (or in
// its transaction, an open that found the session past its expiry and
// ended it first; only a close racing an open of the ID from another
// process may be stamped microseconds after it), and its
// session.expired's expires_at had passed by then, so lies a TTL (1 s at
// least) before the open's. Either sign
// marks an earlier session's (a session.closed's expires_at, when it was
// to end, may lie after the open's; its occurred_at does not). Were the
// database's clock stepped back, an end of s might be ignored: s is then
// lost by its keep-alive's refusal (SESSION_NOT_FOUND) or its local
// deadline, as without the event.
func (s *Session) ofThisSession(ev topics.Event) bool {
	if g := ev.SessionInfo.Generation; g != 0 && s.generation != 0 {
		return g == s.generation
	}
	return ev.OccurredAt.After(s.opened) && !ev.SessionInfo.ExpiresAt.Before(s.openedExpires)
}
