package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// stallGate holds the writes of the partitions this replica owned before
// its process stalled (a long GC pause, SIGSTOP, a paused VM or container)
// for long enough that its group may have dropped it, until the group says
// whether it did. A replica dropped that way goes on, once awake, until its
// Kafka client learns it at its next heartbeat: meanwhile its appliers,
// expiry schedulers and relays would write and publish beside the
// partitions' new owners, and a lock's records could land out of order
// (docs/design.md, "Exactly-once effect"). Held, they write nothing: when
// the group still has the member they go on after one round trip; when it
// dropped it they wait until the client lets the partitions go.
//
// A stall is seen by a watchdog that ticks every threshold/4 and by every
// writer before it writes (a writer may run before the watchdog once the
// process resumes): the time since the last tick, by the monotonic clock
// or the wall clock, whichever says more (a paused VM's monotonic clock
// may not count the pause), past threshold, half the session timeout: the
// group drops a member whose heartbeats stopped for a whole one. A writer
// that was already past its check when the process stopped is not held: a
// transaction it had open is ended by PostgreSQL's
// idle_in_transaction_session_timeout (5 s, below the 6 s session
// timeout), and a publish in flight was sent before the stall.
type stallGate struct {
	threshold time.Duration
	log       zerolog.Logger
	// member is the client's group member ID now ("": not in the group).
	member func() string
	// isMember says whether the group has the member, asking the
	// coordinator.
	isMember func(ctx context.Context, member string) (bool, error)

	base     time.Time    // the monotonic clock's origin
	lastMono atomic.Int64 // time.Since(base) at the last tick
	lastWall atomic.Int64 // the wall clock at the last tick, unix ns

	mu sync.Mutex
	// ctx is run's: the confirmations end with it (nil: run has not
	// started, and nothing is held).
	ctx context.Context
	// epoch counts the stalls seen; a partition holds the epoch of its
	// assignment, and waits only for the confirmation of a later stall.
	epoch uint64
	// cleared is closed once the group confirmed the member after the
	// latest stall (nil: confirmed, or none).
	cleared chan struct{}
}

// newStallGate returns a gate for a member whose session timeout is
// session; nil (no gate) where none is known.
func newStallGate(session time.Duration, log zerolog.Logger, member func() string,
	isMember func(ctx context.Context, member string) (bool, error)) *stallGate {
	if session <= 0 {
		return nil
	}
	g := &stallGate{threshold: session / 2, log: log, member: member, isMember: isMember, base: time.Now()}
	g.lastWall.Store(g.base.UnixNano())
	return g
}

// run ticks until ctx ends, seeing stalls (check).
func (g *stallGate) run(ctx context.Context) {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.ctx = ctx
	g.mu.Unlock()
	g.tick(time.Now())
	t := time.NewTicker(g.threshold / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.check()
		}
	}
}

// since is how long ago the last tick was at now, by the clock that says
// more.
func (g *stallGate) since(now time.Time) time.Duration {
	mono := now.Sub(g.base) - time.Duration(g.lastMono.Load())
	wall := time.Duration(now.UnixNano() - g.lastWall.Load())
	return max(mono, wall)
}

// tick records now as the last tick.
func (g *stallGate) tick(now time.Time) {
	g.lastMono.Store(int64(now.Sub(g.base)))
	g.lastWall.Store(now.UnixNano())
}

