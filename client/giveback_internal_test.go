package client

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// releasedEvent is the lock.released answering the release cmd.
func releasedEvent(cmd topics.Command) topics.Event {
	return topics.NewEvent(topics.TypeReleased, cmd.Operation, cmd.RequestID, time.Now())
}

// queuedEvent is the lock.queued, first in line, answering the acquire cmd.
func queuedEvent(cmd topics.Command) topics.Event {
	ev := topics.NewEvent(topics.TypeQueued, cmd.Operation, cmd.RequestID, time.Now())
	ev.QueuePosition = 1
	return ev
}

// A lease lost to an extension answered outside the contract is released
// even when the client is closing meanwhile, as a given-up acquire is
// withdrawn: Close waits for that release's answer (late here: the worker
// answers once Close has begun), rather than cancel it or refuse to send it.
func TestLostLeaseReleasedWhileClosing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	released := make(chan topics.Command, 1)
	var client atomic.Pointer[Client]
	a := leaseAnswers(60, 0)
	a[topics.OpRelease] = func(ctx context.Context, cmd topics.Command) []topics.Event {
		select {
		case <-client.Load().closing.Done(): // Close has begun
		case <-ctx.Done():
			return nil
		}
		deliver(ctx, released, cmd)
		return one(releasedEvent(cmd))
	}
	c := fakeWorker(t, a.by(nil))
	client.Store(c)
	l, err := c.Acquire(ctx, "job", WithoutKeepAlive())
	require.NoError(t, err)
	extended := make(chan error, 1)
	go func() { extended <- l.Extend(ctx, time.Minute) }()
	await(t, ctx, l.Lost(), "the lease is not lost")
	require.NoError(t, c.Close())
	select {
	case cmd := <-released:
		require.Equal(t, l.Owner, cmd.OwnerID)
		require.NotNil(t, cmd.FencingToken)
		require.Equal(t, l.Token, *cmd.FencingToken)
	default:
		t.Fatal("Close returned before the lost lease's release was answered")
	}
	require.ErrorContains(t, <-extended, "lock.extended with lease_duration 0")
}

// statusEvent is the lock.status answering the query cmd.
func statusEvent(cmd topics.Command) topics.Event {
	ev := topics.NewEvent(topics.TypeStatus, cmd.Operation, cmd.RequestID, time.Now())
	ev.LockInfo = &topics.LockInfo{Namespace: cmd.Namespace, LockName: cmd.LockName, Status: topics.StatusFree}
	return ev
}

// recorder keeps the commands fakeWorker sees, in order.
type recorder struct {
	mu   sync.Mutex
	cmds []topics.Command
}

func (r *recorder) add(cmd topics.Command) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cmds = append(r.cmds, cmd)
}

// since is the operations of the commands seen from the i-th on.
func (r *recorder) since(i int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ops []string
	for _, cmd := range r.cmds[min(i, len(r.cmds)):] {
		ops = append(ops, cmd.Operation)
	}
	return ops
}

// of is the commands of operation op seen from the i-th on.
func (r *recorder) of(op string, i int) []topics.Command {
	r.mu.Lock()
	defer r.mu.Unlock()
	var cmds []topics.Command
	for _, cmd := range r.cmds[min(i, len(r.cmds)):] {
		if cmd.Operation == op {
			cmds = append(cmds, cmd)
		}
	}
	return cmds
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cmds)
}

