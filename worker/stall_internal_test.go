package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/outbox"
)

// asked is one question a stallGate put to the group coordinator,
// answered on reply.
type asked struct {
	member string
	reply  chan answer
}

type answer struct {
	m   membership
	err error
}

// listing is the answer of a coordinator that lists parts as the member's
// (the consumer protocol: member IDs used again, assignments known).
func listing(parts ...int32) answer {
	return answer{m: membership{has: true, known: true, parts: parts}}
}

// gateTest is a running gate whose coordinator questions arrive on
// questions, whose member is member and whose partitions assigned before a
// stall are waiting.
type gateTest struct {
	g         *stallGate
	questions chan asked
	member    atomic.Pointer[string]
	waiting   atomic.Pointer[[]int32]
	logs      testlog.Buffer
}

func newGateTest(t *testing.T, waiting func(uint64) []int32) *gateTest {
	t.Helper()
	return newGateTestHearing(t, waiting, nil)
}

// newGateTestHearing is newGateTest with a gate that watches the
// coordinator's answers through heard.
func newGateTestHearing(t *testing.T, waiting func(uint64) []int32, heard *heardFrom) *gateTest {
	t.Helper()
	gt := &gateTest{questions: make(chan asked)}
	m := "member-1"
	gt.member.Store(&m)
	gt.waiting.Store(&[]int32{})
	if waiting == nil {
		waiting = func(uint64) []int32 { return *gt.waiting.Load() }
	}
	gt.g = newStallGate(20*time.Second, 0, heard, true, zerolog.New(&gt.logs), func() string { return *gt.member.Load() },
		func(ctx context.Context, m string) (membership, error) {
			q := asked{member: m, reply: make(chan answer, 1)}
			select {
			case gt.questions <- q:
			case <-ctx.Done():
				return membership{}, ctx.Err()
			}
			a := <-q.reply
			return a.m, a.err
		}, waiting)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); gt.g.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { gt.g.mu.Lock(); defer gt.g.mu.Unlock(); return gt.g.ctx != nil }, 10*time.Second, time.Millisecond)
	return gt
}

// pretendStalled moves the gate's last tick an hour back, on both clocks,
// as a process stopped for an hour finds it.
func pretendStalled(g *stallGate) {
	g.lastMono.Add(-int64(time.Hour))
	g.lastWall.Add(-int64(time.Hour))
}

// holding starts hold for partition id of epoch in a goroutine: its
// result arrives on the channel.
func holding(g *stallGate, done <-chan struct{}, id int32, epoch uint64) <-chan bool {
	out := make(chan bool, 1)
	go func() { out <- g.hold(context.Background(), done, id, epoch) }()
	return out
}

// answerUntilReleased answers the gate's questions with reply() until
// held says the writer it holds was released.
func (gt *gateTest) answerUntilReleased(t *testing.T, held <-chan bool, reply func() answer) {
	t.Helper()
	for {
		select {
		case q := <-gt.questions:
			q.reply <- reply()
		case ok := <-held:
			require.True(t, ok)
			return
		}
	}
}

func requireHeld(t *testing.T, held <-chan bool, why string) {
	t.Helper()
	select {
	case <-held:
		t.Fatal(why)
	default:
	}
}

