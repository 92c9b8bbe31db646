package handlers

import (
	"context"
)

// CleanupIdle is the periodic cleanup of this batch's partition: it ends the
// partition's ended leases and deletes its released or expired rows idle
// longer than maxAge seconds. It returns how many locks it touched.
func (b *Batch) CleanupIdle(ctx context.Context, maxAge float64) (int, error) {
	p := b.env.Partition
	names, _, err := (&applier{Batch: b}).sweep(ctx, sweepFilter{partition: &p, maxAge: &maxAge})
	return len(names), err
}