// Two extensions of one lease both answered outside the contract (the
// keep-alive's and Extend's, say, both sent while it was held) lose it
// once, and release it with one command: each sends the lease's release,
// the second with the first's request_id, which the worker applies at most
// once (a repeated request_id is answered from its stored outcome,
// design.md "Idempotency"). The worker answers the first extension once it
// sees the second, and the second (sent again after ReplyTimeout) once the
// first release was answered.
func TestLostLeaseReleasedOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	sent := make(chan struct{}, 1)
	var first string
	var releases int
	a := leaseAnswers(60, 0)
	a[topics.OpExtend] = func(_ context.Context, cmd topics.Command) []topics.Event {
		switch {
		case first == "":
			first = cmd.RequestID
			sent <- struct{}{}
			return nil
		case cmd.RequestID == first:
			return nil // sent again; answered already
		case releases == 0:
			ev := granted(cmd, topics.TypeExtended, 0)
			ev.RequestID = first
			return one(ev)
		}
		return one(granted(cmd, topics.TypeExtended, 0))
	}
	a[topics.OpRelease] = func(_ context.Context, cmd topics.Command) []topics.Event {
		releases++
		return one(releasedEvent(cmd))
	}
	c := fakeWorker(t, a.by(&seen))
	l, err := c.Acquire(ctx, "job", WithoutKeepAlive())
	require.NoError(t, err)
	errs := make(chan error, 2)
	go func() { errs <- l.Extend(ctx, time.Minute) }()
	<-sent
	go func() { errs <- l.Extend(ctx, time.Minute) }()
	for range 2 {
		require.ErrorContains(t, <-errs, "lock.extended with lease_duration 0")
	}
	require.ErrorIs(t, l.Err(), ErrLeaseLost)
	_, err = c.Query(ctx, "marker")
	require.NoError(t, err)
	rels := seen.of(topics.OpRelease, 0)
	require.Len(t, rels, 2)
	for _, rel := range rels {
		require.Equal(t, l.Token, *rel.FencingToken)
	}
	require.Equal(t, rels[0].RequestID, rels[1].RequestID, "the second release is the first again")
}

// An extension answered after the lease's local deadline already lost it
// (sent near the deadline, answered late) releases it, answered outside the
// contract or not: the worker may just have extended it, and would hold it
// for nobody. The grant's lease ends 300 ms after it; the worker answers
// the extension once the lease is lost.
func TestLostLeaseReleasedAfterItsDeadline(t *testing.T) {
	for name, tc := range map[string]struct {
		lease   float64 // the extension's answer
		extends string  // what Extend returns
	}{
		"outside the contract": {0, "lock.extended with lease_duration 0"},
		"extended":             {60, "reached its expiry without a confirmed extension"},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var seen recorder
			lost := make(chan struct{})
			a := leaseAnswers(60, tc.lease)
			a[topics.OpAcquire] = func(_ context.Context, cmd topics.Command) []topics.Event {
				ev := granted(cmd, topics.TypeAcquired, 60)
				ev.LockInfo.ExpiresAt = topics.NewTimePtr(ev.OccurredAt.Add(300 * time.Millisecond))
				return one(ev)
			}
			a[topics.OpExtend] = func(ctx context.Context, cmd topics.Command) []topics.Event {
				select {
				case <-lost:
				case <-ctx.Done():
					return nil
				}
				return one(granted(cmd, topics.TypeExtended, tc.lease))
			}
			c := fakeWorker(t, a.by(&seen))
			l, err := c.Acquire(ctx, "job", WithoutKeepAlive())
			require.NoError(t, err)
			start := seen.len()
			go func() {
				<-l.Lost()
				close(lost)
			}()
			require.ErrorContains(t, l.Extend(ctx, time.Minute), tc.extends)
			require.ErrorContains(t, l.Err(), "reached its expiry without a confirmed extension")
			_, err = c.Query(ctx, "marker")
			require.NoError(t, err)
			ops := slices.Compact(seen.since(start)) // an extension sent again after ReplyTimeout
			require.Equal(t, []string{topics.OpExtend, topics.OpRelease, topics.OpQuery}, ops)
		})
	}
}

