package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/omninode/lockworker/topics"
)

// AcquireOption tunes Acquire, TryAcquire and WithLock.
type AcquireOption func(*acquireOptions)

type acquireOptions struct {
	lease   time.Duration
	wait    time.Duration
	waitSet bool
	owner   string
	// generatedOwner: the owner is this call's own, so it holds nothing yet.
	generatedOwner bool
	// dedicatedOwner: the owner is a session's or a campaign's, so it holds
	// the lock only by a lease of this client.
	dedicatedOwner bool
	metadata       json.RawMessage
	metaErr        error
	keepAlive      bool
	onQueued       func(position int)
	mode           Mode
	limit          int
	session        *Session
	lockDelay      time.Duration
	maxHold        time.Duration
	// invalid says why an option given cannot apply (WithSession(nil)):
	// the acquire is refused with it, as ErrInvalidRequest, unsent.
	invalid string
}

// Mode is how an acquire holds a lock.
type Mode string

// Modes. Exclusive is the default: one holder (or one of a semaphore's
// Limit holders). Shared is a read lock: any number of shared holders
// together, never beside an exclusive one; waiters are served strictly in
// order, so a waiting writer is not starved by later readers.
const (
	Exclusive Mode = topics.ModeExclusive
	Shared    Mode = topics.ModeShared
)

// WithMode sets the mode of the acquire. Default Exclusive. An owner that
// holds the lock and asks in the other mode is refused (see WithOwner): a
// lease is not upgraded or downgraded. Acquires of different owners (the
// default: a new owner per call) are strangers to each other, even in one
// process: one asking for the read lock while its own process holds the
// write lock waits behind it, until that is released. Shared holders'
// leases are valid together (see Lease).
func WithMode(m Mode) AcquireOption {
	return func(o *acquireOptions) { o.mode = m }
}

// WithLimit makes the lock a counting semaphore of n exclusive holders
// (1 .. 10,000). Every holder and waiter of a lock must ask for the same
// limit (else ErrLimitMismatch); a shared acquire takes no limit. Default
// 1, which 0 means too; a limit
// out of range is refused before it is sent, as a lease out of range is:
// an *Error wrapping ErrInvalidRequest.
// Up to n leases are valid at once (see Lease). An owner takes one place
// (WithSession: a session takes one).
func WithLimit(n int) AcquireOption {
	return func(o *acquireOptions) { o.limit = n }
}

// WithLockDelay sets the lease's lock-delay (0 .. 60 s): when the lease
// ends otherwise than by Release (it ran out, or was revoked), the worker
// grants the lock to nobody for d, so that late writes of a holder that
// lost its lease unawares cannot meet the next holder's. Waiters stay
// queued meanwhile. Default 0: none. A renewal (WithOwner naming the
// lease's holder) keeps the lease's own lock-delay: d does not apply then.
func WithLockDelay(d time.Duration) AcquireOption {
	return func(o *acquireOptions) { o.lockDelay = d }
}

// WithMaxHold caps the lease's total hold time (0.1 s .. 7 days): no
// extension carries it past its grant + d, and a lease duration above d is
// cut to d. The keep-alive extends it up to the cap, then lets it end (the
// lease is lost, with ErrMaxHoldExceeded); Extend past the cap returns
// ErrMaxHoldExceeded and the lease is kept. Default 0: no cap. The cap
// the Lease keeps to is the worker's (lock_info's max_hold), which a
// renewal does not change (see WithOwner): d, or none, of a renewal does
// not apply. A worker from before lock_info showed max_hold leaves a lease
// granted WithOwner without waiting (maybe a renewal) with no cap known:
// its keep-alive extends it until an extension is refused for the cap,
// then lets it end, lost with ErrMaxHoldExceeded, as at a known cap.
func WithMaxHold(d time.Duration) AcquireOption {
	return func(o *acquireOptions) { o.maxHold = d }
}

// WithLease sets the lease duration (0.1 s .. 24 h). Default:
// Config.LeaseDuration, else the worker's DEFAULT_LEASE_DURATION.
func WithLease(d time.Duration) AcquireOption {
	return func(o *acquireOptions) { o.lease = d }
}

