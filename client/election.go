package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/omninode/lockworker/topics"
)

// ErrNoLeader: the election has no leader (nobody holds its lock).
var ErrNoLeader = errors.New("election has no leader")

// Election is a leader election among the processes that campaign on one
// name, in the shape of etcd's concurrency.Election. It is nothing but a
// lock: the election Name is the exclusive lock Name in the client's
// Namespace, the leader is its holder, and the leader's value travels as
// the lease's owner_metadata, the JSON object {"value": "<value>"}. So
// `lockctl query --lock NAME` shows the leader, and a campaign waits in
// the lock's FIFO queue: candidates become leader in the order they
// campaigned, but for one still waiting after the contract's maximum wait
// (an hour), or whose session was lost while it waited (see Campaign),
// which queues again at the end. Each leadership's fencing
// token is greater than every earlier one's, which is what a resource
// guarded by the leader should check.
//
// An Election holds no state of its own: any number of goroutines may
// campaign, observe or ask for the leader through one. It differs from
// etcd's, whose campaigns are its session's:
//   - A candidate waits in line in a session of its own, as etcd's does,
//     but leads in a lease of its own (but under REQUIRE_FENCING_TOKEN):
//     see Campaign.
//   - Each Campaign is a new candidate, with an owner of its own (a
//     generated one), unless given WithOwner: a leader that campaigns again
//     without resigning (a retry loop around its work, say) waits in line
//     behind its own leadership, kept alive until Resign, until that
//     leadership ends or ctx does.
//   - There is no Proclaim: a resumed leadership (a Campaign WithOwner of
//     the owner that leads) keeps the value it first led with.
//   - Observe reports new leaders only, never a change of a leader's value.
//   - Resign is the Leadership's, and of a leadership lost already it
//     returns the loss (ErrLeaseLost), where etcd's returns nil.
type Election struct {
	c    *Client
	name string
}

// NewElection returns the election name of c's Namespace. Given a nil c,
// its Campaign, Leader and Observe fail with an error wrapping
// ErrInvalidRequest.
func NewElection(c *Client, name string) *Election {
	return &Election{c: c, name: name}
}

// Name is the election's name, which is also its lock's.
func (e *Election) Name() string { return e.name }

func (e *Election) key() string { return topics.LockKey(e.c.cfg.Namespace, e.name) }

// noClient refuses a call (doing says what it does, as its errors do) of
// an election made with a nil *Client, which has nothing to reach Kafka
// by, nor a Namespace to name its lock in.
func (e *Election) noClient(doing string) error {
	if e.c != nil {
		return nil
	}
	return fmt.Errorf("%s election %q: %w", doing, e.name, invalidRequest("NewElection was given a nil *Client"))
}

// Leadership is a won campaign: the Lease of the election's lock, kept alive
// until Resign. Its Token is the leadership's fencing token; Lost is closed
// and Context cancelled when the leadership is lost (the lease expired
// because keep-alives stopped reaching the worker, the worker refused one,
// or an operator released or revoked the lock).
type Leadership struct {
	*Lease
	// Value is the leader's value as stored with its lease: what it
	// campaigned with (a resumed leadership keeps its first value).
	Value string
}

// Resign gives up the leadership, so the next candidate in line becomes
// leader. Like Lease.Release: Resign after Resign is a no-op, and a
// leadership already lost returns its loss (ErrLeaseLost) at once.
func (l *Leadership) Resign(ctx context.Context) error {
	if err := l.Release(ctx); err != nil {
		return fmt.Errorf("resigning from election %q: %w", l.key(), err)
	}
	return nil
}

// Leader is the leader of an election as the worker reported it.
type Leader struct {
	Namespace string
	Name      string
	// Value is what the leader campaigned with ("" for a holder of the lock
	// that did not campaign).
	Value string
	// Owner is the owner_id holding the election's lock.
	Owner string
	// Token is the leadership's fencing token.
	Token int64
	// AcquiredAt is when it became leader; ExpiresAt when its lease ends
	// unless extended, as of the report. Both are by the worker's clock,
	// PostgreSQL's, not this host's: time.Until(ExpiresAt) mixes the two
	// clocks (a Leadership's own time left is its Lease.Remaining). A
	// holder of the lock in a session (an Acquire WithSession; a
	// campaign's, from its grant until Campaign renews it out of the
	// session, or for good under REQUIRE_FENCING_TOKEN) has the session's,
	// which its keep-alives move without a new report.
	AcquiredAt time.Time
	ExpiresAt  time.Time
}