// After a stall the partitions assigned before it write nothing until the
// group coordinator lists them as the member's (nor one assigned while it
// is asked, which may have been assigned before the stall); while it
// cannot be asked, or does not list one, that one stays held until it is
// let go; the stall is over once every partition assigned before it is
// listed or let go.
func TestStallHoldsUntilTheCoordinatorListsThePartition(t *testing.T) {
	gt := newGateTest(t, nil)
	g := gt.g
	before := g.current()
	require.True(t, g.hold(context.Background(), nil, 0, before), "no stall: nothing held")
	gt.waiting.Store(&[]int32{0, 1})

	pretendStalled(g)
	held0 := holding(g, nil, 0, before)
	q := <-gt.questions // the writer saw the stall, and the gate asks
	require.Equal(t, "member-1", q.member)
	requireHeld(t, held0, "a writer went on before the coordinator answered")
	during := g.current()
	require.Less(t, during, g.epoch, "a partition assigned while the gate asks waits for the answer too")
	held2 := holding(g, nil, 2, during)
	letGo := make(chan struct{})
	close(letGo)
	require.False(t, g.hold(context.Background(), letGo, 1, before), "a partition let go stops waiting")

	q.reply <- answer{err: errors.New("coordinator not available")}
	q = <-gt.questions
	q.reply <- listing(0, 2)
	require.True(t, <-held0, "partition 0 is listed")
	require.True(t, <-held2, "partition 2 is listed")
	held1 := holding(g, nil, 1, before)
	q = <-gt.questions // partition 1 is not listed: the gate asks again
	requireHeld(t, held1, "a partition the coordinator does not list wrote")
	gt.waiting.Store(&[]int32{0}) // partition 1 let go
	q.reply <- listing(0)
	require.True(t, <-held1, "the stall is over")
	require.True(t, g.hold(context.Background(), nil, 1, before), "over: nothing held")
	require.Equal(t, g.epoch, g.current())
	require.Contains(t, gt.logs.String(), "this process stalled past half its group session timeout")
	require.Contains(t, gt.logs.String(), "they write again")
}

// A member the group dropped (its client not told yet) writes nothing
// until its client lets the partitions go; the stall is then over.
func TestStallHoldsADroppedMember(t *testing.T) {
	gt := newGateTest(t, nil)
	g := gt.g
	before := g.current()
	gt.waiting.Store(&[]int32{0})
	pretendStalled(g)
	held := holding(g, nil, 0, before)
	q := <-gt.questions
	q.reply <- answer{}
	q = <-gt.questions
	requireHeld(t, held, "a dropped member wrote")
	require.Contains(t, gt.logs.String(), "the group dropped this member during the stall")
	again := "member-2" // the client joined again, its old partitions let go
	gt.member.Store(&again)
	gt.waiting.Store(&[]int32{})
	q.reply <- answer{}
	require.True(t, <-held)
	require.Contains(t, gt.logs.String(), "was let go")
}

// A coordinator that cannot be asked for the bound releases the
// partitions, logged: a member the group had dropped would have been told
// so by its client by then.
func TestStallGoesOnAfterTheBound(t *testing.T) {
	gt := newGateTest(t, nil)
	g := gt.g
	g.bound = 200 * time.Millisecond
	before := g.current()
	gt.waiting.Store(&[]int32{0})
	pretendStalled(g)
	held := holding(g, nil, 0, before)
	gt.answerUntilReleased(t, held, func() answer { return answer{err: errors.New("GROUP_AUTHORIZATION_FAILED")} })
	require.Contains(t, gt.logs.String(), "could not be asked which partitions this member has")

	// An answer that the group has no such member is an answer: past the
	// bound, the partitions stay held until the client lets them go.
	before = g.current()
	pretendStalled(g)
	held = holding(g, nil, 0, before)
	q := <-gt.questions
	q.reply <- answer{}
	deadline := time.Now().Add(g.bound)
	for time.Now().Before(deadline.Add(g.bound)) {
		q = <-gt.questions
		q.reply <- answer{}
	}
	requireHeld(t, held, "a dropped member's partition was released at the bound")
	gt.waiting.Store(&[]int32{}) // the client let it go
	gt.answerUntilReleased(t, held, func() answer { return answer{} })
}

// A stall seen on the wall clock alone (a paused VM whose monotonic clock
// did not count the pause) holds as well.
func TestStallSeenOnTheWallClock(t *testing.T) {
	gt := newGateTest(t, nil)
	g := gt.g
	before := g.current()
	gt.waiting.Store(&[]int32{0})
	g.lastWall.Add(-int64(time.Hour))
	held := holding(g, nil, 0, before)
	q := <-gt.questions
	q.reply <- listing(0)
	require.True(t, <-held)
}

