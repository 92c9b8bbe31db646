package outbox

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// committedAt stands for the created_at the writers' rows were inserted
// with: a row handed over without one is read from the table instead.
var committedAt = time.Now()

// TestHandoffHoldsBoundedRows: while no pass takes the slots (one stuck in
// a publish), slots filled beyond maxHeld rows are resolved dirty, to be
// read from the table, so memory does not grow with every commit; the first
// slot is held whatever its size, and room comes back once slots are taken.
func TestHandoffHoldsBoundedRows(t *testing.T) {
	p := &partition{id: 1, wake: make(chan struct{}, 1), maxHeld: 3, handed: &budget{max: 1 << 20}}
	r := &Relay{parts: map[int32]*partition{1: p}}
	p.startHandoff()
	fill := filler(r, Row{Partition: 1, Topic: "t", CreatedAt: committedAt})
	big, next, over := fill(5), fill(1), fill(1)
	require.Equal(t, slotRows, big.state, "the first slot, however large")
	require.Equal(t, slotDirty, next.state)
	require.Equal(t, slotDirty, over.state)
	rows, dirty := p.takeSlots()
	require.Len(t, rows, 5)
	require.True(t, dirty, "the table is read for the rest")
	a, b, c := fill(2), fill(1), fill(1)
	require.Equal(t, []slotState{slotRows, slotRows, slotDirty}, []slotState{a.state, b.state, c.state})
	rows, _ = p.takeSlots()
	require.Len(t, rows, 3)
	require.Zero(t, p.held)
}

// TestHandoffHoldsBoundedSlots: while no pass takes the slots (one stuck
// in a publish) and commits go on, the queue does not grow by a slot per
// commit: a slot filled with no rows is dropped, and so is one of two
// dirty slots side by side (both say: read the table), whether filled
// beyond maxHeld or rolled back. What is taken is as before, and the
// array the queue grew to is let go once the slots are taken.
func TestHandoffHoldsBoundedSlots(t *testing.T) {
	p := &partition{id: 1, wake: make(chan struct{}, 1), maxHeld: 3, handed: &budget{max: 1 << 20}}
	r := &Relay{parts: map[int32]*partition{1: p}}
	p.startHandoff()
	fill := filler(r, Row{Partition: 1, Topic: "t", CreatedAt: committedAt})
	head := r.Reserve(1) // not committed yet: nothing after it is taken
	fill(3)
	for i := range 30000 {
		switch i % 3 {
		case 0:
			require.Equal(t, slotDirty, fill(1).state, "beyond maxHeld")
		case 1:
			r.Reserve(1).Dirty()
		case 2:
			r.Reserve(1).Fill(nil)
		}
	}
	require.Equal(t, 3, len(p.slots), "the head, the rows held, one dirty slot")
	inFlight := r.Reserve(1)
	fill(1)
	inFlight.Dirty() // between two dirty slots: one is left
	require.Equal(t, 3, len(p.slots))
	head.Fill(nil)
	rows, dirty := p.takeSlots()
	require.Len(t, rows, 3)
	require.True(t, dirty)
	require.Empty(t, p.slots)

	var pending []*Slot
	for range 10000 {
		pending = append(pending, r.Reserve(1))
	}
	for _, s := range pending {
		s.Dirty()
	}
	require.Equal(t, 1, len(p.slots))
	_, dirty = p.takeSlots()
	require.True(t, dirty)
	require.LessOrEqual(t, cap(p.slots), minSlotsCap, "the grown array is let go")
}

// TestSlotOfAnEarlierRunIsNotHeld: a slot taken in an earlier run of the
// partition (a writer whose commit outlasted a revoke and a new
// assignment) is in no queue: filling it does not count against the rows
// the new run holds (which reads its rows from the table:
// TestSlotOfAStoppedRunKeepsOrder).
func TestSlotOfAnEarlierRunIsNotHeld(t *testing.T) {
	p := &partition{id: 1, wake: make(chan struct{}, 1), maxHeld: 3, handed: &budget{max: 1 << 20}}
	r := &Relay{parts: map[int32]*partition{1: p}}
	run := p.startHandoff()
	old := r.Reserve(1)
	p.stopHandoff(run)
	p.startHandoff()
	old.Fill([]Row{{ID: 1, Partition: 1, CreatedAt: committedAt}, {ID: 2, Partition: 1, CreatedAt: committedAt}, {ID: 3, Partition: 1, CreatedAt: committedAt}, {ID: 4, Partition: 1, CreatedAt: committedAt}})
	require.Zero(t, p.held)
	s := r.Reserve(1)
	s.Fill([]Row{{ID: 5, Partition: 1, CreatedAt: committedAt}})
	require.Equal(t, slotRows, s.state)
	rows, dirty := p.takeSlots()
	require.Len(t, rows, 1)
	require.False(t, dirty)
}