// check ticks, and starts a confirmation when the last tick was more than
// threshold ago: the process stalled (once run has started).
func (g *stallGate) check() {
	now := time.Now()
	if g.since(now) <= g.threshold {
		g.tick(now)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	stalled := g.since(now) // again: another caller may have seen it first
	g.tick(now)
	if stalled <= g.threshold || g.ctx == nil {
		return
	}
	g.epoch++
	if g.cleared != nil {
		close(g.cleared) // the earlier stall's waiters look again, at this one
	}
	cleared := make(chan struct{})
	g.cleared = cleared
	member := g.member()
	g.log.Warn().Dur("stalled_for", stalled).Dur("threshold", g.threshold).
		Msg("this process stalled past half its group session timeout: the group may have dropped it, so its partitions write nothing until the group says it did not")
	go g.confirm(g.ctx, cleared, member, stalled)
}

// confirm asks the group until it has member (or the client has joined
// again as another member: the partitions of the first were let go
// before, as lost), then lets the writers held for the stall go. A group
// without it is asked again each second: the client learns of it at its
// next heartbeat and lets the partitions go, which ends their writers'
// waits.
func (g *stallGate) confirm(ctx context.Context, cleared chan struct{}, member string, stalled time.Duration) {
	began := time.Now()
	dropped := false
	for attempt := 1; ; attempt++ {
		if g.superseded(cleared) {
			return // a later stall confirms again
		}
		ok := member == "" || g.member() != member
		var err error
		if !ok {
			ok, err = g.isMember(ctx, member)
		}
		if ctx.Err() != nil {
			return
		}
		switch {
		case ok:
			g.mu.Lock()
			defer g.mu.Unlock()
			if g.cleared == cleared { // else closed by a later stall, which confirms again
				g.log.Info().Dur("stalled_for", stalled).Dur("held_for", time.Since(began)).
					Msg("after the stall the group still has this replica as it was, or it joined again: its partitions write again")
				g.cleared = nil
				close(cleared)
			}
			return
		case err != nil && attempt == 1:
			g.log.Warn().Err(err).Msg("after the stall, asking the group whether it still has this replica failed: retrying; its partitions write nothing meanwhile")
		case err == nil && !dropped:
			dropped = true
			g.log.Warn().Str("member_id", member).
				Msg("the group dropped this replica during the stall: its partitions write nothing until its Kafka client lets them go, at its next heartbeat")
		}
		if !sleepCtx(ctx, expiryRetryIn(attempt)) {
			return
		}
	}
}

// superseded says whether a later stall replaced the one cleared is of.
func (g *stallGate) superseded(cleared chan struct{}) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cleared != cleared
}

// hold waits while the process stalled after epoch (a partition's
// assignment) and the group has not confirmed the member since. It
// reports false when ctx ended first, or done closed (the partition let
// go); true at once without a stall. A nil gate holds nothing.
func (g *stallGate) hold(ctx context.Context, done <-chan struct{}, epoch uint64) bool {
	if g == nil {
		return true
	}
	for {
		g.check()
		g.mu.Lock()
		cleared, current := g.cleared, g.epoch
		g.mu.Unlock()
		if cleared == nil || epoch == current {
			return true
		}
		select {
		case <-cleared: // confirmed, or a later stall: look again
		case <-done:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// current is the number of stalls seen: a partition assigned now is held
// only for later ones.
func (g *stallGate) current() uint64 {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.epoch
}

// groupHas says whether the group has member, asking its coordinator: with
// the consumer protocol (KIP-848) through ConsumerGroupDescribe, and where
// that fails (brokers that do not speak it, to which the client falls
// back) through DescribeGroups.
func groupHas(ctx context.Context, cl *kgo.Client, group string, member string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	var consumerErr error
	if serverSide, _ := cl.OptValue(kgo.ServerSideBalancer).(bool); serverSide {
		described, err := adm.DescribeConsumerGroups(ctx, group)
		d, found := described[group]
		switch {
		case err != nil:
			consumerErr = err
		case !found:
			consumerErr = errors.New("no answer for it")
		case d.Err != nil:
			consumerErr = d.Err
		default:
			return slices.ContainsFunc(d.Members, func(m kadm.ConsumerGroupMember) bool { return m.MemberID == member }), nil
		}
		consumerErr = fmt.Errorf("describing consumer group %q: %w", group, consumerErr)
	}
	described, err := adm.DescribeGroups(ctx, group)
	d, found := described[group]
	switch {
	case err != nil:
	case !found:
		err = errors.New("no answer for it")
	case d.Err != nil:
		err = d.Err
	default:
		return slices.ContainsFunc(d.Members, func(m kadm.DescribedGroupMember) bool { return m.MemberID == member }), nil
	}
	return false, errors.Join(consumerErr, fmt.Errorf("describing group %q: %w", group, err))
}