// WithWait sets how long Acquire waits in the lock's FIFO queue (0 .. 1 h;
// 0 fails fast like TryAcquire). Default: until the context's deadline, at
// most the contract's maximum of an hour. Ignored by TryAcquire.
func WithWait(d time.Duration) AcquireOption {
	return func(o *acquireOptions) { o.wait, o.waitSet = d, true }
}

// WithOwner sets the owner_id. Default: "<requester>-<random>", a new one
// per call, so two acquires in one process never share a lease.
//
// The owner id names the lease, not a process: an acquire (or a Campaign)
// of an owner that holds the lock already is a renewal, granted at once
// with the same Token, even while the process that took it lives on, and
// keeping the lease's lock-delay and max-hold (WithLockDelay, WithMaxHold of
// the renewal do not apply). The worker refuses it instead, checking in
// this order: under REQUIRE_FENCING_TOKEN (ErrInvalidRequest: the lease is
// kept only by Extend); in the other mode (ErrModeMismatch); with another
// limit (ErrLimitMismatch); and, for a lease with a max-hold, in a session
// or with a lease duration that would carry it past the max-hold
// (ErrMaxHoldExceeded). A session's lease whose session is past its expiry
// is renewed by nothing: the acquire ends it and is a new one, granted (a
// new Token), queued or refused as any other (ErrLockHeld without a wait or
// by TryAcquire, also during the lock-delay that ending the lapsed lease
// starts; ErrLimitMismatch). A stable id means "resume this lease"; never
// give one id to two live processes, or both hold the lock.
func WithOwner(id string) AcquireOption {
	return func(o *acquireOptions) { o.owner, o.dedicatedOwner = id, false }
}

// WithMetadata attaches owner_metadata: v is encoded as JSON and must be an
// object of at most 4 KiB. It is stored with the lease and shown to anyone
// who queries the lock.
func WithMetadata(v any) AcquireOption {
	return func(o *acquireOptions) {
		b, err := topics.Marshal(v) // <, > and & count one byte each against the limit
		o.metadata, o.metaErr = b, err
	}
}

// WithoutKeepAlive turns off the automatic extension of the lease: it then
// ends at ExpiresAt unless extended with Lease.Extend.
func WithoutKeepAlive() AcquireOption {
	return func(o *acquireOptions) { o.keepAlive = false }
}

// OnQueued is called when the acquire has to wait, with its place in the
// queue (1 = next in line) when it was queued. It is called once per
// acquire queued: the worker tells no later moves up the queue, and a
// lock.queued read again (a duplicate, or the stored one answered to a
// resend) does not call it again. A Campaign, which queues again after an
// hour in line or a late grant, calls it each time. It runs on the
// goroutine of the Acquire (or Campaign), which reads no reply until it
// returns: it should not block.
func OnQueued(fn func(position int)) AcquireOption {
	return func(o *acquireOptions) { o.onQueued = fn }
}