// An extension answered outside the contract after the worker ended the
// lease (lock.revoked, read while the extension was on its way) still
// sends the lease's release, guarded by its fencing token: the client
// cannot tell that ending from its own, and no later lease has that token
// (a new grant gets a new one), so the worker refuses it, NOT_HELD here.
// The lease stays lost to its revoke, and the release's marker is cleared
// (acquires of the lock and owner wait no more).
func TestLeaseEndedByTheWorkerReleasedByToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	var client atomic.Pointer[Client]
	var lease atomic.Pointer[Lease]
	a := leaseAnswers(60, 0)
	a[topics.OpExtend] = func(_ context.Context, cmd topics.Command) []topics.Event {
		if l := lease.Load(); l != nil && l.Err() == nil {
			info := l.Info()
			client.Load().route(topics.Event{Type: topics.TypeRevoked, LockInfo: &info, OccurredAt: topics.Time{Time: time.Now()}, Reason: "ops"})
		}
		return one(granted(cmd, topics.TypeExtended, 0))
	}
	a[topics.OpRelease] = answerWith(func(cmd topics.Command) topics.Event { return rejectedEvent(cmd, topics.CodeNotHeld) })
	c := fakeWorker(t, a.by(&seen))
	client.Store(c)
	l, err := c.Acquire(ctx, "job", WithoutKeepAlive())
	require.NoError(t, err)
	lease.Store(l)
	start := seen.len()
	require.ErrorContains(t, l.Extend(ctx, time.Minute), "lock.extended with lease_duration 0")
	require.ErrorIs(t, l.Err(), ErrRevoked)
	_, err = c.Query(ctx, "marker")
	require.NoError(t, err)
	require.Equal(t, []string{topics.OpExtend, topics.OpRelease, topics.OpQuery}, slices.Compact(seen.since(start)))
	rels := seen.of(topics.OpRelease, start)
	require.NotEmpty(t, rels)
	rel := rels[0]
	require.Equal(t, l.Owner, rel.OwnerID)
	require.NotNil(t, rel.FencingToken)
	require.Equal(t, l.Token, *rel.FencingToken)
	c.mu.Lock()
	_, marked := c.acquiring[c.acquireKey(l.Namespace, l.Name, l.Owner)]
	c.mu.Unlock()
	require.False(t, marked, "the release's marker outlives its answer")
}

// A lease lost to an extension answered outside the contract while its
// Release is on its way is left to that Release: a release of its own
// would be the same command (one request_id), and two waiters on one
// request_id would take each other's answer. The worker answers the
// Release only once the marker query comes, sent after the extension
// returned; every release it sees is Release's command.
func TestLostLeaseLeftToItsRelease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	releasing := make(chan topics.Command, 1)
	var marked bool
	a := leaseAnswers(60, 0)
	a[topics.OpRelease] = func(_ context.Context, cmd topics.Command) []topics.Event {
		if marked {
			return one(releasedEvent(cmd))
		}
		select {
		case releasing <- cmd: // the first time (Release sends again after ReplyTimeout)
		default:
		}
		return nil
	}
	a[topics.OpQuery] = func(ctx context.Context, cmd topics.Command) []topics.Event {
		marked = true
		select {
		case rel := <-releasing:
			return []topics.Event{releasedEvent(rel), statusEvent(cmd)}
		case <-ctx.Done():
			return nil
		}
	}
	c := fakeWorker(t, a.by(&seen))
	l, err := c.Acquire(ctx, "job", WithoutKeepAlive())
	require.NoError(t, err)
	released := make(chan error, 1)
	go func() { released <- l.Release(ctx) }()
	require.Eventually(t, func() bool { return len(releasing) == 1 }, 10*time.Second, 10*time.Millisecond,
		"the worker sees the Release")
	require.ErrorContains(t, l.Extend(ctx, time.Minute), "lock.extended with lease_duration 0")
	require.ErrorIs(t, l.Err(), ErrLeaseLost)
	_, err = c.Query(ctx, "marker")
	require.NoError(t, err)
	require.NoError(t, <-released, "the worker released the lease for Release")
	rels := seen.of(topics.OpRelease, 0)
	require.NotEmpty(t, rels)
	for _, rel := range rels {
		require.Equal(t, rels[0].RequestID, rel.RequestID, "a release other than Release's")
	}
}

