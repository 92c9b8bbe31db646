package worker

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// maintain runs every CleanupInterval: each owned partition's idle rows are
// cleaned up, and old request outcomes and history are pruned
// (docs/design.md "Maintenance").
func (w *Worker) maintain(ctx context.Context) {
	t := time.NewTicker(w.cfg.CleanupInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		owned := slices.Collect(maps.Values(w.parts))
		w.mu.Unlock()
		for _, p := range owned {
			// Not while a stall holds the partition's writes (stallGate);
			// one let go meanwhile is its next owner's.
			for ctx.Err() == nil && p.hold(ctx) == nil && !p.letGo() {
				full, err := w.cleanupPartition(ctx, p)
				if errors.Is(err, errStalled) {
					continue // held above
				}
				if errors.Is(err, errLetGo) {
					break // another's already
				}
				if err != nil && ctx.Err() == nil {
					w.log.Warn().Err(err).Int32("partition", p.id).Msg("periodic cleanup")
				}
				if err != nil || !full {
					break // done; on an error the next interval tries again
				}
			}
		}
		for {
			n, err := w.cfg.Store.Prune(ctx, w.cfg.RequestRetention, w.cfg.EventsRetention, 10000)
			if err != nil && ctx.Err() == nil {
				w.log.Warn().Err(err).Msg("pruning old outcomes and history")
			}
			if err != nil || n < 10000 {
				break
			}
		}
	}
}

// cleanupPartition runs one bounded transaction of a partition's periodic
// cleanup and returns whether one of its statements reached its bound
// (handlers.MaxSweep): more may be due, for another transaction. Not the
// locks it touched: the leases of one shared or semaphore lock are as many
// rows.
func (w *Worker) cleanupPartition(ctx context.Context, p *partition) (bool, error) {
	id := p.id
	var full bool
	var caused []topics.Event
	err := w.writeTx(ctx, w.cfg.Store.InTx, func(tx pgx.Tx) (*handlers.Batch, error) {
		if _, err := store.LockOffset(ctx, tx, w.cfg.Group, w.cfg.Names.Commands, id); err != nil {
			return nil, err
		}
		if err := p.mayWrite(); err != nil {
			return nil, err // lost, or stalled, while it waited for the row
		}
		if p.letGo() {
			// Revoked while it waited for the row: the revoke waits for no
			// cleanup, so the partition may be its next owner's already.
			// Checked under the row, which the next owner's transactions
			// take first: one revoked after this commits before them.
			return nil, errLetGo
		}
		b := handlers.NewBatch(tx, w.env(id))
		var err error
		_, full, caused, err = b.CleanupIdle(ctx, topics.DefaultMaxAgeSeconds)
		return b, err
	})
	if err != nil {
		return false, err
	}
	w.cfg.Metrics.Events("", caused)
	return full, nil
}
