package worker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// stallGate holds the writes of the partitions this replica owned before
// its process stalled (a long GC pause, SIGSTOP, a paused VM or container)
// for long enough that its group may have given them to another member,
// until the group coordinator says this member has them. A replica dropped
// that way goes on, once awake, until its Kafka client learns it: at its
// next heartbeat, or at an offset commit refused, after which the client
// joins again as a new member and revokes only what the new assignment
// does not give back. Meanwhile its appliers, expiry schedulers, cleanup
// and relays would write and publish beside the partitions' new owners,
// and a lock's records could land out of order (docs/design.md,
// "Exactly-once effect"). Held, they write nothing.
//
// A stall is seen by a watchdog that ticks every threshold/4 and by every
// writer before it writes (a writer may run before the watchdog once the
// process resumes): the time since the last tick, by the monotonic clock
// or the wall clock, whichever says more (a paused VM's monotonic clock
// may not count the pause), past threshold, half the session timeout: the
// group drops a member whose heartbeats stopped for a whole one. Under
// the classic protocol the watchdog also counts as a stall a coordinator
// silent for threshold (heardFrom) while the replica has partitions: a
// replica cut off from the coordinator alone is dropped as one stalled
// is, while its client waits out a heartbeat's read timeout before it
// lets them go. (Under the consumer protocol the brokers set the heartbeat
// interval, 5 s by default, which may be past threshold: not watched.)
//
// After a stall the gate asks the coordinator which partitions of the
// commands topic the client's member (whatever its ID now) is assigned:
// at once, then 100 ms doubling to 1 s apart. A held partition the answer
// lists writes again; one it does not waits until the client lets it go
// (revoked or lost), which ends its writers' waits. The stall is over once
// every partition assigned before it is listed or let go. A coordinator
// that cannot be asked for bound (twice the session timeout and a
// request's read timeout) releases the partitions, logged, as long as it
// answered the member's heartbeats since the stall (or they are not
// watched): holding them for good would stop a member the group still has
// (an ACL without DESCRIBE on the group, say). A coordinator silent since
// the stall may have dropped the member while its client, in a join or
// sync that waits out the rebalance timeout, has not learned it: held
// until it answers or the client lets the partitions go.
type stallGate struct {
	threshold, bound time.Duration
	log              zerolog.Logger
	// member is the client's group member ID now ("": not in the group).
	member func() string
	// describe asks the coordinator about member (groupMember).
	describe func(ctx context.Context, member string) (membership, error)
	// waiting lists the partitions running that were assigned before
	// stall epoch.
	waiting func(epoch uint64) []int32
	// heard says when the coordinator last answered the member (nil:
	// not watched); its silence counts from quietFrom (time.Since(base))
	// at the earliest: the last stall, or the last look that found no
	// partitions to hold. Silence opens a stall only where watchSilence
	// (the classic protocol).
	heard        *heardFrom
	watchSilence bool
	quietFrom    atomic.Int64

	base     time.Time    // the monotonic clock's origin
	lastMono atomic.Int64 // time.Since(base) at the last tick
	lastWall atomic.Int64 // the wall clock at the last tick, unix ns

	mu sync.Mutex
	// ctx is run's: the confirmations end with it (nil or done: no stall
	// is opened, and nothing is held).
	ctx context.Context
	// epoch counts the stalls seen; a partition holds the epoch it was
	// assigned in, and waits only for later ones.
	epoch uint64
	// pending says the latest stall is not over; captured is the member
	// ID when it was seen; owned are the partitions the coordinator listed
	// since as member ownedBy's (they only grow for one member: under
	// cooperative rebalancing a partition leaves a member only once it
	// revoked it). changed is closed when any of them changes.
	pending bool
	// active mirrors pending for the writers' quick look, set before the
	// tick that opens a stall, so that a writer who sees that tick sees it.
	active   atomic.Bool
	captured string
	ownedBy  string
	owned    map[int32]bool
	changed  chan struct{}
}

// membership is what the coordinator says of a member.
type membership struct {
	has bool // the group has the member
	// known says parts are the member's partitions of the commands topic
	// as the coordinator has them now (under the consumer protocol
	// always; under the classic one once the group is Stable: during a
	// rebalance it describes members without their assignment).
	known bool
	parts []int32
	// unique says member IDs are never used again (the classic protocol:
	// the coordinator names each join anew, a static member's too), so a
	// member the group has was never dropped, and has every partition it
	// had. Under the consumer protocol the client may keep its ID when it
	// joins again (after an epoch fence).
	unique bool
}