// Acquire takes the lock name, waiting in the worker's FIFO queue while
// another owner holds it. It returns when the lock is granted, the wait
// timeout passes (ErrLockTimeout), the wait is withdrawn by what this call
// did not send (ErrWithdrawn: a later acquire of the same owner took its
// place, a release for the owner, or the end of its session), or ctx ends.
// The wait is WithWait's, else until ctx's deadline, at most the
// contract's maximum of an hour (an hour without a deadline). If the wait
// ends first, Acquire fails with ErrLockTimeout (unlike etcd's Mutex.Lock,
// which waits as long as ctx); if ctx ends first, as it does when its
// deadline set the wait (the worker counts from the acquire's arrival),
// Acquire withdraws the acquire (see below) and returns ctx's cause.
//
// An acquire of an owner that holds the lock already (WithOwner,
// WithSession) is a renewal of its lease (see WithOwner).
//
// An acquire that is given up
// (ctx ended, client closed, no reply, answered ErrRequestIDConflict,
// which discloses nothing of an earlier copy, its answer lost, that may
// have been granted, or a grant refused because its reply
// breaks the contract or was read past the lease's local deadline, or its
// session's (the session is lost then too), or after its session was lost
// or closed while the acquire was on its way, when the error wraps
// ErrLeaseLost) sends a release for its owner, which withdraws it
// from the queue, or releases the lock if it was granted meanwhile, so the
// worker never holds a lock for nobody. Exceptions, where
// the release could end a lease of the same owner: an owner given WithOwner
// is withdrawn only once the acquire was seen queued, as the owner might
// hold the lock already (given up before its lock.queued was read, it
// keeps its place in the queue until its wait ends, and a grant meanwhile
// is held for nobody until the lease's expiry: keep WithWait short for
// such an owner); no release is sent while a lease of this client
// holds the lock for the owner (the acquire was a renewal, as of a session's
// lock); and while other acquires of the lock by the same owner are in
// flight in this client (two in one session, say), the release waits for
// them, as one may have been granted the lock already: the last of them to
// end sends it, unless it ended with a Lease. An acquire of that lock and
// owner started meanwhile waits until the release is answered. So does the
// given-up Acquire that sends it, before it returns, which can be after ctx's
// deadline: one release, or up to four requests (a release by a refused
// grant's token, one without a token, and under REQUIRE_FENCING_TOKEN the
// acquire sent again, whose stored answer tells the grant's token (else a
// query may), and a release by the token told), each given up to
// ReplyTimeout.
//
// A grant read past the deadline it sets, its lease's duration counted
// from the send, the time it waited in the queue left out (an outage of
// the workers, PostgreSQL or Kafka longer than the lease before it was
// queued or after it was granted, or a suspend), is returned as an error
// wrapping ErrLeaseLost and given back: retry, with a lease longer than the
// outages an acquire should outlast on its way.
//
// A grant whose end (lock.expired, lock.revoked, a release by another
// request) was read before Acquire took it up (the grant read late, as
// after the host slept while it was on its way, with its end right behind
// it) is returned as its loss, an error wrapping ErrLeaseLost, not as a
// Lease whose Lost is closed already; nothing is given back, as the worker
// ended it.
//
// The returned Lease is kept alive until Release unless WithoutKeepAlive.
func (c *Client) Acquire(ctx context.Context, name string, opts ...AcquireOption) (*Lease, error) {
	o := c.acquireOptions(opts)
	if !o.waitSet {
		o.wait = time.Duration(topics.MaxWaitSeconds) * time.Second
		if dl, ok := ctx.Deadline(); ok {
			o.wait = min(o.wait, max(time.Until(dl), 0))
		}
	}
	return c.acquire(ctx, name, o)
}

// TryAcquire takes the lock name if it is free, and fails at once otherwise
// with an *Error (errors.Is ErrLockHeld) naming the holder and when its lease
// ends.
func (c *Client) TryAcquire(ctx context.Context, name string, opts ...AcquireOption) (*Lease, error) {
	o := c.acquireOptions(opts)
	o.wait = 0
	return c.acquire(ctx, name, o)
}

func (c *Client) acquireOptions(opts []AcquireOption) acquireOptions {
	o := acquireOptions{lease: c.cfg.LeaseDuration, keepAlive: true}
	applyOptions(&o, opts)
	if o.owner == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		o.owner = c.cfg.Requester + "-" + hex.EncodeToString(b[:])
		o.generatedOwner = true
	}
	return o
}

// applyOptions applies opts to o in order, skipping nil ones: an option
// left unset (var opt WatchOption; if verbose { opt = OnFetchError(f) })
// is no option, not a nil dereference.
func applyOptions[T any, O ~func(*T)](o *T, opts []O) {
	for _, opt := range opts {
		if opt != nil {
			opt(o)
		}
	}
}

