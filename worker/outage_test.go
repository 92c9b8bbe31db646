package worker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/topics"
)

// TestBrokerUnreachable: Kafka first refuses the relay's writes while
// commands still arrive, then goes away entirely while more commands are
// produced. Commands keep being applied (their outcomes wait in the outbox),
// and once Kafka is back every outcome is delivered, in order per lock.
func TestBrokerUnreachable(t *testing.T) {
	e := e2e.New(t)
	e.StartWorker(e2e.WorkerOpts{Name: "w"})
	n := e.Names
	const reply = "locks.replies.outage"
	watch := e.Watch(reply, n.Acquired, n.Released)
	p := e.Producer()

	// Warm up: the reply topic exists and the relay has written once.
	e.Send(p, cmd("query", "warm", "warm", "", reply))
	watch.WaitEvent(t, "warm-up reply", e2e.ByRequest(reply, "warm", topics.TypeStatus))

	// Phase 1: every produce that is not a command closes the connection,
	// as a broker the relay cannot reach would.
	outage := e2e.NewOutage(t, e.Cluster, n.Commands)
	outage.RefuseProduce(true)
	t.Log("phase 1: the relay cannot publish")
	const locks, rounds = 20, 5
	var ids []string
	batch := func(round int) []topics.Command {
		var cmds []topics.Command
		for l := 0; l < locks; l++ {
			lock, owner := fmt.Sprintf("out-%d", l), fmt.Sprintf("owner-%d", l)
			a, r := fmt.Sprintf("%s-a%d", lock, round), fmt.Sprintf("%s-r%d", lock, round)
			cmds = append(cmds, cmd("acquire", a, lock, owner, reply, func(c *topics.Command) { c.LeaseDuration = 300 }),
				cmd("release", r, lock, owner, reply))
			ids = append(ids, a, r)
		}
		return cmds
	}
	for round := 0; round < 3; round++ {
		e.Send(p, batch(round)...)
	}
	ctx := context.Background()
	applied := func() int {
		var c int
		require.NoError(t, e.Store.Pool.QueryRow(ctx, `SELECT count(*) FROM processed_requests WHERE request_id LIKE 'out-%'`).Scan(&c))
		return c
	}
	require.Eventually(t, func() bool { return applied() == len(ids) }, time.Minute, 20*time.Millisecond,
		"commands are applied while the relay cannot publish")
	var backlog int
	require.NoError(t, e.Store.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&backlog))
	require.Greater(t, backlog, 0, "outcomes wait in the outbox")
	require.Positive(t, outage.Refused())

	// Phase 2: the broker is gone for everyone; the producer buffers and retries.
	t.Log("phase 2: the broker is unreachable")
	outage.Down(true)
	before := outage.Refused()
	var produced atomic.Int64
	var produceErr atomic.Value
	for _, c := range append(batch(3), batch(4)...) {
		v, err := c.Encode()
		require.NoError(t, err)
		p.Produce(ctx, &kgo.Record{Key: []byte(c.Key()), Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				produceErr.Store(err)
			}
			produced.Add(1)
		})
	}
	require.Eventually(t, func() bool { return outage.Refused() >= before+20 }, time.Minute, 10*time.Millisecond,
		"clients keep knocking while the broker is down")
	require.Zero(t, produced.Load(), "nothing acknowledged while the broker is down")

	// Kafka is back: everything produced is applied and every outcome delivered.
	t.Log("phase 3: the broker is back")
	outage.Down(false)
	outage.RefuseProduce(false)
	require.Eventually(t, func() bool { return produced.Load() == int64(2*locks*2) }, time.Minute, 10*time.Millisecond)
	require.Nil(t, produceErr.Load())
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	watch.WaitFor(t, 2*time.Minute, "every outcome delivered", func(rs []e2e.Received) bool {
		seen := map[string]bool{}
		for _, r := range rs {
			if r.Record.Topic == reply && want[r.Event.RequestID] {
				seen[r.Event.RequestID] = true
			}
		}
		return len(seen) == len(want)
	})
	require.Eventually(t, func() bool {
		var left int
		require.NoError(t, e.Store.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&left))
		return left == 0
	}, time.Minute, 20*time.Millisecond, "the outbox drains")

	// Per lock, the reply topic tells the story in the order it happened
	// (acquired r0, released r0, acquired r1, ...), and each lifecycle topic
	// has the tokens in increasing order. Redelivery may repeat an event
	// (same event_id); it never reorders.
	replies := map[string][]string{}
	acquired, released := map[string][]int64{}, map[string][]int64{}
	seen := map[string]bool{}
	for _, r := range watch.All() {
		require.True(t, r.Event.Success, "%+v", r.Event)
		if seen[r.Record.Topic+r.Event.EventID] {
			continue
		}
		seen[r.Record.Topic+r.Event.EventID] = true
		lock := string(r.Record.Key)
		switch r.Record.Topic {
		case reply:
			if want[r.Event.RequestID] {
				replies[lock] = append(replies[lock], r.Event.RequestID)
			}
		case n.Acquired:
			acquired[lock] = append(acquired[lock], r.Event.LockInfo.FencingToken)
		case n.Released:
			released[lock] = append(released[lock], r.Event.LockInfo.FencingToken)
		}
	}
	for l := 0; l < locks; l++ {
		lock := fmt.Sprintf("out-%d", l)
		var order []string
		for round := 0; round < rounds; round++ {
			order = append(order, fmt.Sprintf("%s-a%d", lock, round), fmt.Sprintf("%s-r%d", lock, round))
		}
		require.Equal(t, order, replies[lock], "reply order of %s", lock)
		require.Len(t, acquired[lock], rounds, "lock.acquired events of %s", lock)
		require.Equal(t, acquired[lock], released[lock], "each release ends the lease just acquired, in order")
		require.IsIncreasing(t, acquired[lock], "tokens of %s", lock)
	}
}
