package worker

import (
	"context"
	"sync/atomic"
)

// unknownOffset is a partition's expected offset before its first batch
// reads the stored one.
const unknownOffset = -2

// partition is the work beside the batches of one owned partition: its
// expiry scheduler and its relay, stopped together. Its batches are applied
// by the worker's applier, with the other partitions' records of the same
// polls.
type partition struct {
	w    *Worker
	id   int32
	ctx  context.Context // ended when the partition is let go
	wake chan struct{}   // a batch committed: the next expiry may be sooner
	// sleepsUntil is when the expiry scheduler will look again (unix ns), 0
	// while it is awake.
	sleepsUntil atomic.Int64
	cancel      context.CancelFunc
	// expected is the next offset the stored one should be, known after the
	// first batch; only the applier uses it.
	expected int64
}

// newPartition starts a partition's scheduler and relay under parent, which
// Run's context does not cancel: a revoked partition's last batch commits
// first, so shutdown drains instead of rolling back.
func (w *Worker) newPartition(parent context.Context, id int32) *partition {
	ctx, cancel := context.WithCancel(parent)
	p := &partition{w: w, id: id, ctx: ctx, wake: make(chan struct{}, 1), cancel: cancel, expected: unknownOffset}
	w.wg.Add(2)
	go func() { defer w.wg.Done(); p.scheduleExpiry(ctx) }()
	go func() {
		defer w.wg.Done()
		if err := w.cfg.Relay.Run(ctx, id); err != nil && ctx.Err() == nil {
			w.log.Error().Err(err).Int32("partition", id).Msg("relay stopped")
		}
	}()
	return p
}