func leaderOf(li topics.LockInfo) Leader {
	ld := Leader{Namespace: li.Namespace, Name: li.LockName, Owner: li.OwnerID, Token: li.FencingToken,
		Value: leaderValue(li.OwnerMetadata)}
	if li.AcquiredAt != nil {
		ld.AcquiredAt = li.AcquiredAt.Time
	}
	if li.ExpiresAt != nil {
		ld.ExpiresAt = li.ExpiresAt.Time
	}
	return ld
}

// leaderValue is the value a leader campaigned with, from its lease's
// owner_metadata ("" when it did not campaign).
func leaderValue(md json.RawMessage) string {
	var v electionMetadata
	if json.Unmarshal(md, &v) != nil {
		return ""
	}
	return v.Value
}

// electionMetadata is the owner_metadata of a leader's lease.
type electionMetadata struct {
	Value string `json:"value"`
}

// CampaignMetadata is the owner_metadata a campaign for value sends, the
// JSON object {"value": "<value>"}: as jsonb writes it out
// (topics.MetadataBytes), what counts against the contract's limit of
// topics.MaxOwnerMetadataBytes, so that a caller can judge a value before it
// connects.
func CampaignMetadata(value string) json.RawMessage {
	md, _ := topics.Marshal(electionMetadata{Value: value}) // a string always encodes
	return md
}

