package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/topics"
)

// TestStatsCorrectsForTheStall feeds Stats two contenders sending every
// 100 ms, answered in 10 ms, one of which waits 2 s once: the p99 over the
// commands sent is 10 ms; the corrected one counts the 19 commands a
// requester sending every 100 ms would have had waiting meanwhile.
func TestStatsCorrectsForTheStall(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	l := &Load{}
	send := func(owner string, ms, tookMS int) {
		q := &request{id: fmt.Sprintf("%s-%d", owner, ms), owner: owner, sent: at(ms)}
		if tookMS >= 0 {
			q.answered = at(ms + tookMS)
		}
		l.order = append(l.order, q)
	}
	for ms := 0; ms < 10_000; ms += 100 {
		send("a", ms, 10)
		switch {
		case ms < 5000 || ms >= 7000:
			send("b", ms, 10)
		case ms == 5000:
			send("b", ms, 2000) // its partition had no owner; b sent nothing until 7000
		}
	}
	send("a", 10_000, -1) // still in flight

	s := l.Stats()
	assert.Equal(t, 182, s.Commands)
	assert.Equal(t, 1, s.Unanswered)
	assert.Equal(t, 1, s.OverSecond)
	assert.Equal(t, 2*time.Second, s.Worst)
	assert.Equal(t, 10*time.Millisecond, s.P99) // the 180th of 181: blind to the stall
	// 181 answers (180 of 10 ms) and 19 synthetic waits of 100 to 1,900 ms:
	// the 198th of 200 is 1,800 ms (histogram precision 0.1 %).
	assert.InDelta(t, 1800*time.Millisecond, s.CorrectedP99, float64(2*time.Millisecond))

	// Commands sent before the stall: the interval is still each
	// contender's usual one, and nothing is added.
	s = l.Stats(Window{From: at(0), To: at(4000)})
	assert.Equal(t, 80, s.Commands)
	assert.Zero(t, s.OverSecond)
	assert.Equal(t, 10*time.Millisecond, s.P99)
	assert.InDelta(t, 10*time.Millisecond, s.CorrectedP99, float64(20*time.Microsecond))
}

// TestStatsP99IsTheNearestRank: the p99 of 100 answers of 1..100 ms is the
// 99th smallest, 99 ms, as lockbench's other percentiles (NearestRank), not
// the 100th, the worst.
func TestStatsP99IsTheNearestRank(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	var all []sample
	for i := 1; i <= 100; i++ {
		sent := t0.Add(time.Duration(i) * time.Second)
		all = append(all, sample{owner: "o", sent: sent, answered: sent.Add(time.Duration(i) * time.Millisecond)})
	}
	s := stats(all, nil, 2*time.Second)
	assert.Equal(t, 100*time.Millisecond, s.Worst)
	assert.Equal(t, 99*time.Millisecond, s.P99)
}

// TestIntervalsOfClusteredGaps: two contenders whose gaps are 10 and 30 ms
// in nearly equal numbers (one more of either), plus a lease left to expire
// (1.05 s) and a stall (6 s). Their medians are 10 and 30 ms; their usual
// intervals, means without the long gaps, both about 20 ms.
func TestIntervalsOfClusteredGaps(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	var all []sample
	contender := func(owner string, tens, thirties int) {
		at := t0
		all = append(all, sample{owner: owner, sent: at})
		gaps := []time.Duration{1050 * time.Millisecond, 6 * time.Second}
		for i := range max(tens, thirties) {
			if i < tens {
				gaps = append(gaps, 10*time.Millisecond)
			}
			if i < thirties {
				gaps = append(gaps, 30*time.Millisecond)
			}
		}
		for _, g := range gaps {
			at = at.Add(g)
			all = append(all, sample{owner: owner, sent: at})
		}
	}
	contender("low", 53, 50)
	contender("high", 50, 53)
	iv := intervals(all)
	assert.InDelta(t, 20*time.Millisecond, iv["low"], float64(500*time.Microsecond)) // 2,030 ms / 103
	assert.InDelta(t, 20*time.Millisecond, iv["high"], float64(500*time.Microsecond))
}