// A lease lost to an extension answered outside the contract is not
// released while the release could end a lease held by someone else. The
// owner "o" first waits (lock.queued), so its lease is its own; its second
// acquire is a renewal, the same token at once. The first's lost extension
// leaves the renewal's Lease of the token held; the renewal's, granted
// without waiting WithOwner, may be another process's lease too. The
// marker query comes right after the extensions: no release between.
func TestSharedLeaseNotReleased(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	var held bool
	a := leaseAnswers(60, 0)
	a[topics.OpAcquire] = func(_ context.Context, cmd topics.Command) []topics.Event {
		if held {
			return one(granted(cmd, topics.TypeAcquired, 60))
		}
		held = true
		return []topics.Event{queuedEvent(cmd), granted(cmd, topics.TypeAcquired, 60)}
	}
	c := fakeWorker(t, a.by(&seen))
	first, err := c.Acquire(ctx, "job", WithOwner("o"), WithoutKeepAlive())
	require.NoError(t, err)
	renewal, err := c.Acquire(ctx, "job", WithOwner("o"), WithoutKeepAlive())
	require.NoError(t, err)
	require.Equal(t, first.Token, renewal.Token)
	start := seen.len()

	require.ErrorContains(t, first.Extend(ctx, time.Minute), "lock.extended with lease_duration 0")
	require.ErrorIs(t, first.Err(), ErrLeaseLost)
	require.NoError(t, renewal.Err())
	require.ErrorContains(t, renewal.Extend(ctx, time.Minute), "lock.extended with lease_duration 0")
	require.ErrorIs(t, renewal.Err(), ErrLeaseLost)
	_, err = c.Query(ctx, "marker")
	require.NoError(t, err)
	require.Equal(t, []string{topics.OpExtend, topics.OpExtend, topics.OpQuery}, seen.since(start))
}

// A lease lost to an extension answered outside the contract is not
// released while an acquire of its lock and owner is in flight in the same
// client: that renewal may be granted already, unseen, and the release,
// applied after it, would end it. The owner "o" first waits (lock.queued),
// so its lease is its own (not mayBeShared); the worker holds the
// renewal's grant until the marker query, which comes right after the
// extension: no release between.
func TestLostLeaseNotReleasedWhileRenewing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	var held bool
	renewing := make(chan topics.Command, 1)
	a := leaseAnswers(60, 0)
	a[topics.OpAcquire] = func(_ context.Context, cmd topics.Command) []topics.Event {
		if held {
			select {
			case renewing <- cmd: // the first time (sent again after ReplyTimeout)
			default:
			}
			return nil
		}
		held = true
		return []topics.Event{queuedEvent(cmd), granted(cmd, topics.TypeAcquired, 60)}
	}
	a[topics.OpQuery] = func(ctx context.Context, cmd topics.Command) []topics.Event {
		select {
		case acq := <-renewing:
			return []topics.Event{granted(acq, topics.TypeAcquired, 60), statusEvent(cmd)}
		case <-ctx.Done():
			return nil
		}
	}
	c := fakeWorker(t, a.by(&seen))
	first, err := c.Acquire(ctx, "job", WithOwner("o"), WithoutKeepAlive())
	require.NoError(t, err)
	start := seen.len()
	renewed := make(chan *Lease, 1)
	go func() {
		l, err := c.Acquire(ctx, "job", WithOwner("o"), WithoutKeepAlive())
		assert.NoError(t, err)
		renewed <- l
	}()
	require.Eventually(t, func() bool { return len(renewing) == 1 }, 10*time.Second, time.Millisecond,
		"the worker sees the renewal")

	require.ErrorContains(t, first.Extend(ctx, time.Minute), "lock.extended with lease_duration 0")
	require.ErrorIs(t, first.Err(), ErrLeaseLost)
	_, err = c.Query(ctx, "marker")
	require.NoError(t, err)
	renewal := <-renewed
	require.NotNil(t, renewal)
	require.Equal(t, first.Token, renewal.Token)
	require.NoError(t, renewal.Err())
	ops := slices.DeleteFunc(seen.since(start), func(op string) bool { return op == topics.OpAcquire })
	require.Equal(t, []string{topics.OpExtend, topics.OpQuery}, ops)
}

// rejectedEvent is a lock.rejected with code answering cmd.
func rejectedEvent(cmd topics.Command, code string) topics.Event {
	ev := topics.NewEvent(topics.TypeRejected, cmd.Operation, cmd.RequestID, time.Now())
	ev.ErrorCode, ev.ErrorMessage = code, "test"
	return ev
}

