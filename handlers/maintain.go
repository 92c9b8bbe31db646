package handlers

import (
	"context"

	"github.com/omninode/lockworker/topics"
)

// CleanupIdle is the periodic cleanup of this batch's partition: it ends the
// partition's ended leases and deletes its released or expired rows idle
// longer than maxAge seconds, at most MaxSweep of each. It returns how many
// locks it touched and the events it caused (for metrics; the outbox has them
// already).
func (b *Batch) CleanupIdle(ctx context.Context, maxAge float64) (int, []topics.Event, error) {
	p := b.env.Partition
	a := &applier{Batch: b}
	names, _, err := a.sweep(ctx, sweepFilter{partition: &p, maxAge: &maxAge, limit: MaxSweep})
	return len(names), a.caused, err
}
