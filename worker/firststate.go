package worker

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/handlers"
)

// PublishFirstStates publishes the state of every lock that has none yet
// (rows from before migration 009), so that the lock state topic holds
// every lock, and returns how many; the relays send them once the
// partitions are consumed. A start after that finds none.
func (w *Worker) PublishFirstStates(ctx context.Context) (int, error) {
	const page = 1000
	total := 0
	for {
		var n int
		err := w.writeTx(ctx, func(tx pgx.Tx) (*handlers.Batch, error) {
			b := handlers.NewBatch(tx, w.env(0))
			var err error
			n, err = b.PublishFirstStates(ctx, page)
			return b, err
		})
		if err != nil {
			return total, fmt.Errorf("publishing the first lock states: %w", err)
		}
		total += n
		if n < page {
			return total, nil
		}
	}
}
