package handlers

import (
	"context"

	"github.com/omninode/lockworker/topics"
)

// CleanupIdle is the periodic cleanup of this batch's partition: it ends the
// partition's ended leases and deletes its released, expired or revoked
// rows idle longer than maxAge seconds (no holders, no waiters, no
// lock-delay still running), at most MaxSweep of each. It returns how many
// locks it touched, whether one of its bounded statements reached MaxSweep
// (the ended leases' holder rows selected, the idle rows deleted: more may
// be due, for another transaction; the locks touched do not say so, as the
// leases of one shared or semaphore lock are as many holder rows), and the
// events it caused (for metrics; the outbox has them already).
func (b *Batch) CleanupIdle(ctx context.Context, maxAge float64) (n int, full bool, caused []topics.Event, err error) {
	p := b.env.Partition
	a := &applier{Batch: b}
	names, _, full, err := a.sweep(ctx, sweepFilter{partition: &p, maxAge: &maxAge, limit: MaxSweep})
	return len(names), full, a.caused, err
}