// groupMember asks a real coordinator (kfake): the member a client joined
// as is in the group with the topic's partitions, another member is not;
// with the classic protocol (member IDs never used again; the assignment
// known once the group is Stable) and with the consumer protocol (KIP-848:
// the current assignment, its topic matched by ID where the broker gives
// no name).
func TestGroupMemberAsksTheCoordinator(t *testing.T) {
	for _, consumer := range []bool{false, true} {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "commands"))
		require.NoError(t, err)
		t.Cleanup(c.Close)
		assigned := make(chan struct{}, 1)
		opts := []kgo.Opt{kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
			select {
			case assigned <- struct{}{}:
			default:
			}
		})}
		if consumer {
			opts = append(opts, kgo.ServerSideBalancer())
		}
		cl, ctx := pollingMember(t, c, opts...)
		select {
		case <-assigned:
		case <-ctx.Done():
			t.Fatalf("consumer %v: never assigned", consumer)
		}
		member, _ := cl.GroupMetadata()
		require.NotEmpty(t, member)
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			m, err := groupMember(ctx, cl, "g", "commands", member)
			require.NoError(c, err, "consumer protocol %v", consumer)
			require.True(c, m.has, "consumer protocol %v", consumer)
			require.True(c, m.known, "consumer protocol %v", consumer)
			require.Equal(c, !consumer, m.unique)
			require.ElementsMatch(c, []int32{0, 1}, m.parts, "consumer protocol %v", consumer)
		}, 10*time.Second, 50*time.Millisecond)
		m, err := groupMember(ctx, cl, "g", "commands", "someone-else")
		require.NoError(t, err)
		require.False(t, m.has, "consumer protocol %v", consumer)
	}
}

// Under the classic protocol a member the group still has, under the ID it
// had at the stall, was never dropped: everything it holds writes again,
// also during a rebalance, when the coordinator describes no assignments.
func TestStallReleasesAMemberNeverDropped(t *testing.T) {
	gt := newGateTest(t, nil)
	g := gt.g
	before := g.current()
	gt.waiting.Store(&[]int32{0, 1})
	pretendStalled(g)
	held := holding(g, nil, 1, before)
	q := <-gt.questions
	q.reply <- answer{m: membership{has: true, unique: true}} // a rebalance: no assignment known
	require.True(t, <-held)
	require.Contains(t, gt.logs.String(), "still has this member as it was before the stall")
}

// A client that joined again as another member (a refused offset commit,
// under the classic protocol) writes only the partitions the coordinator
// lists as its new member's once the group is Stable; a rebalance's
// answer frees nothing.
func TestStallAfterJoiningAgainWaitsForTheListing(t *testing.T) {
	gt := newGateTest(t, nil)
	g := gt.g
	before := g.current()
	gt.waiting.Store(&[]int32{0, 1})
	pretendStalled(g)
	held0 := holding(g, nil, 0, before)
	q := <-gt.questions
	again := "member-2"
	gt.member.Store(&again)
	q.reply <- answer{m: membership{unique: true}} // member-1 is gone
	q = <-gt.questions
	require.Equal(t, "member-2", q.member)
	q.reply <- answer{m: membership{has: true, unique: true}} // rebalancing
	q = <-gt.questions
	requireHeld(t, held0, "a partition of the old member wrote before the new member's assignment was known")
	q.reply <- answer{m: membership{has: true, unique: true, known: true, parts: []int32{0}}}
	require.True(t, <-held0)
	q = <-gt.questions // partition 1 not listed: held until let go
	require.False(t, g.hold(context.Background(), closed(), 1, before))
	gt.waiting.Store(&[]int32{0})
	q.reply <- answer{m: membership{has: true, unique: true}}
	require.Eventually(t, func() bool { _, held := g.holds(1, before); return !held }, 10*time.Second, time.Millisecond)
}

