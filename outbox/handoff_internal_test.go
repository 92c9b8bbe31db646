package outbox

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHandoffHoldsBoundedRows: while no pass takes the slots (one stuck in
// a publish), slots filled beyond maxHeld rows are resolved dirty, to be
// read from the table, so memory does not grow with every commit; the first
// slot is held whatever its size, and room comes back once slots are taken.
func TestHandoffHoldsBoundedRows(t *testing.T) {
	p := &partition{id: 1, wake: make(chan struct{}, 1), maxHeld: 3}
	r := &Relay{parts: map[int32]*partition{1: p}}
	p.startHandoff()
	id := int64(0)
	fill := func(n int) *Slot {
		s := r.Reserve(1)
		rows := make([]Row, n)
		for i := range rows {
			id++
			rows[i] = Row{ID: id, Partition: 1, Topic: "t"}
		}
		s.Fill(rows)
		return s
	}
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

// TestSlotOfAnEarlierRunIsNotHeld: a slot taken in an earlier run of the
// partition (a writer whose commit outlasted a revoke and a new
// assignment) is in no queue: filling it does not count against the rows
// the new run holds, and has the run read the table, where its rows are,
// before it publishes later ones from memory.
func TestSlotOfAnEarlierRunIsNotHeld(t *testing.T) {
	p := &partition{id: 1, wake: make(chan struct{}, 1), maxHeld: 3}
	r := &Relay{parts: map[int32]*partition{1: p}}
	p.startHandoff()
	old := r.Reserve(1)
	p.stopHandoff()
	p.startHandoff()
	old.Fill([]Row{{ID: 1, Partition: 1}, {ID: 2, Partition: 1}, {ID: 3, Partition: 1}, {ID: 4, Partition: 1}})
	require.Zero(t, p.held)
	require.True(t, p.readTable.Load(), "its rows are read from the table")
	s := r.Reserve(1)
	s.Fill([]Row{{ID: 5, Partition: 1}})
	require.Equal(t, slotRows, s.state)
	rows, dirty := p.takeSlots()
	require.Len(t, rows, 1)
	require.False(t, dirty)
}