func (c *Client) acquire(ctx context.Context, name string, o acquireOptions) (*Lease, error) {
	if err := c.sends(); err != nil {
		return nil, fmt.Errorf("acquiring lock %q: %w", name, err)
	}
	if o.invalid != "" {
		return nil, fmt.Errorf("acquiring lock %q: %w", name, invalidRequest(o.invalid))
	}
	if o.metaErr != nil {
		return nil, fmt.Errorf("acquiring lock %q: encoding metadata: %w", name, o.metaErr)
	}
	if err := c.begin(); err != nil {
		return nil, fmt.Errorf("acquiring lock %q: %w", name, err)
	}
	defer c.ops.Done()
	cmd := c.command(topics.OpAcquire, name)
	cmd.OwnerID = o.owner
	cmd.LeaseDuration = o.lease.Seconds()
	// Whole milliseconds: a wait derived from a deadline must not read as
	// an invalid tiny positive value after float rounding.
	cmd.WaitTimeout = o.wait.Truncate(time.Millisecond).Seconds()
	cmd.OwnerMetadata = o.metadata
	if o.mode != Exclusive {
		cmd.Mode = string(o.mode)
	}
	if o.limit != 1 {
		// 1, the default, is left out. One below 0 is refused by validate,
		// as out of range; 0 reads as not given (the wire's omitempty).
		cmd.Limit = o.limit
	}
	cmd.LockDelay, cmd.MaxHold = o.lockDelay.Seconds(), o.maxHold.Seconds()
	if o.session != nil {
		if err := o.session.Err(); err != nil {
			return nil, fmt.Errorf("acquiring lock %q in session %q: %w", name, o.session.ID, err)
		}
		o.session.name(&cmd)
	}
	if err := validate(cmd, c.cfg.Topics.ReplyPrefix); err != nil {
		return nil, fmt.Errorf("acquiring lock %q: %w", name, err)
	}
	octx, cancel := c.opContext(ctx)
	defer cancel()
	key, waited, err := c.startAcquire(octx, cmd)
	if err != nil {
		return nil, fmt.Errorf("acquiring lock %q: %w", name, err)
	}
	if dl, ok := ctx.Deadline(); ok && waited && cmd.WaitTimeout > 0 {
		// The wait for a withdrawal took from ctx's time: the worker is not
		// to keep the acquire queued past it.
		cmd.WaitTimeout = min(cmd.WaitTimeout, max(time.Until(dl), time.Millisecond).Truncate(time.Millisecond).Seconds())
	}
	var l *Lease
	var withdraw bool  // set by exchangeAcquire, also when OnQueued's callback panics
	var refused *int64 // the fencing token of a grant exchangeAcquire refused
	defer func() {
		if c.endAcquire(key, l != nil, withdraw) {
			defer c.withdrawn(key) // even if abandon panics: others wait for it
			c.abandon(cmd, refused, o.generatedOwner)
		}
	}()
	l, err = c.exchangeAcquire(octx, cmd, o, &withdraw, &refused)
	if err != nil {
		return nil, fmt.Errorf("acquiring lock %q: %w", name, err)
	}
	return l, nil
}

// exchangeAcquire sends the acquire cmd and returns the Lease it was granted.
// *withdraw says, from the moment it changes (an OnQueued callback may
// panic), whether the acquire, given up then, is to be withdrawn. A grant
// whose reply breaks the contract is refused as given up, and *refused is
// its fencing token when the reply shows the owner's lease of the lock with
// one.
func (c *Client) exchangeAcquire(ctx context.Context, cmd topics.Command, o acquireOptions, withdraw *bool, refused **int64) (*Lease, error) {
	if ctx.Err() != nil {
		// Not sent, so nothing to withdraw: an acquire given up before its
		// send could be granted a lease nobody tracks.
		return nil, context.Cause(ctx)
	}
	// Once sent, the command may be applied: it is taken back (endAcquire
	// says when), unless its owner was given WithOwner and not seen queued,
	// so it may hold the lock already, by another process's lease that a
	// release would end.
	*withdraw = o.generatedOwner || o.dedicatedOwner
	sent := c.sentNow()
	var read sentAt        // when the answer (not lock.queued) was read
	var queued bool        // lock.queued was read (OnQueued called)
	var queuedAt time.Time // the worker's time of lock.queued, if it came
	ev, err := c.exchange(ctx, cmd, func(ev topics.Event) (bool, time.Duration) {
		if ev.Type != topics.TypeQueued {
			read = c.sentNow()
			return true, 0
		}
		if queuedAt.IsZero() {
			queuedAt = ev.OccurredAt.Time
		}
		*withdraw = true // queued: the owner holds nothing to end
		// Once: another lock.queued under this request_id is a duplicate, or
		// the stored one answered to a resend, with the first's position.
		if !queued && o.onQueued != nil {
			o.onQueued(ev.QueuePosition)
		}
		queued = true
		// The worker answers a waiter within 1 s of its deadline.
		return false, o.wait + time.Second
	})
	if u, ok := errors.AsType[*unreadableReply](err); ok && u.typ == topics.TypeQueued {
		// Queued all the same, whatever else the reply says (a later
		// version's, or damaged): withdrawn as if it had been read.
		*withdraw = true
	}
	if err != nil {
		return nil, err
	}
	if ev.Type == topics.TypeAcquired {
		if err := c.replyLease(ev, cmd); err != nil {
			// Refused, the grant is held for nobody: *withdraw stays as it
			// was before the reply, so it is released as if given up then;
			// by the reply's token only when it shows the owner's lease of
			// the lock (another's would be refused, TOKEN_MISMATCH, and
			// leave the grant held).
			if token, ok := c.grantToken(ev, cmd); ok {
				*refused = &token
			}
			return nil, err
		}
		// A grant after waiting was decided long after the send: the lease's
		// time is measured from the first reply, lock.queued, and bounded
		// by the grant's own, from its read.
		anchor := ev.OccurredAt.Time
		if !queuedAt.IsZero() {
			anchor = queuedAt
			sent = boundWait(sent, read, ev.OccurredAt.Sub(queuedAt))
		}
		l, late := c.newLease(ev, o, !queuedAt.IsZero(), sent, anchor)
		if g, ok := late.(*lateGrant); ok && g.ended {
			// The worker ended it already: lost, with nothing to give
			// back.
			*withdraw = false
			return nil, late
		}
		if late != nil {
			// Past its deadline when read (the host slept through it): lost,
			// and given back as a refused grant is (*withdraw as it was
			// before the reply), so the worker does not hold it for nobody.
			token := l.Token
			*refused = &token
			return nil, late
		}
		*withdraw = false // granted
		return l, nil
	}
	if ev.Type == topics.TypeRejected && ev.ErrorCode == topics.CodeRequestIDConflict {
		// Nothing applied by this copy, and the outcome stored for the
		// request_id not disclosed: an earlier copy, its answer lost, may
		// have been granted. *withdraw stays as it was before the reply,
		// so that grant is given back as for ErrNoReply.
		return nil, rejection(ev)
	}
	*withdraw = false // answered for good, without a grant
	switch ev.Type {
	case topics.TypeRejected:
		return nil, rejection(ev)
	case topics.TypeWithdrawn:
		return nil, ErrWithdrawn
	}
	return nil, fmt.Errorf("unexpected reply %s", ev.Type)
}