// A stall that finds no partition assigned before it is not over before
// the coordinator answered: a partition whose assignment's callback runs
// only now (it waited for the poll loop) may be from before the stall.
func TestStallWithNothingHeldWaitsForAnAnswer(t *testing.T) {
	gt := newGateTest(t, nil)
	g := gt.g
	pretendStalled(g)
	_, pending := g.stalling()
	require.True(t, pending)
	late := g.current() // assigned now
	gt.waiting.Store(&[]int32{3})
	held := holding(g, nil, 3, late)
	q := <-gt.questions
	requireHeld(t, held, "a partition assigned during the stall wrote before the answer")
	q.reply <- listing(3)
	require.True(t, <-held)
}

// closed is a closed channel: a partition already let go.
func closed() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// The applier holds a batch of a partition assigned before a stall until
// the coordinator lists the partition as the member's: then it commits. A
// batch held for a partition it does not list is dropped when the
// partition is let go, nothing of it applied (its next owner applies it
// from the stored offset); and a partition of the same batch not held is
// released at its revoke, which does not wait for the held one.
func TestStallHoldsTheApplier(t *testing.T) {
	w, st := newApplier(t)
	gt := newGateTest(t, w.assignedBefore)
	w.stall = gt.g
	lockRows := func(lock string) (n int) {
		require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM locks WHERE lock_name = $1`, lock).Scan(&n))
		return n
	}

	p0 := own(w, 0)
	pretendStalled(gt.g)
	applied := make(chan struct{})
	go func() { defer close(applied); apply(w, seg(t, p0, 0, "listed")) }()
	q := <-gt.questions
	require.Zero(t, lockRows("listed"), "applied before the coordinator answered")
	q.reply <- listing(0)
	<-applied
	require.EqualValues(t, 1, acquisitions(t, st, "listed"))

	p1 := own(w, 1)
	own(w, 2)
	pretendStalled(gt.g)
	p3 := own(w, 3) // assigned while the gate asks: held as well
	applied = make(chan struct{})
	go func() { defer close(applied); apply(w, seg(t, p1, 0, "not-listed"), seg(t, p3, 0, "p3")) }()
	q = <-gt.questions
	q.reply <- listing(0, 2)
	q = <-gt.questions // partitions 1 and 3 are not listed: the gate asks again
	released := make(chan struct{})
	go func() { p3.revoke(); p3.pending.Wait(); close(released) }()
	select { // the revoke of partition 3 does not wait for partition 1's hold
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("the revoke of a partition not held waited for another partition's hold in its batch")
	}
	select {
	case <-applied:
		t.Fatal("the batch went on while partition 1 was held")
	default:
	}
	p1.revoke() // the client learned that partition 1 is another's
	<-applied
	require.Zero(t, lockRows("not-listed"), "a batch held for a partition not listed was applied")
	require.Zero(t, lockRows("p3"))
	q.reply <- listing(0, 2)
}

// The gate's end (Run's, after its partitions stopped) releases what it
// holds, and a gate that ended opens no stall: a drain's writers are never
// held by a gate nobody runs.
func TestStallEndsWithTheGate(t *testing.T) {
	asking := make(chan struct{}, 1)
	g := newStallGate(20*time.Second, 0, nil, false, zerolog.Nop(), func() string { return "member-1" },
		func(ctx context.Context, _ string) (membership, error) {
			select {
			case asking <- struct{}{}:
			default:
			}
			<-ctx.Done()
			return membership{}, ctx.Err()
		}, func(uint64) []int32 { return []int32{0} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.run(ctx) }()
	require.Eventually(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.ctx != nil }, 10*time.Second, time.Millisecond)
	before := g.current()
	pretendStalled(g)
	held := holding(g, nil, 0, before)
	<-asking
	requireHeld(t, held, "a writer went on before the coordinator answered")
	cancel()
	<-done
	require.True(t, <-held, "the gate's end released its writer")
	pretendStalled(g)
	require.True(t, g.hold(context.Background(), nil, 0, before), "a gate that ended opened a stall")
}

// A partition revoked while a stall is not over (and holds it) has its
// records queued dropped, not waited for: a batch ahead of them in their applier may be
// held, and the revoke, which holds up the group's rebalance, would wait
// for the very answer the hold waits for. Its next owner applies them from
// the stored offset.
func TestStallRevokeDropsWhatIsQueued(t *testing.T) {
	w, st := newApplier(t)
	gt := newGateTest(t, w.assignedBefore)
	w.stall = gt.g
	p1 := own(w, 1)
	pretendStalled(gt.g)
	q := <-gt.questions // a stall not over
	// A segment of partition 1 queued behind a batch that never comes
	// out of its hold (no applier runs here).
	p1.pending.Add(1)
	require.True(t, w.lanes[p1.lane].submit([]segment{seg(t, p1, 0, "queued")}))
	revoked := make(chan struct{})
	go func() {
		w.revoked(context.Background(), w.cl, map[string][]int32{w.cfg.Names.Commands: {1}})
		close(revoked)
	}()
	select {
	case <-revoked:
	case <-time.After(10 * time.Second):
		t.Fatal("the revoke waited for records queued behind a stall")
	}
	var n int
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM locks WHERE lock_name = 'queued'`).Scan(&n))
	require.Zero(t, n)
	// Revoked while held, it is another's already (a rejoin after a
	// refused commit revokes what the group gave away): its scheduler and
	// cleanup stop, and its relay was stopped at the revoke.
	require.True(t, p1.lost.Load())
	require.ErrorIs(t, p1.mayWrite(), errLetGo)
	require.ErrorIs(t, p1.hold(context.Background()), errLetGo)
	q.reply <- answer{}
}

