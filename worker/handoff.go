package worker

import (
	"context"
	"maps"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/outbox"
)

// handoff is one transaction's places in the relays' queues (outbox.Slot)
// for the partitions it writes outbox rows for. Every writer of outbox rows
// takes them after its last lock and before COMMIT, so that the relay of a
// partition publishes what it is handed in commit order without reading
// the table back. A partition no relay of this process runs may be owned by
// another replica, whose relay is not told: the transaction leaves a mark
// there (outbox_marks), and the owner's next transaction writing for that
// partition finds it and has its relay read the table first, so the rows
// written here go out before anything that followed them on the same lock.
type handoff struct {
	slots  map[int32]*outbox.Slot
	marked map[int32]bool // partitions another replica wrote for: read the table
}

// reserve takes a slot for each partition the rows are for, and queues on
// b the marks for the partitions no relay here runs and the read of the
// marks other replicas left for the others. Negative partitions (rows
// written by tools, which no relay publishes) are left alone.
func (w *Worker) reserve(rows []outbox.Row, b *pgx.Batch) *handoff {
	h := &handoff{slots: map[int32]*outbox.Slot{}, marked: map[int32]bool{}}
	var foreign []int32
	stalling := w.stall.stalled()
	for _, x := range rows {
		if _, ok := h.slots[x.Partition]; ok || x.Partition < 0 || slices.Contains(foreign, x.Partition) {
			continue
		}
		if stalling && !w.handsTo(x.Partition) {
			// Held by a stall, or another's already: its relay, running
			// here, may never publish a slot (it stops once the partition
			// is let go), so the partition's owner is left a mark. A mark
			// on a partition that stays ours only makes its relay read
			// the table.
			foreign = append(foreign, x.Partition)
			continue
		}
		if s := w.cfg.Relay.Reserve(x.Partition); s != nil {
			h.slots[x.Partition] = s
		} else {
			foreign = append(foreign, x.Partition)
		}
	}
	if len(foreign) > 0 {
		// In partition order, as every writer of marks takes their locks.
		slices.Sort(foreign)
		b.Queue(`INSERT INTO outbox_marks (source_partition) SELECT unnest($1::int[])
			ON CONFLICT (source_partition) DO UPDATE SET marked_at = now()`, foreign)
	}
	if len(h.slots) > 0 {
		b.Queue(`SELECT DISTINCT source_partition FROM outbox_marks WHERE source_partition = ANY($1)`,
			slices.Collect(maps.Keys(h.slots))).Query(func(rows pgx.Rows) error {
			var p int32
			_, err := pgx.ForEachRow(rows, []any{&p}, func() error { h.marked[p] = true; return nil })
			return err
		})
	}
	return h
}

// handsTo says whether rows of partition id go to its relay here as a
// slot while a stall is not over: it is owned, not lost, and not held.
func (w *Worker) handsTo(id int32) bool {
	w.mu.Lock()
	p, ok := w.parts[id]
	w.mu.Unlock()
	return ok && p.mayWrite() == nil
}

// committed hands the committed rows to the relays; a partition another
// replica marked is read from the table instead.
func (h *handoff) committed(rows []outbox.Row) {
	for p, s := range h.slots {
		if h.marked[p] {
			s.Dirty()
		} else {
			s.Fill(rows)
		}
	}
}

// abandon resolves the slots of an attempt that failed at or after its
// COMMIT, which may have taken effect without an answer, or still may: the
// relays read the table until it has ended (outbox.Slot.Abandon). A retry
// calls it as it starts, not once the transaction is over, as a pending
// slot holds back every slot taken after it, other transactions' too. Nil
// does nothing.
func (h *handoff) abandon() {
	if h == nil {
		return
	}
	for _, s := range h.slots {
		s.Abandon()
	}
}

// settle resolves the slots of a transaction's last attempt (nil when it
// reserved none) once the transaction is over: handed its rows when it
// committed (err nil), else abandoned.
func (h *handoff) settle(err error, written func() []outbox.Row) {
	switch {
	case h == nil:
	case err == nil:
		h.committed(written())
	default:
		h.abandon()
	}
}

// writeTx runs a transaction that writes outbox rows through the batch fn
// returns (after taking its locks), flushes the batch, and hands the rows
// to the relays. inTx runs the transaction, retrying it whole on transient
// failures: store.InTx, or InTxPausing for a caller bound to see the
// database's return sooner (the expiry scheduler). An fn
// whose batch holds rows must have written or locked a row (the
// transaction then has an id) before it returns: a relay that starts
// meanwhile waits only for transactions with an id (outbox.Slot).
func (w *Worker) writeTx(ctx context.Context, inTx func(context.Context, func(pgx.Tx) error) error,
	fn func(tx pgx.Tx) (*handlers.Batch, error)) error {
	var h *handoff // the current attempt's
	var b *handlers.Batch
	err := inTx(ctx, func(tx pgx.Tx) error {
		h.abandon() // a retry's: the previous attempt failed after taking its slot
		h = nil
		var err error
		if b, err = fn(tx); err != nil {
			return err
		}
		last := &pgx.Batch{}
		if err := b.QueueFlush(ctx, last); err != nil {
			return err
		}
		h = w.reserve(b.Written(), last)
		return tx.SendBatch(ctx, last).Close()
	})
	h.settle(err, func() []outbox.Row { return b.Written() })
	return err
}