// TestExpiriesAnchorOnTheTakeover: an abandon-only lease of partition p001
// ends at 1,500 ms and is expired at 8,010 ms, 10 ms after its partition's
// owner answers again. The takeover is that answer whether the owner is
// another replica or the killed one restarted under its name, whose answers
// before the kill share its ce_source; an owner that answered all along and
// expired the lease late is measured from the lease's end.
func TestExpiriesAnchorOnTheTakeover(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 21, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	answer := func(l *Load, source string, ms int) {
		ev := topics.NewEvent(topics.TypeReleased, topics.OpRelease, fmt.Sprintf("r-%d", ms), at(ms))
		ev.LockInfo = &topics.LockInfo{LockName: "p001-other"}
		l.replies, l.sources = append(l.replies, ev), append(l.sources, source)
	}
	expire := func(l *Load, source string) {
		ev := topics.NewEvent(topics.TypeExpired, topics.OpAcquire, "", at(8010))
		ev.LockInfo = &topics.LockInfo{LockName: "p001-lease", ExpiresAt: &topics.Time{Time: at(1500)}}
		l.replies, l.sources = append(l.replies, ev), append(l.sources, source)
	}
	load := func(killed, taker string, upTo int) *Load {
		l := &Load{abandoned: map[string]bool{"p001-lease": true}}
		for ms := 0; ms < 2000; ms += 10 {
			answer(l, killed, ms)
		}
		for ms := 8000; ms < upTo; ms += 10 {
			answer(l, taker, ms)
		}
		expire(l, taker)
		return l
	}
	w := Window{From: t0, To: at(60000)}
	for name, l := range map[string]*Load{
		"another replica":              load("replica-1", "replica-2", 9000),
		"restarted under its own name": load("replica-1", "replica-1", 9000),
		// The restarted replica answers nothing before the lock.expired.
		"expired before it answered": load("replica-1", "replica-1", 0),
	} {
		x := l.Expiries(w)
		assert.Equal(t, 1, x.Orphaned, name)
		assert.LessOrEqual(t, x.AfterTakeover, 10*time.Millisecond, name)
	}

	late := &Load{abandoned: map[string]bool{"p001-lease": true}}
	for ms := 0; ms < 9000; ms += 10 {
		answer(late, "replica-1", ms)
	}
	expire(late, "replica-1")
	x := late.Expiries(w)
	assert.Equal(t, 1, x.Orphaned)
	assert.Equal(t, 6510*time.Millisecond, x.AfterTakeover, "an owner that answered all along")
}

// TestExpiriesOfAbandonOnlyLeases: Expiries judges the expiry scheduler
// alone. A contended lock's lease that a contender's acquire ended late
// (the command path settles it) is not counted, and an abandon-only lease
// that ended with no lock.expired is counted unexpired.
func TestExpiriesOfAbandonOnlyLeases(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 21, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	l := &Load{abandoned: map[string]bool{"p001-a0": true, "p002-a0": true}}
	add := func(typ, lock string, token int64, ms, endMS int) {
		ev := topics.NewEvent(typ, topics.OpAcquire, fmt.Sprintf("r-%s-%d", lock, ms), at(ms))
		ev.Success = true
		ev.LockInfo = &topics.LockInfo{LockName: lock, FencingToken: token, ExpiresAt: &topics.Time{Time: at(endMS)}}
		l.replies, l.sources = append(l.replies, ev), append(l.sources, "replica-2")
	}
	add(topics.TypeAcquired, "p001-l0", 1, 0, 1000)
	add(topics.TypeExpired, "p001-l0", 1, 9000, 1000) // ended by the next acquire, 8 s late
	add(topics.TypeAcquired, "p001-a0", 2, 0, 1000)
	add(topics.TypeExpired, "p001-a0", 2, 1050, 1000)
	add(topics.TypeAcquired, "p002-a0", 3, 0, 1000) // never expired

	x := l.Expiries(Window{From: t0, To: at(60000)})
	assert.Equal(t, Expiries{Count: 1, Unexpired: 1, Late: 50 * time.Millisecond}, x)
}

// TestStopWaitsForALeaseGrantedJustBefore is the race of the last
// abandon-only grant before Stop, played in its worst order: the grant is
// read (its request answered) and Stop starts before the owner's goroutine
// comes back from its call; here it never does. The lease is registered as
// the grant is read, so Stop's wait includes it: it returns only once the
// lease's lock.expired is read, and Expiries then counts nothing unexpired.
func TestStopWaitsForALeaseGrantedJustBefore(t *testing.T) {
	t0 := time.Now()
	l := &Load{reqs: map[string]*request{}, abandoned: map[string]bool{"p001-a0": true}, ends: map[string]chan struct{}{}}
	q := &request{id: "p001-a0-o0-7-acq", owner: "p001-a0-o0", partition: 1, sent: t0, done: make(chan struct{})}
	l.reqs[q.id], l.order = q, append(l.order, q)
	event := func(typ string) topics.Event {
		ev := topics.NewEvent(typ, topics.OpAcquire, q.id, time.Now())
		ev.Success = true
		ev.LockInfo = &topics.LockInfo{LockName: "p001-a0", FencingToken: 42, ExpiresAt: &topics.Time{Time: t0.Add(500 * time.Millisecond)}}
		return ev
	}
	l.receive(event(topics.TypeAcquired), "replica-1", time.Now())
	require.True(t, closed(q.done), "the acquire is answered")
	ch := l.ends["p001-a0#42"]
	require.NotNil(t, ch, "the lease is registered by the time its acquire counts as answered")
	require.False(t, closed(ch))

	settled := make(chan struct{})
	go func() {
		l.settle(time.Minute)
		close(settled)
	}()
	select {
	case <-settled:
		t.Fatal("Stop's wait ended before the lease granted just before it expired")
	case <-time.After(200 * time.Millisecond):
	}
	l.receive(event(topics.TypeExpired), "replica-1", time.Now())
	select {
	case <-settled:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop's wait did not end at the lease's lock.expired")
	}
	assert.Zero(t, l.Expiries(Window{To: time.Now().Add(time.Hour)}).Unexpired)
}

