package outbox

import (
	"cmp"
	"slices"
	"time"
)

// Row is an outbox row as its writer inserted it, handed to the relay after
// commit (see [Relay.Reserve]).
type Row struct {
	ID                  int64
	Partition           int32
	Topic               string
	Key, Value, Headers []byte
	// CreatedAt is the row's created_at, as the INSERT returned it: the
	// relay deletes the row by it and ID, since a failover that lost the
	// row may give its ID to another. A slot filled with a row of the
	// partition without it is read from the table instead, as Dirty.
	CreatedAt time.Time
}

// Slot is a transaction's place in a partition's hand-off queue: the relay
// publishes what the slots hold in the order they were reserved, and waits
// at a slot not resolved yet. A writer reserves after its transaction took
// every lock it needs and before it sends COMMIT, so of two transactions
// that touch the same lock the first to commit holds the earlier slot, and
// records of a key keep the order of the commits. Those locks are row
// locks, which give the transaction its id: a later run of the partition
// (here or elsewhere) reads the table until every transaction that had an
// id at its start has ended, so the rows of a slot of an earlier run, its
// COMMIT held, still go first. Resolve every slot, once: Fill after a
// commit, Dirty after a rollback, Abandon when the transaction may still
// commit. A nil Slot does nothing.
type Slot struct {
	p     *partition
	seq   uint64
	run   uint64 // the partition's run it was taken in
	state slotState
	rows  []row
	bytes int // of rows, counted in the partition's heldBytes and the relay's handed
}

type slotState uint8

const (
	slotPending slotState = iota
	slotRows              // filled: publish these rows
	slotDirty             // read the table instead
)

// Reserve takes the next slot of a partition this relay runs. It returns
// nil when the relay does not run the partition, or stops running it (its
// Run's context has ended): another replica may own it, so the writer
// must leave a mark in outbox_marks in its transaction (whose owner then
// reads the table before publishing what it is handed).
func (r *Relay) Reserve(partition int32) *Slot {
	r.mu.Lock()
	p := r.parts[partition]
	r.mu.Unlock()
	if p == nil {
		return nil
	}
	p.hmu.Lock()
	defer p.hmu.Unlock()
	if !p.running {
		return nil
	}
	p.seq++
	s := &Slot{p: p, seq: p.seq, run: p.runs}
	p.slots = append(p.slots, s)
	return s
}

// Fill resolves the slot with the rows its transaction committed for the
// partition, in id order (rows of other partitions are left out).
func (s *Slot) Fill(rows []Row) {
	if s == nil {
		return
	}
	n := 0
	for _, x := range rows {
		if x.Partition == s.p.id {
			n++
		}
	}
	mine, size, now := make([]row, 0, n), 0, time.Now()
	for _, x := range rows {
		if x.Partition != s.p.id {
			continue
		}
		if x.CreatedAt.IsZero() {
			s.Dirty()
			return
		}
		mine = append(mine, row{rowRef: rowRef{x.ID, x.CreatedAt}, topic: x.Topic, key: x.Key, value: x.Value, headers: x.Headers, at: now})
		size += len(x.Key) + len(x.Value) + len(x.Headers)
	}
	slices.SortFunc(mine, func(a, b row) int { return cmp.Compare(a.id, b.id) })
	s.resolve(slotRows, mine, size)
	s.p.signalWorks()
}

// Dirty resolves the slot without rows: when the relay reaches it, it reads
// the table, which holds whatever the transaction committed (nothing, if it
// rolled back). For a transaction that has ended and does not hand its rows
// over.
func (s *Slot) Dirty() {
	if s == nil {
		return
	}
	s.resolve(slotDirty, nil, 0)
	s.p.signalWorks()
}

// Abandon resolves the slot of a transaction that may still commit: an
// attempt that failed at or after COMMIT (one without an answer may take
// effect, even later). It is Dirty, and the relay goes on reading the
// table until every transaction that has an id now, the attempt's among
// them, has ended, so that rows the attempt commits after the read go out
// before those of a transaction that waited for its locks.
func (s *Slot) Abandon() {
	if s == nil {
		return
	}
	s.p.awaitDue.Store(true)
	s.resolve(slotDirty, nil, 0)
}

// resolve resolves the slot as st, with rows of size bytes (keys, values,
// headers).
func (s *Slot) resolve(st slotState, rows []row, size int) {
	p := s.p
	p.hmu.Lock()
	// A slot of an earlier run is in no queue: its rows are not held, and
	// the run reads them from the table (partition.awaitDue).
	queued := s.run == p.runs && p.running
	if s.state == slotPending {
		if st == slotRows && queued && !p.holdRows(len(rows), size) {
			st, rows, size = slotDirty, nil, 0
		}
		s.state, s.rows = st, rows
		if queued {
			s.bytes = size
			p.compact(s)
		}
	}
	p.hmu.Unlock()
	p.signal()
}