// TestHandoffHoldsBoundedBytes: the bound counts bytes too (key, value and
// headers), not only rows: dead-letter copies of up to DEAD_LETTER_MAX_BYTES
// each would otherwise fill memory long before maxHeld rows. Slots filled
// beyond the relay's budget are resolved dirty; the first is held whatever
// its size; room comes back once slots are taken.
func TestHandoffHoldsBoundedBytes(t *testing.T) {
	r := newRelay(t)
	p := r.part(1) // the relay's own bounds
	maxBytes := int(r.handed.max)
	p.startHandoff()
	value := make([]byte, 64<<10) // shared by every row: only the lengths count
	fill := filler(r, Row{Partition: 1, Topic: "dlq", Key: []byte("k"), Value: value, Headers: []byte("h"), CreatedAt: committedAt})
	size := len(value) + 2
	perSlot := maxBytes / size / 4 // four slots fit, a fifth does not
	require.Less(t, 5*perSlot, p.maxHeld, "far fewer rows than the row bound")
	var slots []*Slot
	for range 5 {
		slots = append(slots, fill(perSlot))
	}
	for i, s := range slots[:4] {
		require.Equal(t, slotRows, s.state, "slot %d fits", i)
	}
	require.Equal(t, slotDirty, slots[4].state, "beyond the bytes held: read from the table")
	require.LessOrEqual(t, p.heldBytes, maxBytes)
	rows, dirty := p.takeSlots()
	require.Len(t, rows, 4*perSlot)
	require.True(t, dirty)
	require.Zero(t, p.heldBytes)

	huge, next := fill(2*maxBytes/size), fill(1)
	require.Equal(t, slotRows, huge.state, "the first slot, however large")
	require.Equal(t, slotDirty, next.state)
	rows, _ = p.takeSlots()
	require.Len(t, rows, 2*maxBytes/size)
	require.Equal(t, slotRows, fill(1).state, "room again")
}

// filler returns what reserves a slot of row's partition and fills it with
// n rows like row, numbered on from 1.
func filler(r *Relay, row Row) func(n int) *Slot {
	id := int64(0)
	return func(n int) *Slot {
		s := r.Reserve(row.Partition)
		rows := make([]Row, n)
		for i := range rows {
			id++
			rows[i] = row
			rows[i].ID = id
		}
		s.Fill(rows)
		return s
	}
}

// TestFillSortsByID: a slot's rows go out in id order, however far apart
// their ids: a difference past 32 bits cut to an int compared them equal
// on 32-bit platforms. It can fail only there (GOARCH=386, which this
// project's CI does not run).
func TestFillSortsByID(t *testing.T) {
	p := &partition{id: 1, wake: make(chan struct{}, 1), maxHeld: 10, handed: &budget{max: 1 << 20}}
	r := &Relay{parts: map[int32]*partition{1: p}}
	p.startHandoff()
	r.Reserve(1).Fill([]Row{{ID: 1<<32 + 1, Partition: 1, CreatedAt: committedAt}, {ID: 1, Partition: 1, CreatedAt: committedAt}})
	rows, _ := p.takeSlots()
	require.Len(t, rows, 2)
	require.Equal(t, []int64{1, 1<<32 + 1}, []int64{rows[0].id, rows[1].id})
}

// TestReadFilterIsBounded: while every pass reads the table (awaitXmin)
// and commits go on, so that a slot reserved before the last read is
// always pending when slots are taken, the ids of the reads are dropped
// once every slot reserved before each has been taken, not kept until the
// queue is found empty. A row a read took is still left out of the slot
// reserved before that read.
func TestReadFilterIsBounded(t *testing.T) {
	p := &partition{id: 1, wake: make(chan struct{}, 1), maxHeld: 1 << 20, handed: &budget{max: 1 << 30}}
	r := &Relay{parts: map[int32]*partition{1: p}}
	p.startHandoff()
	id := int64(0)
	pending := r.Reserve(1)
	for range 10000 {
		next := r.Reserve(1) // the next transaction, reserved before the read
		id++
		committed := []Row{{ID: id, Partition: 1, CreatedAt: committedAt}}
		p.selected([]row{{rowRef: rowRef{id: id}}}) // the read saw pending's commit before its Fill
		pending.Fill(committed)
		rows, _ := p.takeSlots()
		require.Empty(t, rows, "row %d published twice: read, and handed over", id)
		pending = next
	}
	require.LessOrEqual(t, len(p.filter), 2, "ids of reads whose slots were all taken are kept")
	require.LessOrEqual(t, len(p.reads), 2)
	pending.Fill([]Row{{ID: id + 1, Partition: 1, CreatedAt: committedAt}})
	rows, _ := p.takeSlots()
	require.Len(t, rows, 1, "a row no read took goes out")
	require.Empty(t, p.filter)
}

// TestStopHandoffOfAnEarlierRun: the stop of a run that has ended (its
// context's end seen late) leaves the queue of the run after it open.
func TestStopHandoffOfAnEarlierRun(t *testing.T) {
	p := &partition{id: 1, wake: make(chan struct{}, 1), maxHeld: 3, handed: &budget{max: 1 << 20}}
	r := &Relay{parts: map[int32]*partition{1: p}}
	first := p.startHandoff()
	p.stopHandoff(first)
	p.startHandoff()
	p.stopHandoff(first)
	require.NotNil(t, r.Reserve(1), "the later run's queue closed")
}