// TestPatientContendersSeeALostReply runs a Load against a fake worker
// that loses the reply to every command's first copy (committed, never
// published, as a crash between the commit and the relay would) and
// answers a resend from the stored outcome, as lockworker does. The
// resending contender is answered every time, the same event to each copy:
// Check sees nothing wrong. The patient one, which never resends, is left
// unanswered, and Check reports it.
func TestPatientContendersSeeALostReply(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	commands := topics.DefaultNames().Commands
	cluster := kafkatest.Cluster(t, kfake.SeedTopics(1, commands))
	brokers := cluster.ListenAddrs()
	worker, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(commands),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond), kgo.ProducerLinger(0))
	require.NoError(t, err)
	defer worker.Close()
	go func() {
		stored := map[string]topics.Event{} // the outcomes, by request_id
		for ctx.Err() == nil {
			worker.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
				var c topics.Command
				if err := json.Unmarshal(r.Value, &c); err != nil {
					t.Errorf("a command the load sent: %v", err)
					return
				}
				ev, applied := stored[c.RequestID]
				if !applied {
					ev = topics.NewEvent(topics.TypeRejected, c.Operation, c.RequestID, time.Now())
					ev.ErrorCode = "LOCK_HELD"
					stored[c.RequestID] = ev
					return // its reply lost
				}
				v, _ := ev.Encode() // an Event always encodes
				worker.Produce(ctx, &kgo.Record{Topic: c.ReplyTo, Value: v}, nil)
			})
		}
	}()

	load, err := StartLoad(ctx, LoadConfig{Brokers: brokers, Partitions: 1, LocksPerPartition: 1, Contenders: 2, Patient: 1,
		Resend: 100 * time.Millisecond, Pause: 10 * time.Millisecond})
	require.NoError(t, err)
	answered := 0
	enough := load.When(func(r Read) bool {
		answered++
		return answered == 5
	})
	select {
	case <-enough:
	case <-ctx.Done():
		t.Fatal("the resending contender was not answered")
	}
	load.Stop(300 * time.Millisecond) // the patient contender's command is never answered
	require.Positive(t, load.Resends())
	st := load.Stats()
	assert.Positive(t, st.Once)
	err = Check(load.History())
	require.ErrorContains(t, err, "request p000-l0-o1-0-acq never answered")
	require.NotContains(t, err.Error(), "-o0-", "the resending contender's commands are answered")
}

// TestWhenSeesTheRepliesReadAfterIt: a condition is met by replies read
// after When, with their command's partition and first send; a reply to
// none of the load's commands has partition -1.
func TestWhenSeesTheRepliesReadAfterIt(t *testing.T) {
	t0 := time.Now()
	l := &Load{reqs: map[string]*request{}}
	q := &request{id: "r1", partition: 3, sent: t0, done: make(chan struct{})}
	l.reqs[q.id] = q
	l.receive(topics.NewEvent(topics.TypeAcquired, topics.OpAcquire, "r1", t0), "lockworker/w1", t0) // before When
	var got []Read
	met := l.When(func(r Read) bool {
		got = append(got, r)
		return r.Source == "lockworker/w2"
	})
	l.receive(topics.NewEvent(topics.TypeExpired, topics.OpAcquire, "", t0), "lockworker/w1", t0)
	require.False(t, closed(met))
	l.receive(topics.NewEvent(topics.TypeAcquired, topics.OpAcquire, "r1", t0), "lockworker/w2", t0)
	<-met
	l.receive(topics.NewEvent(topics.TypeAcquired, topics.OpAcquire, "r1", t0), "lockworker/w2", t0) // after: not called
	require.Len(t, got, 2)
	assert.Equal(t, -1, got[0].Partition)
	assert.Equal(t, 3, got[1].Partition)
	assert.Equal(t, t0, got[1].Sent)
}