// Campaign waits until this caller is the leader, then returns its
// Leadership. It takes the election's lock at once when nobody holds it or
// waits for it (or the campaign's owner holds it: a resume, below); else
// it waits in the lock's queue in a session of its own, of the campaign's
// owner and a TTL of its lease (within a TTL's bounds, 1 s .. 1 h; the
// worker's default TTL for the worker's default lease), so that a
// candidate whose process dies while it waits (killed, its host lost)
// leaves the line within that TTL + 1 s of its last keep-alive; one whose
// turn comes first is granted the lock in that session, and holds it as
// long, then the lease's lock-delay, as a dead leader. Once granted, the
// lease is renewed out of the session (an acquire of its owner without
// it: the same Token, its own expiry from then on) and the session
// closed: the Leadership is kept alive by its own keep-alive, as an
// Acquire's lease. A campaign that has to wait costs four round trips
// more than one granted at once (its first acquire, which does not wait,
// the session's open, the renewal and the close), two of them after the
// grant. Under REQUIRE_FENCING_TOKEN, which refuses that renewal, the
// leadership stays in the session, kept alive by the session's keep-alive
// (Extend returns ErrSessionBound; Remaining and ExpiresAt are the
// session's), and the session is closed once the leadership has ended
// (resigned, released or lost). A campaign whose session is lost while it
// waits (its keep-alives unanswered for its TTL: an outage of Kafka or the
// workers) campaigns again, in a new session, at the end of the line.
//
// It waits for as long as ctx allows, with no limit of its own: a wait
// that reaches the contract's maximum (an hour) is renewed, at the end of
// the queue, behind the candidates that campaigned meanwhile. When ctx
// ends first, the campaign is withdrawn from the queue (so it can never be
// granted the leadership later) and the error wraps ctx's cause; Campaign
// returns once the withdrawal is answered (up to four requests, each given
// up to ReplyTimeout, as Acquire says), which can be after ctx's deadline,
// unless another campaign (or acquire) of that owner is in flight in this
// client: the withdrawal then waits for it, and the last of them to end
// sends it, as Acquire's does. Its session is then closed, without waiting
// for the answer. A ctx that ends once the lock was granted, before the
// renewal was answered, ends the campaign too: the lease is released,
// and the session closed, before Campaign returns (each up to
// RequestTimeout). A campaign's owner, even one given WithOwner, is taken
// to be the campaign's alone: it is withdrawn unless a lease of this
// client (a Leadership's, or an Acquire's of that owner) holds the lock
// for that owner, so a campaign given up while resuming a leadership of
// another process ends it; and a Leadership lost to a keep-alive answered
// outside the contract is released as Extend says, even one resumed at
// once WithOwner (an Acquire's lease so granted is not, as it may be
// another process's).
//
// The value must fit the contract's 4 KiB bound of owner_metadata once
// encoded ({"value": ...}, about 4,080 bytes of plain text), else an error
// wrapping ErrInvalidRequest comes at once. opts may set WithLease (the
// leader's lease, renewed every third of it: a leader whose process dies
// is replaced within that lease), WithOwner, OnQueued and WithLockDelay (a
// leader that lost its lease without resigning cannot overlap the next
// one, unless its process or host was paused past the lease's end: see
// Lease.Lost and docs/design.md, "The holder's deadline"); the others
// shape a lock an election does not use, and are refused, but for
// WithMode(Exclusive) and WithLimit(1) (or 0), which change nothing and are
// taken. A campaign WithOwner of the owner that leads already (a restarted
// process with a stable owner id) resumes its leadership at once: the
// same Token, and the Value it led with, even while the process that led
// is alive, which then leads too. An owner id must so never be given to
// two live candidates.
//
// A late grant is never returned as a Leadership: one read past its
// local deadline (its lease's, or its session's) is lost and given back,
// and one whose end (lock.expired, lock.revoked, a release by another
// request) was read before Campaign took it up (the host slept while the
// grant was on its way, and the worker expired it meanwhile), or that came
// before its renewal out of the session (an operator's revoke: the
// renewal, then a new acquire, is refused LOCK_HELD by the lease's
// lock-delay or the next candidate's grant, under REQUIRE_FENCING_TOKEN
// too), is lost already. When the monotonic clock does not show the
// deadline passed (only the boot clock does, or the worker ended the
// lease first), the campaign goes on after a short pause, but after three
// late grants in a row, or one late by the monotonic clock (a lease
// shorter than the round trip, or an outage of the workers, PostgreSQL or
// Kafka longer than it), Campaign returns its loss (ErrLeaseLost).
func (e *Election) Campaign(ctx context.Context, value string, opts ...AcquireOption) (*Leadership, error) {
	if err := e.noClient("campaigning in"); err != nil {
		return nil, err
	}
	if err := e.c.sends(); err != nil {
		return nil, fmt.Errorf("campaigning in election %q: %w", e.key(), err)
	}
	o := e.c.acquireOptions(opts)
	switch {
	case o.mode != "" && o.mode != Exclusive, o.limit > 1:
		return nil, e.invalid("a leadership is an exclusive lock of one holder: WithMode(Shared) and a WithLimit above 1 do not apply")
	case o.metadata != nil || o.metaErr != nil:
		return nil, e.invalid("the leader's value is the lease's owner_metadata: WithMetadata does not apply")
	case o.session != nil:
		return nil, e.invalid("a campaign waits in a session of its own: WithSession does not apply")
	case !o.keepAlive:
		return nil, e.invalid("a leadership is kept alive until Resign: WithoutKeepAlive does not apply")
	case o.maxHold > 0:
		return nil, e.invalid("a leadership is kept until Resign: WithMaxHold does not apply")
	case o.waitSet:
		return nil, e.invalid("a campaign waits as long as its context allows: WithWait does not apply")
	}
	md := CampaignMetadata(value)
	if n := max(len(md), topics.MetadataBytes(md)); n > topics.MaxOwnerMetadataBytes {
		return nil, e.invalid(fmt.Sprintf("the value is %d bytes, %d as owner_metadata, over the contract's limit of %d",
			len(value), n, topics.MaxOwnerMetadataBytes))
	}
	o.metadata = md
	o.dedicatedOwner = true
	lateGrants := 0 // in a row
	for {
		o.wait = time.Duration(topics.MaxWaitSeconds) * time.Second
		if dl, ok := ctx.Deadline(); ok {
			o.wait = min(o.wait, time.Until(dl))
		}
		if o.wait < time.Millisecond {
			// A wait of 0 would be a try, refused at once while someone
			// leads: the deadline has come.
			<-ctx.Done()
			return nil, fmt.Errorf("campaigning in election %q: %w", e.key(), context.Cause(ctx))
		}
		l, err := e.campaign(ctx, o)
		if err == nil {
			// The value stored with the lease: a renewal keeps the old one.
			return &Leadership{Lease: l, Value: leaderOf(l.Info()).Value}, nil
		}
		var lost *lostInLine
		if (errors.Is(err, ErrLockTimeout) || errors.As(err, &lost)) && ctx.Err() == nil {
			lateGrants = 0
			continue // an hour in line, or out of it with the session: queue again
		}
		var late *lateGrant
		if errors.As(err, &late) && late.again && ctx.Err() == nil {
			// A grant read past its local deadline by the boot clock alone,
			// or ended by the worker before it was taken up (the host slept
			// while it was on its way), lost (and given back, if the worker
			// holds it) already: campaign again, after a pause, unless that
			// keeps happening (the wall-clock fallback stepping on).
			lateGrants++
			if lateGrants < maxLateGrants {
				if !pause(ctx, lateGrantPause<<(lateGrants-1)) {
					return nil, fmt.Errorf("campaigning in election %q: %w", e.key(), context.Cause(ctx))
				}
				continue
			}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("campaigning in election %q: %w", e.key(), context.Cause(ctx))
		}
		return nil, fmt.Errorf("campaigning in election %q: %w", e.key(), err)
	}
}