// newStallGate returns a gate for a member whose session timeout is
// session and whose client gives up on a request unanswered after
// readTimeout; nil (no gate) where no session timeout is known. heard, if
// not nil, is the client's hook that sees the coordinator's answers;
// watchSilence says its silence opens a stall too.
func newStallGate(session, readTimeout time.Duration, heard *heardFrom, watchSilence bool, log zerolog.Logger, member func() string,
	describe func(ctx context.Context, member string) (membership, error), waiting func(epoch uint64) []int32) *stallGate {
	if session <= 0 {
		return nil
	}
	g := &stallGate{threshold: session / 2, bound: 2*session + readTimeout, log: log, member: member, describe: describe,
		waiting: waiting, heard: heard, watchSilence: watchSilence && heard != nil, base: time.Now(), changed: make(chan struct{})}
	g.lastWall.Store(g.base.UnixNano())
	return g
}

// run ticks until ctx ends, seeing stalls (check); then it holds nothing.
// ctx must outlive the partitions' writers (Run ends it after stopAll).
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
			g.mu.Lock()
			g.end()
			g.mu.Unlock()
			return
		case <-t.C:
			g.check()
			g.checkSilence(time.Now())
			g.tick(time.Now())
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

// check opens a stall when the last tick was more than threshold ago: the
// process stalled (while run runs). Only the watchdog ticks otherwise, so
// the writers' look is a read of the clock.
func (g *stallGate) check() {
	now := time.Now()
	if g.since(now) <= g.threshold {
		return // the watchdog ticks
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	stalled := g.since(now) // again: another caller may have seen it first
	open := stalled > g.threshold && g.ctx != nil && g.ctx.Err() == nil
	if open {
		g.active.Store(true)
	}
	g.tick(now)
	if open {
		g.open(now, stalled, "this process stalled past half its group session timeout: the group may have given its partitions to others, so they write nothing until the group coordinator says this member has them")
	}
}

// checkSilence opens a stall when the coordinator has not answered the
// member for more than threshold while it has partitions (the watchdog's
// look: a process that runs sees it in time, and the writers' look stays
// a read of the clock). The group drops a member it has not heard from for
// its session timeout; the client, its heartbeat unanswered, lets the
// partitions go only once the read times out.
func (g *stallGate) checkSilence(now time.Time) {
	if !g.watchSilence {
		return
	}
	if len(g.waiting(math.MaxUint64)) == 0 {
		g.quietFrom.Store(int64(now.Sub(g.base))) // nothing to hold: its silence is not counted
		return
	}
	silent := min(g.heard.since(now), now.Sub(g.base)-time.Duration(g.quietFrom.Load()))
	if silent <= g.threshold {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pending || g.ctx == nil || g.ctx.Err() != nil {
		return // a stall not over asks already
	}
	g.active.Store(true)
	g.open(now, silent, "heard nothing from the group coordinator for over half the group session timeout (cut off from it, or a rebalance waiting for another member): the group may have given this member's partitions to others, so they write nothing until the coordinator says this member has them")
}

// open begins a stall seen at now, after stalled; g.mu held, active set.
// The coordinator's silence counts from now: a stall's wait for its
// answer is not seen again as silence.
func (g *stallGate) open(now time.Time, stalled time.Duration, msg string) {
	g.quietFrom.Store(int64(now.Sub(g.base)))
	g.epoch++
	g.pending, g.captured, g.ownedBy, g.owned = true, g.member(), "", nil
	g.signal()
	g.log.Warn().Dur("stalled_for", stalled).Dur("threshold", g.threshold).Msg(msg)
	go g.confirm(g.ctx, g.epoch, stalled)
}

// signal wakes the writers waiting; g.mu held.
func (g *stallGate) signal() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// end ends the stall, if any; g.mu held.
func (g *stallGate) end() {
	if g.pending {
		g.pending, g.captured, g.ownedBy, g.owned = false, "", "", nil
		g.active.Store(false)
		g.signal()
	}
}

// confirm asks the coordinator after stall epoch until the stall is
// over, or a later stall asks instead. It is over when the group has the
// member captured at the stall under a protocol that never uses an ID
// again (it was never dropped, and has all its partitions still); or when
// every partition assigned before the stall is listed as the client's
// member's now or was let go (not before the coordinator answered, or the
// client's member changed: an assignment's callback may be yet to run);
// or when no answer came for bound.
func (g *stallGate) confirm(ctx context.Context, epoch uint64, stalled time.Duration) {
	began := time.Now()
	g.mu.Lock()
	captured := g.captured
	g.mu.Unlock()
	var answered, dropped bool
	for attempt := 1; ; attempt++ {
		member := g.member()
		m, err := membership{}, errors.New("the client is joining the group")
		if member != "" {
			m, err = g.describe(ctx, member)
		}
		if ctx.Err() != nil {
			return
		}
		answered = answered || err == nil
		var why string
		switch {
		case err == nil && m.has && m.unique && member == captured:
			why = "the group coordinator still has this member as it was before the stall: its partitions write again"
		case err == nil && m.has && m.known:
			if !g.listed(epoch, member, m.parts) {
				return // a later stall asks
			}
		}
		if why == "" && (answered || member != captured) {
			g.mu.Lock()
			owned, ownedBy := g.owned, g.ownedBy
			g.mu.Unlock()
			if !slices.ContainsFunc(g.waiting(epoch), func(p int32) bool { return ownedBy != member || !owned[p] }) {
				why = "after the stall every partition assigned before it is listed as this member's or was let go: they write again"
			}
		}
		if why == "" && !answered && time.Since(began) >= g.bound && g.heardSince(began) {
			g.log.Error().Err(err).Dur("stalled_for", stalled).Dur("held_for", time.Since(began)).
				Msg("after the stall the group coordinator could not be asked which partitions this member has: going on without its answer, as a member the group had dropped would have been told so by now (the coordinator answers its heartbeats, or they are not watched)")
			why = "-"
		}
		if why != "" {
			g.mu.Lock()
			if g.epoch == epoch {
				if why != "-" {
					g.log.Info().Dur("stalled_for", stalled).Dur("held_for", time.Since(began)).Str("member_id", member).Msg(why)
				}
				g.end()
			}
			g.mu.Unlock()
			return
		}
		switch {
		case err == nil && !m.has && member == captured && !dropped:
			dropped = true
			g.log.Warn().Str("member_id", member).
				Msg("the group dropped this member during the stall: its partitions write nothing until its Kafka client lets them go, at its next heartbeat")
		case err != nil && attempt == 1:
			g.log.Warn().Err(err).Msg("after the stall, asking the group coordinator which partitions this member has failed: retrying; its partitions write nothing meanwhile")
		}
		if !sleepCtx(ctx, expiryRetryIn(attempt)) {
			return
		}
		g.mu.Lock()
		later := g.epoch != epoch
		g.mu.Unlock()
		if later {
			return
		}
	}
}

// heardSince says whether the coordinator answered the member's
// heartbeats after t and lately (within half the bound: a heartbeat
// interval the brokers set under the consumer protocol is 5 s by default),
// or they are not watched: an answer before a cut does not say the
// coordinator answers now.
func (g *stallGate) heardSince(t time.Time) bool {
	return g.heard == nil || g.heard.since(time.Now()) < min(time.Since(t), g.bound/2)
}

// listed records parts as member's, for stall epoch, and wakes the
// writers they free; false when a later stall began.
func (g *stallGate) listed(epoch uint64, member string, parts []int32) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.epoch != epoch {
		return false
	}
	if g.ownedBy != member {
		g.ownedBy, g.owned = member, map[int32]bool{}
	}
	for _, p := range parts {
		g.owned[p] = true
	}
	g.signal()
	return true
}

// hold waits while partition id, assigned in epoch, is held by a stall
// (stallGate). It reports false when ctx ended first, or done closed (the
// partition let go); true at once without a stall. A nil gate holds
// nothing.
func (g *stallGate) hold(ctx context.Context, done <-chan struct{}, id int32, epoch uint64) bool {
	if g == nil {
		return true
	}
	for {
		changed, held := g.holds(id, epoch)
		if !held {
			return true
		}
		select {
		case <-changed:
		case <-done:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// holds checks for a stall, and says whether partition id, assigned in
// epoch, is held now, and the channel closed when that may change.
func (g *stallGate) holds(id int32, epoch uint64) (changed <-chan struct{}, held bool) {
	if !g.stalled() {
		return nil, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.changed, g.pending && epoch < g.epoch && !g.owned[id]
}

// stalled checks for a stall and says whether one is not over: the
// writers' quick look, without the gate's lock (nil gate: never).
func (g *stallGate) stalled() bool {
	if g == nil {
		return false
	}
	g.check()
	return g.active.Load()
}

// stalling says whether a stall is not over, and the channel closed when
// that may change.
func (g *stallGate) stalling() (changed <-chan struct{}, pending bool) {
	if g == nil {
		return nil, false
	}
	g.check()
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.changed, g.pending
}

// current is the epoch of a partition assigned now: the stalls seen, less
// one while a stall is not over, for the assignment may have been made
// before it (its callback waits for the poll loop): such a partition waits
// for the coordinator's answer too.
func (g *stallGate) current() uint64 {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pending {
		return g.epoch - 1
	}
	return g.epoch
}

// heardFrom is a kgo hook that records when the group coordinator last
// answered the member: a heartbeat's answer read, whatever its error code
// (the coordinator heard the member), or a join's or sync's.
type heardFrom struct {
	base time.Time
	last atomic.Int64 // time.Since(base) at the last answer
}

func newHeardFrom() *heardFrom { return &heardFrom{base: time.Now()} }

// OnBrokerRead implements kgo.HookBrokerRead.
func (h *heardFrom) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err != nil {
		return
	}
	switch kmsg.Key(key) {
	case kmsg.Heartbeat, kmsg.ConsumerGroupHeartbeat, kmsg.JoinGroup, kmsg.SyncGroup:
		h.answered(time.Now())
	}
}

// answered records an answer at now.
func (h *heardFrom) answered(now time.Time) {
	h.last.Store(int64(now.Sub(h.base)))
}

// since is how long before now the last answer was.
func (h *heardFrom) since(now time.Time) time.Duration {
	return now.Sub(h.base) - time.Duration(h.last.Load())
}

// errStalled is the error of a transaction that found its partition held
// by a stall as it began (its attempt, maybe a retry of the store's, came
// after the stall): the caller holds it (partition.hold) and tries again.
var errStalled = errors.New("the process stalled: the partition's writes wait for the group coordinator")

// sessionOf is the session timeout the group applies to cl's member: the
// client's own under the classic protocol; under the consumer protocol
// (KIP-848) the group's, which lockworker sets to the same where the
// brokers allow it, and is the brokers' default, 45 s, at most, where they
// did not.
func sessionOf(cl *kgo.Client) time.Duration {
	session, _ := cl.OptValue(kgo.SessionTimeout).(time.Duration)
	if serverSide, _ := cl.OptValue(kgo.ServerSideBalancer).(bool); serverSide {
		session = min(session, 45*time.Second)
	}
	return session
}

// groupMember asks the coordinator about member of group, and its
// partitions of topic: with the consumer protocol (KIP-848) through
// ConsumerGroupDescribe, its current assignment; with the classic one, or
// where ConsumerGroupDescribe fails (brokers that do not speak it, to
// which the client falls back), through DescribeGroups, whose answer then
// only confirms: a consumer-protocol group described so may list no
// members.
func groupMember(ctx context.Context, cl *kgo.Client, group, topic, member string) (membership, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	serverSide, _ := cl.OptValue(kgo.ServerSideBalancer).(bool)
	var consumerErr error
	if serverSide {
		m, err := consumerGroupMember(ctx, cl, group, topic, member)
		if err == nil {
			return m, nil
		}
		consumerErr = fmt.Errorf("describing consumer group %q: %w", group, err)
	}
	described, err := adm.DescribeGroups(ctx, group)
	d, found := described[group]
	switch {
	case err != nil:
	case !found:
		err = errors.New("no answer for it")
	case d.Err != nil:
		err = d.Err
	case d.State == "Dead":
		// A group the coordinator does not know as classic (or at all):
		// no answer about the member.
		err = errors.New("the group is described as Dead")
	default:
		i := slices.IndexFunc(d.Members, func(m kadm.DescribedGroupMember) bool { return m.MemberID == member })
		if i < 0 {
			if serverSide {
				return membership{}, errors.Join(consumerErr, fmt.Errorf("group %q as DescribeGroups describes it has no member %q", group, member))
			}
			return membership{unique: true}, nil
		}
		m := membership{has: true, unique: true, known: d.State == "Stable"}
		if a, ok := d.Members[i].Assigned.AsConsumer(); ok {
			for _, t := range a.Topics {
				if t.Topic == topic {
					m.parts = append(m.parts, t.Partitions...)
				}
			}
		}
		return m, nil
	}
	return membership{}, errors.Join(consumerErr, fmt.Errorf("describing group %q: %w", group, err))
}

// consumerGroupMember is groupMember under the consumer protocol. The
// assignment names its topics by ID (Apache Kafka gives the name too, some
// brokers only the ID), so the topic's ID is asked for first.
func consumerGroupMember(ctx context.Context, cl *kgo.Client, group, topic, member string) (membership, error) {
	id, _, err := describeTopic(ctx, cl, topic)
	if err != nil {
		return membership{}, fmt.Errorf("reading the ID of %s: %w", topic, err)
	}
	req := kmsg.NewPtrConsumerGroupDescribeRequest()
	req.Groups = []string{group}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return membership{}, err
	}
	i := slices.IndexFunc(resp.Groups, func(g kmsg.ConsumerGroupDescribeResponseGroup) bool { return g.Group == group })
	if i < 0 {
		return membership{}, errors.New("no answer for it")
	}
	g := resp.Groups[i]
	if err := kerr.ErrorForCode(g.ErrorCode); err != nil {
		return membership{}, err
	}
	j := slices.IndexFunc(g.Members, func(m kmsg.ConsumerGroupDescribeResponseGroupMember) bool { return m.MemberID == member })
	if j < 0 {
		return membership{}, nil
	}
	m := membership{has: true, known: true}
	for _, tp := range g.Members[j].Assignment.TopicPartitions {
		if tp.Topic == topic || id != "" && kadm.TopicID(tp.TopicID).String() == id {
			m.parts = append(m.parts, tp.Partitions...)
		}
	}
	return m, nil
}