// holdRows counts n rows of size bytes held in the queue and says true, unless
// they go past maxHeld rows or the relay's budget (handed) while the queue
// holds rows already: the first are held whatever their size and whatever
// the other partitions hold. p.hmu is held.
func (p *partition) holdRows(n, size int) bool {
	if n == 0 {
		return true // an empty slot, which compact drops
	}
	first := p.held == 0
	if !first && p.held+n > p.maxHeld || !p.handed.take(size, first) {
		return false
	}
	p.held += n
	p.heldBytes += size
	return true
}

// dropHeld forgets the rows the queue holds, their bytes given back to the
// relay's budget. p.hmu is held.
func (p *partition) dropHeld() {
	p.handed.give(p.heldBytes)
	p.held, p.heldBytes = 0, 0
}

// compact drops from the queue what s, just resolved, makes redundant:
// s itself when it was filled with no rows, and one of two dirty slots
// side by side, which say the same (read the table) wherever a pass stops
// taking slots. While no pass takes them (one stuck in a publish Kafka
// does not answer) and commits go on, the queue then holds at most about
// twice as many slots as are pending or filled, which maxHeld and the
// relay's budget bound, rather than one more per commit.
func (p *partition) compact(s *Slot) {
	i, ok := slices.BinarySearchFunc(p.slots, s.seq, func(x *Slot, seq uint64) int { return cmp.Compare(x.seq, seq) })
	if !ok {
		return
	}
	lo, hi := max(i-1, 0), min(i+2, len(p.slots))
	kept := lo
	for _, x := range p.slots[lo:hi] {
		empty := x.state == slotRows && len(x.rows) == 0
		twice := x.state == slotDirty && kept > 0 && p.slots[kept-1].state == slotDirty
		if !empty && !twice {
			p.slots[kept] = x
			kept++
		}
	}
	p.slots = slices.Delete(p.slots, kept, hi)
}

// startHandoff opens the queue when Run starts, and returns the run's
// number; what was reserved before is in the table, which Run reads first.
func (p *partition) startHandoff() uint64 {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	p.running, p.slots, p.filter, p.reads = true, nil, nil, nil
	p.dropHeld()
	p.runs++
	return p.runs
}

// stopHandoff closes the queue of run (startHandoff's number) when Run's
// context ends, and again when Run returns: the rows are in the table for
// the partition's next owner. From then on a writer gets no slot, so it
// leaves a mark for the owner, which another replica may already be, and
// which reads the table on it before publishing what follows.
func (p *partition) stopHandoff(run uint64) {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	if p.runs != run {
		return // a later Run's queue
	}
	p.running, p.slots, p.filter, p.reads = false, nil, nil, nil
	p.dropHeld()
}

// minSlotsCap is the capacity of the hand-off queue's array kept however
// few slots it holds: below it, reallocating would only churn.
const minSlotsCap = 256

// takeSlots removes the resolved slots at the head of the queue and returns
// their rows, less those a read of the table already took, and whether one
// of them was dirty.
func (p *partition) takeSlots() (rows []row, dirty bool) {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	n, freed := 0, 0
	for ; n < len(p.slots) && p.slots[n].state != slotPending; n++ {
		s := p.slots[n]
		dirty = dirty || s.state == slotDirty
		p.held -= len(s.rows)
		freed += s.bytes
		for _, x := range s.rows {
			if read, ok := p.filter[x.id]; !ok || s.seq > read {
				rows = append(rows, x)
			}
		}
	}
	p.heldBytes -= freed
	p.handed.give(freed)
	p.slots = slices.Delete(p.slots, 0, n)
	if cap(p.slots) > minSlotsCap && len(p.slots) <= cap(p.slots)/4 {
		// The queue grew while a publish hung: let that array go.
		p.slots = slices.Clone(p.slots)
	}
	// A read's ids are needed only until every slot reserved before it
	// has been taken.
	n = 0
	for ; n < len(p.reads) && (len(p.slots) == 0 || p.slots[0].seq > p.reads[n].seq); n++ {
		for _, id := range p.reads[n].ids {
			if p.filter[id] == p.reads[n].seq {
				delete(p.filter, id)
			}
		}
	}
	p.reads = slices.Delete(p.reads, 0, n)
	if len(p.reads) == 0 {
		p.filter = nil // and the map's buckets with it
	}
	return rows, dirty
}

// filterRead is one read of the table noted in the filter: the ids it took
// and the seq of the last slot reserved before it.
type filterRead struct {
	seq uint64
	ids []int64
}

// selected notes rows a read of the table took. A slot reserved before the
// read returned may belong to a transaction that committed before the
// read's snapshot: its rows are left out when it is taken. A slot reserved
// after belongs to a transaction that sends COMMIT after, so none of its
// rows can be among them.
func (p *partition) selected(rows []row) {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	if len(p.slots) == 0 || len(rows) == 0 {
		return
	}
	if p.filter == nil {
		p.filter = map[int64]uint64{}
	}
	read := filterRead{seq: p.seq, ids: make([]int64, len(rows))}
	for i, x := range rows {
		p.filter[x.id] = read.seq
		read.ids[i] = x.id
	}
	p.reads = append(p.reads, read)
}