// A grant refused because its reply breaks the contract is released by the
// reply's fencing token; when the worker refuses that release (the token
// was as wrong as the rest, TOKEN_MISMATCH here), a generated owner, which
// holds nothing else, is released again without the token. An owner given
// WithOwner (seen queued, so withdrawn at all) is not: without the token
// the release could end another lease of that owner.
func TestRefusedGrantWrongToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	a := leaseAnswers(0, 0)
	a[topics.OpAcquire] = func(_ context.Context, cmd topics.Command) []topics.Event {
		ev := granted(cmd, topics.TypeAcquired, 0)
		ev.LockInfo.FencingToken = 7
		if cmd.OwnerID == "x" {
			return []topics.Event{queuedEvent(cmd), ev}
		}
		return one(ev)
	}
	a[topics.OpRelease] = func(_ context.Context, cmd topics.Command) []topics.Event {
		if cmd.FencingToken != nil {
			return one(rejectedEvent(cmd, topics.CodeTokenMismatch))
		}
		return one(releasedEvent(cmd))
	}
	c, _ := fakeWorkerWith(t, patient, a.by(&seen))
	releases := func(start int) []*int64 {
		t.Helper()
		acquire := seen.of(topics.OpAcquire, start)[0]
		var tokens []*int64
		for _, cmd := range seen.of(topics.OpRelease, start) {
			require.Equal(t, acquire.OwnerID, cmd.OwnerID, "the acquire's owner")
			tokens = append(tokens, cmd.FencingToken)
		}
		return tokens
	}

	start := seen.len()
	_, err := c.Acquire(ctx, "job")
	require.ErrorContains(t, err, "lock.acquired with lease_duration 0")
	tokens := releases(start)
	require.Len(t, tokens, 2, "by the token, then without")
	require.NotNil(t, tokens[0])
	require.EqualValues(t, 7, *tokens[0])
	require.Nil(t, tokens[1])

	start = seen.len()
	_, err = c.Acquire(ctx, "job", WithOwner("x"))
	require.ErrorContains(t, err, "lock.acquired with lease_duration 0")
	_, err = c.Query(ctx, "marker")
	require.NoError(t, err)
	require.Equal(t, []string{topics.OpAcquire, topics.OpRelease, topics.OpQuery}, seen.since(start))
}

// A grant refused because its reply breaks the contract, for an owner given
// WithOwner and not seen queued, is not released: the owner may have held
// the lock already (a renewal, another process's), and the release would
// end that lease. The marker query is the next command the worker sees.
func TestRefusedGrantWithOwnerNotReleased(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	c := fakeWorker(t, leaseAnswers(0, 0).by(&seen))
	_, err := c.Acquire(ctx, "job", WithOwner("x"))
	require.ErrorContains(t, err, "lock.acquired with lease_duration 0")
	_, err = c.Query(ctx, "marker")
	require.NoError(t, err)
	require.Equal(t, []string{topics.OpAcquire, topics.OpQuery}, seen.since(0))
}

// Extend of a lease already lost (to its local deadline here: the grant's
// lease ends 200 ms after it) returns its loss, the error Err reports, and
// sends nothing: an extension the worker applied would keep the lock held
// for nobody. The marker query comes right after the grant.
func TestExtendLostLeaseNotSent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	a := leaseAnswers(60, 60)
	a[topics.OpAcquire] = func(_ context.Context, cmd topics.Command) []topics.Event {
		ev := granted(cmd, topics.TypeAcquired, 60)
		ev.LockInfo.ExpiresAt = topics.NewTimePtr(ev.OccurredAt.Add(200 * time.Millisecond))
		return one(ev)
	}
	c := fakeWorker(t, a.by(&seen))
	l, err := c.Acquire(ctx, "job", WithoutKeepAlive())
	require.NoError(t, err)
	start := seen.len()
	await(t, ctx, l.Lost(), "the lease is not lost")
	err = l.Extend(ctx, time.Minute)
	require.ErrorIs(t, err, ErrLeaseLost)
	require.ErrorIs(t, err, l.Err())
	_, err = c.Query(ctx, "marker")
	require.NoError(t, err)
	require.Equal(t, []string{topics.OpQuery}, seen.since(start))
}