// boundWait is sent, the start a grant after waiting counts its lease's
// time from (Lease.update: expires_at less the worker's time of
// lock.queued, from the send), moved back where need be so that the local
// deadline comes no later than the grant's own time left (expires_at less
// the grant's time, waited after lock.queued's) counted from read, when
// the grant was read. From the send alone the deadline trusts the
// worker's (PostgreSQL's) clock over the whole wait, up to an hour: had
// that clock run fast meanwhile (stepped forward, slewed), the deadline
// would fall past the lease's end; bounded so, by no more than the
// grant's way to the client. It only moves the deadline earlier: with the
// clocks in step, the send's count is the earlier.
func boundWait(sent, read sentAt, waited time.Duration) sentAt {
	if t := read.mono.Add(-waited); t.Before(sent.mono) {
		sent.mono = t
	}
	sent.boot = min(sent.boot, read.boot-waited)
	return sent
}

// acquiring counts the acquires of one lock by one owner in flight in this
// client.
type acquiring struct {
	n int
	// withdraw: one of them was given up, and its release waits for the
	// others (see endAcquire).
	withdraw bool
	// releasing is set while that release, or a lost lease's (giveBack),
	// is on its way, and closed when it was answered (or timed out): a new
	// acquire of the key waits for it.
	releasing chan struct{}
}

// startAcquire counts the acquire cmd in flight until endAcquire. While a
// release owed for its lock and owner is on its way, it waits for it (or
// for ctx), and says so: sent after it, the acquire cannot be withdrawn by
// it.
func (c *Client) startAcquire(ctx context.Context, cmd topics.Command) (k acquireKey, waited bool, err error) {
	k = c.acquireKey(cmd.Namespace, cmd.LockName, cmd.OwnerID)
	c.mu.Lock()
	for c.acquiring[k].releasing != nil {
		releasing := c.acquiring[k].releasing
		c.mu.Unlock()
		select {
		case <-releasing:
			waited = true
		case <-ctx.Done():
			return k, true, context.Cause(ctx)
		}
		c.mu.Lock()
	}
	a := c.acquiring[k]
	a.n++
	c.acquiring[k] = a
	c.mu.Unlock()
	return k, waited, nil
}