// campaign is one round of Campaign: the lock at once, if it is free (or
// the owner's), else a wait of o.wait in line in a session of its own,
// whose grant is then renewed out of the session. Its errors are
// Acquire's, or the session's (NewSession's), or a lostInLine, or a
// lateGrant for a grant that ended before its renewal.
func (e *Election) campaign(ctx context.Context, o acquireOptions) (*Lease, error) {
	noWait := o
	noWait.wait = 0
	l, err := e.c.acquire(ctx, e.name, noWait)
	if !errors.Is(err, ErrLockHeld) {
		return l, err
	}
	s, err := e.c.NewSession(ctx, campaignTTL(o.lease), WithSessionOwner(o.owner))
	if err != nil {
		return nil, err
	}
	inLine := o
	WithSession(s)(&inLine)
	held, err := e.c.acquire(ctx, e.name, inLine)
	if err != nil {
		// Withdrawn, or its grant given back, by Acquire already (or by the
		// session's end): the session holds nothing. A ctx that ended does
		// not wait for the answer.
		_ = s.Close(ctx)
		return nil, lostWith(s, err)
	}
	// The same lease, with its own expiry from now (the holder's acquire
	// without a session: the same token, value and lock-delay). Should the
	// lease have ended with the session meanwhile, this is a new acquire,
	// the lock taken at once, or refused.
	noWait.generatedOwner = false // it holds the lease
	l, err = e.c.acquire(ctx, e.name, noWait)
	switch {
	case err == nil:
		// The session holds nothing now: its close releases nothing, and
		// ends the session's Lease here, which is no Leadership's. Not
		// waited for past a reply's wait: unanswered (its partition's
		// replica stalled), it ends at its TTL, and the lease, which may
		// have been lost meanwhile, is not returned until it is known.
		cctx, cancel := context.WithTimeout(ctx, e.c.cfg.ReplyTimeout)
		_ = s.Close(cctx)
		cancel()
		if lost := l.lostErr(); lost != nil {
			return nil, lostWith(s, &lateGrant{err: lost, again: true})
		}
		return l, nil
	case errors.Is(err, ErrInvalidRequest) && held.Err() == nil:
		// Refused, the lease stays as it was: in the session, for good
		// under REQUIRE_FENCING_TOKEN, which refuses every renewal.
		closeWhenEnded(held, s)
		return held, nil
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.c.cfg.RequestTimeout)
	defer cancel()
	if errors.Is(err, ErrLockHeld) || errors.Is(err, ErrInvalidRequest) {
		// The lease ended before it was taken up (revoked, say), with
		// nothing to give back: before the renewal was applied, which was
		// then a new acquire, refused (LOCK_HELD: the lease's lock-delay,
		// or the next candidate granted by that end; under
		// REQUIRE_FENCING_TOKEN too), or after (INVALID_REQUEST, its end
		// read since). A late grant, ended by the worker rather than by
		// this host's clock: Campaign goes on.
		lost := held.lostErr()
		if lost == nil {
			// Its end not read yet. The refusal is told, not wrapped: the
			// campaign's error is the loss, not a lock held.
			lost = fmt.Errorf("%w: it ended before its renewal out of the campaign's session (%v)", ErrLeaseLost, err)
		}
		_ = s.Close(rctx)
		return nil, lostWith(s, &lateGrant{err: lost, again: true, ended: true})
	}
	// Given up (ctx ended, no answer), when it may have been applied, or
	// refused otherwise: the release by its token ends the lease either
	// way, in the session or out of it.
	_ = held.Release(rctx)
	_ = s.Close(rctx)
	return nil, lostWith(s, err)
}

// lostInLine is the error of a campaign's round whose session was lost
// (not closed by the round): the candidate, alive, left the line for an
// outage of its keep-alives, and campaigns again.
type lostInLine struct{ error }

func (e *lostInLine) Unwrap() error { return e.error }

// lostWith is err, a lostInLine when session s was lost.
func lostWith(s *Session, err error) error {
	if errors.Is(s.Err(), ErrSessionLost) {
		return &lostInLine{err}
	}
	return err
}

// campaignTTL is the TTL of a campaign's session: its lease, within the
// bounds of a TTL. The worker's default lease (0) gets its default TTL.
func campaignTTL(lease time.Duration) time.Duration {
	if lease == 0 {
		return 0
	}
	return min(max(lease, topics.MinSessionTTLSeconds*time.Second), topics.MaxSessionTTLSeconds*time.Second)
}