// A partition stopped for a restart (another replica moved its offset:
// likely another's now) still counts among those assigned before a stall:
// the stall is not over until it is listed or let go.
func TestStallCountsAPartitionStoppedForARestart(t *testing.T) {
	w, _ := newApplier(t)
	p := own(w, 0)
	p.cancel() // as takenOver stops it, its restart to come
	require.Equal(t, []int32{0}, w.assignedBefore(p.stallEpoch+1))
}

// askedRelay is a Relay that counts the slots asked of it.
type askedRelay struct {
	nopRelay
	asked atomic.Int32
}

func (r *askedRelay) Reserve(int32) *outbox.Slot { r.asked.Add(1); return nil }

// While a stall holds a partition, a writer leaves its owner a mark
// rather than hand its rows to the relay here, which stops without
// publishing them if the partition turns out to be another's.
func TestStallLeavesMarksForHeldPartitions(t *testing.T) {
	w, _ := newApplier(t)
	relay := &askedRelay{}
	w.cfg.Relay = relay
	gt := newGateTest(t, w.assignedBefore)
	w.stall = gt.g
	own(w, 0)
	w.reserve([]outbox.Row{{Partition: 0}}, &pgx.Batch{})
	require.EqualValues(t, 1, relay.asked.Load(), "no stall: the relay is asked for a slot")
	pretendStalled(gt.g)
	q := <-gt.questions
	b := &pgx.Batch{}
	h := w.reserve([]outbox.Row{{Partition: 0}}, b)
	require.EqualValues(t, 1, relay.asked.Load(), "a slot was asked of a held partition's relay")
	require.Empty(t, h.slots)
	require.Equal(t, 1, b.Len(), "the mark is queued")
	q.reply <- listing(0)
}