// endAcquire ends an acquire of k started by startAcquire, that got a Lease
// (leased) or not, and was given up to be withdrawn (withdraw) or not. It
// reports whether to send the release that withdraws it. The worker keeps
// one place per lock and owner, which every acquire of the owner takes
// over (a renewal, or taking a waiter's place): while another acquire of
// k is in flight, a release would take away what that one may have been
// granted already, unseen. So the last of them decides: a release is sent
// if one of them was to be withdrawn, the last got no Lease, and no Lease
// of this client holds the lock for the owner.
func (c *Client) endAcquire(k acquireKey, leased, withdraw bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.acquiring[k]
	a.n--
	a.withdraw = a.withdraw || withdraw
	if a.n > 0 {
		c.acquiring[k] = a
		return false
	}
	if a.withdraw && !leased && !c.holds(k) {
		c.acquiring[k] = acquiring{releasing: make(chan struct{})}
		return true
	}
	delete(c.acquiring, k)
	return false
}

// withdrawn ends the release endAcquire (or giveBack) owed for k: the
// acquires of k waiting for it start.
func (c *Client) withdrawn(k acquireKey) {
	c.mu.Lock()
	releasing := c.acquiring[k].releasing
	delete(c.acquiring, k)
	c.mu.Unlock()
	close(releasing)
}

// abandon withdraws an acquire nobody waits for any more: a release for its
// owner takes it out of the queue (lock.withdrawn) or ends the lease it was
// granted meanwhile, guarded by refused, the fencing token of a grant the
// acquire refused, when known. That grant's reply broke the contract, so
// its token may be wrong too: for a generated owner (generated), which
// holds nothing else, a release the worker refuses is followed by one
// without the token, as when none is known. The release goes to the same
// partition as the acquire (same key), so the worker sees it after the
// acquire. It runs even while the client closes, each round trip bounded
// by ReplyTimeout. A lease whose release gets no answer is left to end by
// itself: at its expiry or, in a session, with the session, which may last
// as long as the client.
func (c *Client) abandon(acq topics.Command, refused *int64, generated bool) {
	release := func(token *int64) (topics.Event, error) {
		rel := c.command(topics.OpRelease, acq.LockName)
		rel.Namespace, rel.OwnerID, rel.FencingToken = acq.Namespace, acq.OwnerID, token
		return c.bestEffort(rel)
	}
	if refused != nil {
		// The grant is the owner's lease: its token releases it, also
		// under REQUIRE_FENCING_TOKEN, and no later lease of the owner.
		ev, err := release(refused)
		if err != nil || ev.Type != topics.TypeRejected || !generated {
			return
		}
	}
	ev, err := release(nil)
	if err != nil || ev.Type != topics.TypeRejected || ev.ErrorCode != topics.CodeInvalidRequest {
		return
	}
	// Under REQUIRE_FENCING_TOKEN a release without a token only withdraws
	// a wait: refused, the owner held a lease when the release was applied,
	// after the acquire. The lease the acquire was granted is released by
	// its token, which the acquire's own answer tells, whatever the lock's
	// holders: sent again (same request_id), the acquire is answered the
	// outcome stored for it, its grant (a wait's lock.queued is replaced by
	// its final answer). Not after a refused grant: that answer was read,
	// and its token tried. The mode refuses renewals, so a grant answered
	// is a lease this acquire brought, of any owner (generated, a
	// session's, or given WithOwner, which only a wait seen makes this
	// client take back), and a release by its token ends no other lease
	// of the owner. Its outcome pruned (REQUEST_RETENTION, at least 60 s
	// from the grant: only after an answer that long delayed), the copy is
	// applied anew: it is refused while the owner still holds the lease (a
	// renewal), and what it got once that ended is given back at once: a
	// new grant by its token, a new wait (the acquire's own was over: the
	// owner held a lease after it) by a release without one.
	if refused == nil {
		again, err := c.bestEffort(acq)
		token, granted := c.grantToken(again, acq)
		switch {
		case err != nil:
		case granted:
			_, _ = release(&token)
			return
		case again.Type == topics.TypeQueued:
			_, _ = release(nil)
			return
		case again.Type == topics.TypeWithdrawn, again.Type == topics.TypeRejected && again.ErrorCode != topics.CodeInvalidRequest:
			// The acquire's own final answer, no lease: the one the
			// release found is another acquire's of the owner, not to be
			// ended here.
			return
		}
	}
	// Otherwise (after a refused grant; the copy unanswered, refused
	// INVALID_REQUEST, a renewal, its outcome pruned and applied anew, or
	// answered out of the contract) a query tells the owner's lease: among the
	// holders listed, or lock_info's own, the newest holder. The list is
	// cut (the first MaxHoldersShown in grant order, within
	// MaxHoldersBytes), so a lease granted before others may show in
	// neither, and is left to end by itself. Only the answer about this
	// lock, as Query takes it: another lock's would release by a token not
	// the grant's.
	q := c.command(topics.OpQuery, acq.LockName)
	q.Namespace = acq.Namespace
	st, err := c.bestEffort(q)
	if err != nil || replyStatus(st, q) != nil {
		return
	}
	if token, ok := ownersToken(st.LockInfo, c.acquireKey(acq.Namespace, acq.LockName, acq.OwnerID).owner); ok {
		_, _ = release(&token)
	}
}

