package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/testlog"
)

// asked is one question a stallGate put to the group, answered on reply.
type asked struct {
	member string
	reply  chan answer
}

type answer struct {
	has bool
	err error
}

// stalledGate returns a running gate whose group questions arrive on the
// channel returned, and whose member is *member.
func stalledGate(t *testing.T, logs *testlog.Buffer, member *atomic.Pointer[string]) (*stallGate, <-chan asked) {
	t.Helper()
	questions := make(chan asked)
	g := newStallGate(20*time.Second, zerolog.New(logs), func() string { return *member.Load() },
		func(ctx context.Context, m string) (bool, error) {
			q := asked{member: m, reply: make(chan answer, 1)}
			select {
			case questions <- q:
			case <-ctx.Done():
				return false, ctx.Err()
			}
			a := <-q.reply
			return a.has, a.err
		})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.ctx != nil }, 10*time.Second, time.Millisecond)
	return g, questions
}

// pretendStalled moves the gate's last tick an hour back, on both clocks,
// as a process stopped for an hour finds it.
func pretendStalled(g *stallGate) {
	g.lastMono.Add(-int64(time.Hour))
	g.lastWall.Add(-int64(time.Hour))
}

// holding starts hold for a partition of epoch in a goroutine: its result
// arrives on the channel.
func holding(g *stallGate, done <-chan struct{}, epoch uint64) <-chan bool {
	out := make(chan bool, 1)
	go func() { out <- g.hold(context.Background(), done, epoch) }()
	return out
}

// After a stall the partitions assigned before it write nothing until the
// group says it still has the member: while it says it does not (the
// client has not learned it yet), or cannot be asked, they stay held;
// partitions assigned after the stall are not held, nor is one let go.
func TestStallHoldsUntilTheGroupConfirms(t *testing.T) {
	var logs testlog.Buffer
	var member atomic.Pointer[string]
	m := "member-1"
	member.Store(&m)
	g, questions := stalledGate(t, &logs, &member)
	before := g.current()
	require.True(t, g.hold(context.Background(), nil, before), "no stall: nothing held")

	pretendStalled(g)
	held := holding(g, nil, before)
	q := <-questions // the writer saw the stall, and the gate asks the group
	require.Equal(t, "member-1", q.member)
	select {
	case <-held:
		t.Fatal("a writer went on before the group answered")
	default:
	}
	require.True(t, g.hold(context.Background(), nil, g.current()), "a partition assigned after the stall is not held")
	letGo := make(chan struct{})
	close(letGo)
	require.False(t, g.hold(context.Background(), letGo, before), "a partition let go stops waiting")

	q.reply <- answer{err: errors.New("coordinator not available")}
	q = <-questions
	q.reply <- answer{has: false} // dropped: held until the client lets the partitions go
	q = <-questions
	select {
	case <-held:
		t.Fatal("a writer went on while the group said it no longer has the member")
	default:
	}
	require.Contains(t, logs.String(), "the group dropped this replica during the stall")
	q.reply <- answer{has: true}
	require.True(t, <-held)
	require.True(t, g.hold(context.Background(), nil, before), "confirmed: nothing held")
	require.Contains(t, logs.String(), "this process stalled past half its group session timeout")
	require.Contains(t, logs.String(), "its partitions write again")
}

// A client that joined again as another member since the stall let the
// first member's partitions go (as lost) before: the gate clears without
// asking the group.
func TestStallClearsWhenTheClientJoinedAgain(t *testing.T) {
	var logs testlog.Buffer
	var member atomic.Pointer[string]
	m, again := "member-1", "member-2"
	member.Store(&m)
	g, questions := stalledGate(t, &logs, &member)
	before := g.current()
	pretendStalled(g)
	held := holding(g, nil, before)
	q := <-questions
	member.Store(&again)
	q.reply <- answer{has: false}
	require.True(t, <-held)
}

// A stall seen on the wall clock alone (a paused VM whose monotonic clock
// did not count the pause) holds as well.
func TestStallSeenOnTheWallClock(t *testing.T) {
	var logs testlog.Buffer
	var member atomic.Pointer[string]
	m := "member-1"
	member.Store(&m)
	g, questions := stalledGate(t, &logs, &member)
	before := g.current()
	g.lastWall.Add(-int64(time.Hour))
	held := holding(g, nil, before)
	q := <-questions
	q.reply <- answer{has: true}
	require.True(t, <-held)
}

// groupHas asks a real coordinator (kfake): the member a client joined as
// is in the group, another is not; with the classic protocol and with the
// consumer protocol (KIP-848).
func TestGroupHasAsksTheCoordinator(t *testing.T) {
	for _, consumer := range []bool{false, true} {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "commands"))
		require.NoError(t, err)
		t.Cleanup(c.Close)
		assigned := make(chan struct{}, 1)
		opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("commands"),
			kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
				select {
				case assigned <- struct{}{}:
				default:
				}
			})}
		if consumer {
			opts = append(opts, kgo.ServerSideBalancer())
		}
		cl, err := kgo.NewClient(opts...)
		require.NoError(t, err)
		t.Cleanup(cl.Close)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		go func() {
			for ctx.Err() == nil {
				cl.PollFetches(ctx)
			}
		}()
		select {
		case <-assigned:
		case <-ctx.Done():
			t.Fatalf("consumer %v: never assigned", consumer)
		}
		member, _ := cl.GroupMetadata()
		require.NotEmpty(t, member)
		has, err := groupHas(ctx, cl, "g", member)
		require.NoError(t, err, "consumer protocol %v", consumer)
		require.True(t, has, "consumer protocol %v", consumer)
		has, err = groupHas(ctx, cl, "g", "someone-else")
		require.NoError(t, err)
		require.False(t, has, "consumer protocol %v", consumer)
	}
}

// The applier holds a batch of a partition assigned before a stall until
// the group confirms the member: then it commits; a batch held for a
// member the group dropped is dropped when the partition is let go,
// nothing of it applied (its next owner applies it from the stored offset).
func TestStallHoldsTheApplier(t *testing.T) {
	w, st := newApplier(t)
	var logs testlog.Buffer
	var member atomic.Pointer[string]
	m := "member-1"
	member.Store(&m)
	g, questions := stalledGate(t, &logs, &member)
	w.stall = g
	lockRows := func(lock string) (n int) {
		require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM locks WHERE lock_name = $1`, lock).Scan(&n))
		return n
	}

	p0 := w.newPartition(w.hard, 0)
	pretendStalled(g)
	applied := make(chan struct{})
	go func() { defer close(applied); apply(w, seg(t, p0, 0, "confirmed")) }()
	q := <-questions
	require.Zero(t, lockRows("confirmed"), "applied before the group answered")
	q.reply <- answer{has: true}
	<-applied
	require.EqualValues(t, 1, acquisitions(t, st, "confirmed"))

	p1 := w.newPartition(w.hard, 1)
	pretendStalled(g)
	applied = make(chan struct{})
	go func() { defer close(applied); apply(w, seg(t, p1, 0, "dropped")) }()
	q = <-questions
	q.reply <- answer{has: false}
	q = <-questions // still held, asking again
	p1.revoke()     // the client learned it was dropped: the partition is let go
	<-applied
	require.Zero(t, lockRows("dropped"), "a batch held for a dropped member was applied")
	q.reply <- answer{has: false}
}