// A coordinator silent for over the threshold while the replica has
// partitions counts as a stall (a replica cut off from it alone is dropped
// as a stalled one is); silence with no partitions does not, nor is a
// stall's own wait for an answer seen as silence, during it or after it.
func TestStallSeenInTheCoordinatorsSilence(t *testing.T) {
	heard := newHeardFrom()
	gt := newGateTestHearing(t, nil, heard)
	g := gt.g
	hourAgo := func() { heard.last.Store(-int64(time.Hour)) }
	epoch := g.current()
	hourAgo()
	g.checkSilence(time.Now())
	require.Equal(t, epoch, g.current(), "no partitions: nothing to hold")
	gt.waiting.Store(&[]int32{0})
	g.checkSilence(time.Now())
	require.Equal(t, epoch, g.current(), "silence while there was nothing to hold is not counted")

	g.quietFrom.Store(-int64(time.Hour))
	g.checkSilence(time.Now())
	held := holding(g, nil, 0, epoch)
	q := <-gt.questions
	requireHeld(t, held, "a partition wrote while the coordinator was silent")
	g.checkSilence(time.Now())
	require.Equal(t, epoch+1, g.epoch, "a stall not over is not opened again")
	q.reply <- listing(0)
	require.True(t, <-held)
	require.Eventually(t, func() bool { _, pending := g.stalling(); return !pending }, 10*time.Second, time.Millisecond)
	g.checkSilence(time.Now())
	require.Equal(t, epoch+1, g.epoch, "the wait for the answer was not silence")
	require.Contains(t, gt.logs.String(), "heard nothing from the group coordinator")
}

// A coordinator silent since the stall is never taken for one that cannot
// be asked: past the bound the partitions stay held (the client may be in
// a join that waits out the rebalance timeout, not told it was dropped);
// once it answers heartbeats again, the bound releases them.
func TestStallSilentCoordinatorHoldsPastTheBound(t *testing.T) {
	heard := newHeardFrom()
	gt := newGateTestHearing(t, nil, heard)
	g := gt.g
	g.bound = 200 * time.Millisecond
	before := g.current()
	gt.waiting.Store(&[]int32{0})
	heard.last.Store(-int64(time.Hour))
	g.quietFrom.Store(-int64(time.Hour))
	g.checkSilence(time.Now())
	held := holding(g, nil, 0, before)
	deadline := time.Now().Add(2 * g.bound)
	for time.Now().Before(deadline) {
		q := <-gt.questions
		q.reply <- answer{err: errors.New("coordinator not available")}
	}
	requireHeld(t, held, "released at the bound while the coordinator was silent")
	gt.answerUntilReleased(t, held, func() answer { // heartbeats answered: the describe alone fails
		heard.answered(time.Now())
		return answer{err: errors.New("GROUP_AUTHORIZATION_FAILED")}
	})
	require.Contains(t, gt.logs.String(), "could not be asked which partitions this member has")
}

// heardFrom hears a real coordinator's answers (kfake, the classic
// protocol, where it is watched), and hears nothing while the coordinator
// does not answer the member's heartbeats.
func TestHeardFromHearsTheCoordinator(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "commands"))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	heard := newHeardFrom()
	heard.last.Store(-int64(time.Hour))
	pollingMember(t, c, kgo.WithHooks(heard), kgo.HeartbeatInterval(50*time.Millisecond))
	require.Eventually(t, func() bool { return heard.since(time.Now()) < time.Minute }, 10*time.Second, 10*time.Millisecond,
		"the coordinator's answers not heard")
	require.Eventually(t, func() bool { return heard.since(time.Now()) < 200*time.Millisecond }, 10*time.Second, 10*time.Millisecond,
		"heartbeats 50 ms apart not heard")

	wake := make(chan struct{})
	c.ControlKey(int16(kmsg.Heartbeat), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { <-wake })
		return nil, nil, false
	})
	require.Eventually(t, func() bool { return heard.since(time.Now()) > time.Second }, 10*time.Second, 10*time.Millisecond,
		"heard while the coordinator did not answer")
	close(wake)
}

// pollingMember is a member of group "g" on c's topic "commands" (with
// opts), polling until the test ends or 30 s have passed: the context it
// returns.
func pollingMember(t *testing.T, c *kfake.Cluster, opts ...kgo.Opt) (*kgo.Client, context.Context) {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("commands")}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel) // before Close: the poll ends first
	go func() {
		for ctx.Err() == nil {
			cl.PollFetches(ctx)
		}
	}()
	return cl, ctx
}