// grantToken is the fencing token of the grant ev, a reply to the acquire
// cmd, when it shows cmd's lock and owner with one (not checked further:
// the token is only to release the grant by).
func (c *Client) grantToken(ev topics.Event, cmd topics.Command) (int64, bool) {
	li := ev.LockInfo
	if ev.Type != topics.TypeAcquired || li == nil || li.FencingToken < 1 || !c.shows(li, cmd) {
		return 0, false
	}
	return li.FencingToken, true
}

// ownersToken finds owner's lease in a query's lock_info: among its holders
// or, when the list was cut before it, as lock_info's own, the newest
// holder.
func ownersToken(li *topics.LockInfo, owner string) (int64, bool) {
	for _, h := range li.Holders {
		if h.OwnerID == owner && h.Status == topics.StatusAcquired {
			return h.FencingToken, true
		}
	}
	if li.OwnerID == owner && li.Status == topics.StatusAcquired {
		return li.FencingToken, true
	}
	return 0, false
}

// WithLock runs fn while holding the lock name: it acquires it (waiting as
// Acquire does), runs fn with a context that is cancelled if the lease is
// lost, and releases the lock when fn returns. If the lease was lost while
// fn ran, the error wraps ErrLeaseLost (and fn's error, if any). A nil c or
// fn is refused at once, with an error wrapping ErrInvalidRequest.
func WithLock(ctx context.Context, c *Client, name string, fn func(ctx context.Context, l *Lease) error, opts ...AcquireOption) error {
	return withLock(ctx, c, name, fn, opts)
}

// WithRLock is WithLock holding the lock in shared mode (a read lock):
// readers run fn together, never beside a writer (WithLock).
func WithRLock(ctx context.Context, c *Client, name string, fn func(ctx context.Context, l *Lease) error, opts ...AcquireOption) error {
	// Clipped, so that append copies: opts may be the caller's slice, with
	// room that another goroutine's call would fill too.
	return withLock(ctx, c, name, fn, append(slices.Clip(opts), WithMode(Shared)))
}

func withLock(ctx context.Context, c *Client, name string, fn func(ctx context.Context, l *Lease) error, opts []AcquireOption) error {
	// Refused before anything is acquired: a nil fn would panic only
	// once the lock was taken.
	switch {
	case c == nil:
		return fmt.Errorf("acquiring lock %q: %w", name, invalidRequest("no client: the *Client is nil"))
	case fn == nil:
		return fmt.Errorf("acquiring lock %q: %w", name, invalidRequest("no function to run: fn is nil"))
	}
	l, err := c.Acquire(ctx, name, opts...)
	if err != nil {
		return err
	}
	// Released even when ctx has ended, or fn panics: the lock should not
	// outlive fn, nor its keep-alive go on renewing it.
	release := func() error {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.RequestTimeout)
		defer rcancel()
		return l.Release(rctx)
	}
	returned := false
	defer func() {
		if !returned {
			_ = release()
		}
	}()
	lctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(l.Context(), func() { cancel(context.Cause(l.Context())) })
	defer stop()
	fnErr := fn(lctx, l)
	returned = true
	if lost := l.lostErr(); lost != nil {
		return errors.Join(fnErr, lost)
	}
	if err := release(); err != nil {
		return errors.Join(fnErr, err)
	}
	return fnErr
}