// Release of a lease lost to an extension answered outside the contract
// returns the loss at once while the lease's give-back release is on its
// way, and sends nothing: it does not wait for the slot the give-back holds
// (up to ReplyTimeout, 20 s here), nor, with a ctx that has ended, return
// that it gave up waiting. The worker answers the give-back only once both
// Releases returned.
func TestReleaseDuringGiveBackReturnsLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	givingBack := make(chan struct{}, 1)
	answer := make(chan struct{})
	a := leaseAnswers(60, 0)
	a[topics.OpRelease] = func(ctx context.Context, cmd topics.Command) []topics.Event {
		deliver(ctx, givingBack, struct{}{})
		select {
		case <-answer:
		case <-ctx.Done():
			return nil
		}
		return one(releasedEvent(cmd))
	}
	c := fakeWorker(t, a.by(&seen))
	c.cfg.ReplyTimeout = 20 * time.Second // the give-back holds the slot until answered
	l, err := c.Acquire(ctx, "job", WithoutKeepAlive())
	require.NoError(t, err)
	extended := make(chan error, 1)
	go func() { extended <- l.Extend(ctx, time.Minute) }()
	await(t, ctx, givingBack, "the lost lease is not given back")
	require.Len(t, l.releasing, 1, "the give-back holds the slot")

	ended, end := context.WithCancel(ctx)
	end()
	err = l.Release(ended)
	require.ErrorIs(t, err, ErrLeaseLost)
	require.ErrorContains(t, err, "lock.extended with lease_duration 0")
	released := make(chan error, 1)
	go func() { released <- l.Release(ctx) }()
	select {
	case err := <-released:
		require.ErrorIs(t, err, ErrLeaseLost)
	case <-time.After(5 * time.Second):
		t.Fatal("Release waits for the give-back")
	}

	close(answer)
	require.ErrorContains(t, <-extended, "lock.extended with lease_duration 0")
	_, err = c.Query(ctx, "marker")
	require.NoError(t, err)
	require.Len(t, seen.of(topics.OpRelease, 0), 1, "only the give-back's release is sent")
}

// A lease lost to an extension answered outside the contract while a
// Release holds the slot and has not yet looked whether the lease ended
// (between its take and its check) is still given back: that Release finds
// the loss and returns it, sending nothing, so the give-back waits for the
// slot instead of leaving the release to it, and sends it once the slot is
// free. The test holds the slot in that Release's place and gives it up
// after the loss; Extend does not return before. A Release started first
// waits for the slot (or, if it looks after the loss, returns at once) and
// returns the loss either way.
func TestGiveBackWaitsForReleaseFindingTheLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	c := fakeWorker(t, leaseAnswers(60, 0).by(&seen))
	l, err := c.Acquire(ctx, "job", WithoutKeepAlive())
	require.NoError(t, err)
	start := seen.len()
	l.releasing <- struct{}{} // a Release between its take and its check
	released := make(chan error, 1)
	go func() { released <- l.Release(ctx) }()
	extended := make(chan error, 1)
	go func() { extended <- l.Extend(ctx, time.Minute) }()
	await(t, ctx, l.Lost(), "the lease is not lost")
	select {
	case err := <-extended:
		t.Fatalf("Extend returned while a Release that sends nothing held the slot: %v", err)
	default:
	}
	<-l.releasing // the holder returns the loss, sending nothing
	recv := func(ch chan error) error {
		t.Helper()
		return await(t, ctx, ch, "no answer: the give-back still waits for the slot?")
	}
	require.ErrorContains(t, recv(extended), "lock.extended with lease_duration 0")
	err = recv(released)
	require.ErrorIs(t, err, ErrLeaseLost)
	require.ErrorContains(t, err, "lock.extended with lease_duration 0")
	_, err = c.Query(ctx, "marker")
	require.NoError(t, err)
	require.Equal(t, []string{topics.OpExtend, topics.OpRelease, topics.OpQuery}, slices.Compact(seen.since(start)))
	for _, cmd := range seen.of(topics.OpRelease, start) {
		require.Equal(t, l.Owner, cmd.OwnerID)
		require.NotNil(t, cmd.FencingToken)
		require.Equal(t, l.Token, *cmd.FencingToken)
	}
}

