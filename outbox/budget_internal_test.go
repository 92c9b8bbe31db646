package outbox

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newRelay returns a relay with its own bounds, for tests that query
// nothing: New only checks that a pool is there.
func newRelay(t *testing.T) *Relay {
	t.Helper()
	r, err := New(Config{Publisher: nopPublisher{}, Pool: new(pgxpool.Pool), Logger: zerolog.Nop()})
	require.NoError(t, err)
	return r
}

// TestHandoffBytesAreBoundedPerRelay: the rows the hand-off queues hold
// are bounded for the relay, its partitions together, not for each: with
// every partition's pass stuck (nothing takes the slots) and commits of
// large rows going on, 64 partitions would hold 64 times the bound. Past
// it each partition still holds its first slot (its writer holds the rows
// anyway) and resolves the others dirty, so one whose room the others
// hold still publishes: a slot at a time handed over, the rest read from
// the table.
func TestHandoffBytesAreBoundedPerRelay(t *testing.T) {
	r := newRelay(t)
	value := make([]byte, 64<<10)            // shared by every row: only the lengths count
	perSlot := maxHeldBytes / len(value) / 4 // four slots fill the budget
	slotBytes := perSlot * len(value)
	const parts = 4
	fills := make([]func(int) *Slot, parts)
	for id := range int32(parts) {
		r.part(id).startHandoff()
		fills[id] = filler(r, Row{Partition: id, Topic: "dlq", Value: value, CreatedAt: committedAt})
	}
	held := func() (n int) {
		for id := range int32(parts) {
			n += r.part(id).heldBytes
		}
		return n
	}
	for id, fill := range fills {
		for range 6 {
			fill(perSlot)
		}
		require.NotZero(t, r.part(int32(id)).held, "partition %d holds its first slot", id)
	}
	require.Equal(t, maxHeldBytes+(parts-1)*slotBytes, held(), "past the budget, the first slot of each partition only")

	last := r.part(parts - 1)
	rows, dirty := last.takeSlots()
	require.Len(t, rows, perSlot)
	require.True(t, dirty, "the rest read from the table")
	require.Equal(t, slotRows, fills[parts-1](perSlot).state, "its next first slot, though the others fill the budget")
	require.Equal(t, slotDirty, fills[parts-1](1).state)

	rows, _ = r.part(0).takeSlots()
	require.Len(t, rows, 4*perSlot)
	require.Equal(t, slotRows, fills[1](perSlot).state, "room again, once a partition's slots were taken")
	require.Equal(t, slotDirty, fills[2](1).state)
}

// TestHandoffBudgetIsGivenBack: the relay counts the bytes its partitions'
// queues hold, and each partition gives them back exactly once: as a pass
// takes its slots, as its run stops (twice, as Run stops it: at its
// context's end and as it returns) or as a new one starts; a slot of a
// stopped run, filled late, is not counted.
func TestHandoffBudgetIsGivenBack(t *testing.T) {
	r := newRelay(t)
	r.handed.max = 1000
	counted := func(msg string) {
		t.Helper()
		sum := 0
		for _, p := range r.parts {
			p.hmu.Lock()
			sum += p.heldBytes
			p.hmu.Unlock()
		}
		require.Equal(t, int64(sum), r.handed.used.Load(), msg)
	}
	value := make([]byte, 100)
	var fills []func(int) *Slot
	var runs []uint64
	for id := range int32(3) {
		runs = append(runs, r.part(id).startHandoff())
		fills = append(fills, filler(r, Row{Partition: id, Topic: "t", Value: value, CreatedAt: committedAt}))
	}
	for _, fill := range fills {
		fill(3)
		fill(3)
		fill(4) // the budget full, for the later partitions
	}
	counted("filled")
	require.Equal(t, int64(1000+2*300), r.handed.used.Load(), "the budget, and the first slots past it")

	r.part(0).takeSlots()
	counted("taken")
	late := r.Reserve(1)
	r.part(1).stopHandoff(runs[1])
	counted("stopped")
	r.part(1).stopHandoff(runs[1])
	counted("stopped again")
	late.Fill([]Row{{ID: 100, Partition: 1, Value: value, CreatedAt: committedAt}})
	counted("a slot of the stopped run")
	r.part(2).startHandoff() // a new run, the last one not stopped
	counted("restarted")
	require.Zero(t, r.handed.used.Load())

	require.Equal(t, slotRows, fills[0](9).state)
	require.Equal(t, slotRows, fills[2](1).state)
	r.part(0).takeSlots()
	r.part(2).takeSlots()
	require.Zero(t, r.handed.used.Load())
}

// TestHandoffBudgetUnderConcurrency: writers of several partitions filling
// slots while their passes take them, as in a process, leave the budget's
// count at what the queues hold, and at nothing once every run stopped.
func TestHandoffBudgetUnderConcurrency(t *testing.T) {
	r := newRelay(t)
	r.handed.max = 10 << 10
	value := make([]byte, 100)
	const parts = 4
	var wg sync.WaitGroup
	for id := range int32(parts) {
		p := r.part(id)
		run := p.startHandoff()
		fill := filler(r, Row{Partition: id, Topic: "t", Value: value, CreatedAt: committedAt})
		wg.Go(func() {
			for i := range 2000 {
				fill(1 + i%7)
				if i%5 == 0 {
					p.takeSlots()
				}
				// The budget, and at most a first slot of each partition past it.
				assert.LessOrEqual(t, r.handed.used.Load(), r.handed.max+parts*7*100)
			}
			p.stopHandoff(run)
		})
	}
	wg.Wait()
	require.Zero(t, r.handed.used.Load())
}

// TestProbeBytesAreBoundedPerRelay: the probes' rows are bounded for the
// relay, its partitions together: past the budget only each partition's
// first probe runs, the others' units go in its passes. The bytes are
// counted until the probes are taken, and a pass's rest that does not all
// fit keeps none of the room it tried.
func TestProbeBytesAreBoundedPerRelay(t *testing.T) {
	r := newRelay(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the probes' publishes return at once; only what starts counts here
	value := make([]byte, maxHeldBytes/2)
	unitOf := func(topic string, size int) unit {
		return unit{topic: topic, rows: []row{{topic: topic, value: value[:size]}}}
	}
	var ps []*partition
	for id := range int32(3) {
		p := r.part(id)
		for _, topic := range []string{"a", "b"} {
			p.blocked[topic] = block{failures: 1}
		}
		ps = append(ps, p)
	}
	require.Empty(t, r.startProbes(ctx, ps[0], []unit{unitOf("a", maxHeldBytes/2), unitOf("b", maxHeldBytes/2)}), "both fit")
	left := r.startProbes(ctx, ps[1], []unit{unitOf("a", 1), unitOf("b", 1)})
	require.Equal(t, []unit{unitOf("b", 1)}, left, "the partition's first probe only: the others' fill the budget")

	used := r.probed.used.Load()
	require.Equal(t, int64(maxHeldBytes+1), used)
	units := []unit{unitOf("a", 1), unitOf("b", 1)}
	require.False(t, r.probeRest(ctx, ps[2], units, []int{0, 1}, nil, nil), "the first would run, not the second")
	require.Equal(t, used, r.probed.used.Load(), "the room of the first kept")
	require.False(t, ps[2].blocked["a"].probing)

	for _, p := range ps {
		r.endProbes(ctx, p)
	}
	require.Zero(t, r.probed.used.Load(), "given back as the probes are taken")
}