// closeWhenEnded closes s, a campaign's session that keeps the leadership
// held (its renewal out of the session refused), once held has ended:
// after the release of a Release has been answered, as the close would
// release the lease under it, and the worker then refuse that release.
// Best effort: a session whose close fails is no longer kept alive, and
// ends at its expiry.
func closeWhenEnded(held *Lease, s *Session) {
	context.AfterFunc(held.Context(), func() {
		held.releasing <- struct{}{} // a Release holds it until answered
		<-held.releasing
		ctx, cancel := context.WithTimeout(context.Background(), held.c.cfg.RequestTimeout)
		defer cancel()
		_ = s.Close(ctx)
	})
}

// maxLateGrants is how many grants in a row, each read past its local
// deadline by the boot clock alone or ended by the worker before it was
// taken up, end a campaign: the first pause after
// one is lateGrantPause, doubling after each (up to bootCheckInterval).
const (
	maxLateGrants  = 3
	lateGrantPause = 100 * time.Millisecond
)

// pause waits about d (at most bootCheckInterval), jittered to between
// half and all of it, so that candidates woken together do not campaign in
// step; false when ctx ended first.
func pause(ctx context.Context, d time.Duration) bool {
	d = min(d, bootCheckInterval)
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (e *Election) invalid(msg string) error {
	return fmt.Errorf("campaigning in election %q: %w", e.key(), invalidRequest(msg))
}

// Leader returns the current leader, or ErrNoLeader when nobody leads (the
// last leader resigned, or its lease ran out even if the worker has not
// ended it yet).
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	if err := e.noClient("asking for the leader of"); err != nil {
		return Leader{}, err
	}
	st, err := e.c.Query(ctx, e.name)
	if err != nil {
		return Leader{}, fmt.Errorf("asking for the leader of election %q: %w", e.key(), err)
	}
	if st.Status != StatusAcquired {
		return Leader{}, fmt.Errorf("election %q: %w (its lock is %s)", e.key(), ErrNoLeader, st.Status)
	}
	return leaderOf(st.Info), nil
}

// Observe reports the election's leaders: the current one first (if any),
// then each new one, from the election lock's revisions on the lock state
// topic (Watch). Each leader comes once, in fencing-token order. Only the
// newest leader is kept for a slow receiver, which may so skip leaders that
// came and went. A vacancy is not reported (Leader tells it); a leadership
// that ends is followed by its successor's report. A report means the
// candidate held the election's lock: a queued candidate is granted in
// its campaign's session before Campaign renews the grant out of it and
// returns, so a leader may be reported some milliseconds before its
// Campaign returns, and one whose Campaign ended meanwhile (its ctx, a
// lost renewal) gives the grant back, reported all the same and followed
// by its successor; fencing tokens tell the real leaders' writes apart,
// as always. (etcd's Observe reports such candidates too.) The channel is closed
// when ctx ends or the client closes. Errors reaching Kafka wrap
// ErrUnreachable. After its setup, the reading is retried without a word
// unless opts has OnFetchError, which tells of its failures as for Watch.
func (e *Election) Observe(ctx context.Context, opts ...WatchOption) (<-chan Leader, error) {
	if err := e.noClient("observing"); err != nil {
		return nil, err
	}
	states, err := e.c.Watch(ctx, e.name, opts...)
	if err != nil {
		return nil, fmt.Errorf("observing election %q: %w", e.key(), err)
	}
	out := make(chan Leader)
	go observe(states, out)
	return out, nil
}

// observe feeds out until states closes. It keeps the newest leader not yet
// delivered, so reading never waits for the receiver.
func observe(states <-chan LockRevision, out chan<- Leader) {
	defer close(out)
	var pending *Leader
	var newest int64 // token of the newest leader seen
	for {
		var send chan<- Leader
		var next Leader
		if pending != nil {
			send, next = out, *pending
		}
		select {
		case send <- next:
			pending = nil
		case lr, ok := <-states:
			if !ok {
				return
			}
			if lr.Status != StatusAcquired || len(lr.Holders) == 0 || lr.Holders[0].Token <= newest {
				continue
			}
			h := lr.Holders[0]
			ld := Leader{Namespace: lr.Namespace, Name: lr.Name, Value: leaderValue(h.Metadata), Owner: h.Owner, Token: h.Token,
				AcquiredAt: h.AcquiredAt, ExpiresAt: h.ExpiresAt}
			newest, pending = h.Token, &ld
		}
	}
}