// TestReleaseAnsweredWithdrawnIsNotHeld: a release the worker answers by
// withdrawing a wait of the same owner (the lease ended on the worker
// before the client knew, and another acquire of the owner waits for the
// lock) did not end this lease: the owner held nothing. Release says so,
// ErrNotHeld, and the lease is lost, not released.
func TestReleaseAnsweredWithdrawnIsNotHeld(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a := leaseAnswers(30, 0)
	a[topics.OpRelease] = func(_ context.Context, cmd topics.Command) []topics.Event {
		ev := topics.NewEvent(topics.TypeWithdrawn, cmd.Operation, cmd.RequestID, time.Now())
		ev.LockInfo = &topics.LockInfo{Namespace: cmd.Namespace, LockName: cmd.LockName, OwnerID: cmd.OwnerID, Status: topics.StatusAcquired}
		return one(ev)
	}
	c := fakeWorker(t, a.by(nil))
	l, err := c.Acquire(ctx, "job", WithoutKeepAlive())
	require.NoError(t, err)
	err = l.Release(ctx)
	require.ErrorIs(t, err, ErrNotHeld)
	require.ErrorIs(t, l.Err(), ErrLeaseLost)
	require.NotErrorIs(t, l.Err(), ErrReleased)
	select {
	case <-l.Lost():
	default:
		t.Fatal("Lost not closed")
	}
}

// TestSessionCloseAfterARefusedClose: a Close after one the worker refused
// returns that refusal again, sending nothing, rather than nil.
func TestSessionCloseAfterARefusedClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	c := fakeWorker(t, answers{
		topics.OpSessionOpen:  sessionAnswers(topics.TypeSessionOpened, 30),
		topics.OpSessionClose: answerWith(func(cmd topics.Command) topics.Event { return rejectedEvent(cmd, topics.CodeSessionNotFound) }),
	}.by(&seen))
	s, err := c.NewSession(ctx, 30*time.Second)
	require.NoError(t, err)
	require.ErrorIs(t, s.Close(ctx), ErrSessionNotFound)
	start := seen.len()
	require.ErrorIs(t, s.Close(ctx), ErrSessionNotFound, "Close after a refused Close")
	require.Empty(t, seen.since(start), "sent again")
}

// An extension refused with a code that does not end the lease (nothing
// applied, design.md "Error codes") loses it here and gives it back, a
// release by its fencing token: the worker still holds it, and would for
// nobody until its expiry. One refused with a code that says the lease is
// gone sends nothing more. The lock's name is the code the worker refuses
// its extension with; the marker query is the next command it sees.
func TestExtensionRefusedGivesBackAHeldLease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	a := leaseAnswers(60, 0)
	a[topics.OpExtend] = answerWith(func(cmd topics.Command) topics.Event { return rejectedEvent(cmd, cmd.LockName) })
	c := fakeWorker(t, a.by(&seen))
	for code, givenBack := range map[string]bool{
		topics.CodeRequestIDConflict:  true,
		topics.CodeInvalidRequest:     true,
		topics.CodeForbidden:          true,
		topics.CodeUnsupportedVersion: true,
		topics.CodeNotOwner:           false,
		topics.CodeNotHeld:            false,
		topics.CodeTokenMismatch:      false,
		topics.CodeSessionBound:       false, // another process's session holds it, same token
	} {
		t.Run(code, func(t *testing.T) {
			l, err := c.Acquire(ctx, code, WithoutKeepAlive())
			require.NoError(t, err)
			start := seen.len()
			require.ErrorIs(t, l.Extend(ctx, time.Minute), codeErrors[code])
			require.ErrorIs(t, l.Err(), ErrLeaseLost)
			if !givenBack {
				// What gives a lost lease back later (an extension of its
				// keep-alive answered or cut short after the refusal)
				// sends nothing for a lease the worker said gone.
				l.giveBack()
			}
			_, err = c.Query(ctx, "marker")
			require.NoError(t, err)
			want := []string{topics.OpExtend, topics.OpQuery}
			if givenBack {
				want = []string{topics.OpExtend, topics.OpRelease, topics.OpQuery}
				seen.mu.Lock()
				release := seen.cmds[start+1]
				seen.mu.Unlock()
				require.NotNil(t, release.FencingToken)
				require.Equal(t, l.Token, *release.FencingToken)
				require.Equal(t, l.Owner, release.OwnerID)
			}
			require.Equal(t, want, seen.since(start))
		})
	}
}
