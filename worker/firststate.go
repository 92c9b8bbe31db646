package worker

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// PublishFirstStates publishes the state of every lock that has none yet
// (rows from before migration 009), so that the lock state topic holds
// every lock, 1000 a transaction in key order
// (handlers.Batch.PublishFirstStates), and returns how many; the relays
// send them once the partitions are consumed. A start after that finds
// none. Then it checks the lock state topic against what the last start
// found (checkStateTopicChange), and publishes every lock's state again if
// its partition count or topic ID changed.
func (w *Worker) PublishFirstStates(ctx context.Context) (int, error) {
	const page = 1000
	total := 0
	var after handlers.StateKey
	for {
		var n int
		var last handlers.StateKey // an attempt's: store.InTx may retry it
		err := w.writeTx(ctx, w.cfg.Store.InTx, func(tx pgx.Tx) (*handlers.Batch, error) {
			b := handlers.NewBatch(tx, w.env(0))
			var err error
			n, last, err = b.PublishFirstStates(ctx, after, page)
			return b, err
		})
		if err != nil {
			return total, fmt.Errorf("publishing the first lock states: %w", err)
		}
		total += n
		if n < page {
			break
		}
		after = last
	}
	if _, err := w.checkStateTopicChange(ctx); err != nil {
		return total, err
	}
	return total, nil
}

// checkStateTopicChange compares the lock state topic's topic ID and partition
// count with those the last start recorded (store.RecordedStateTopic). The
// first start records them. When they changed, a lock's current state may
// be missing from the partition its key hashes to now: in an old
// partition after partitions were added (readers take a key's records
// from its partition under the current count only), or gone with a
// deleted topic created again (a quiet lock's state is published at its
// next change only). So it publishes the state of every lock again, in
// pages in key order, records what it found, says so at WARN and returns
// how many. Should this start stop before it recorded, the next one
// publishes them again. Without a state topic, or when the topic cannot be
// described, it checks nothing.
func (w *Worker) checkStateTopicChange(ctx context.Context) (int, error) {
	topic := w.cfg.Names.State
	if topic == "" {
		return 0, nil
	}
	var found store.StateTopic
	var err error
	found.ID, found.Partitions, err = describeTopic(ctx, w.cl, topic)
	if err != nil && ctx.Err() != nil {
		return 0, fmt.Errorf("describing the lock state topic %q: %w (%w)", topic, ctx.Err(), err) // stopped
	}
	if err != nil {
		w.log.Warn().Err(err).Str("topic", topic).Msg("describing the lock state topic; not checked for added partitions or a recreated topic")
		return 0, nil
	}
	was, ok, err := w.cfg.Store.RecordedStateTopic(ctx, topic)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, w.cfg.Store.RecordStateTopic(ctx, topic, found)
	}
	found, changed := stateTopicChanged(was, found)
	if !changed {
		if found != was {
			return 0, w.cfg.Store.RecordStateTopic(ctx, topic, found)
		}
		return 0, nil
	}
	w.log.Warn().Str("topic", topic).Int("partitions", found.Partitions).Int("partitions_was", was.Partitions).
		Str("topic_id", found.ID).Str("topic_id_was", was.ID).
		Msg("the lock state topic's partition count or topic ID changed since the last start: publishing every lock's state again")
	n, err := w.RepublishStates(ctx)
	if err != nil {
		return n, err
	}
	if err := w.cfg.Store.RecordStateTopic(ctx, topic, found); err != nil {
		return n, err
	}
	w.log.Warn().Str("topic", topic).Int("locks", n).Int("partitions", found.Partitions).Str("topic_id", found.ID).
		Msg("published every lock's state again to the lock state topic")
	return n, nil
}

// stateTopicChanged compares the lock state topic as found now with the
// one recorded at an earlier start: changed when its partition count
// differs, or its topic ID (both known). It returns what to record: found,
// with the recorded ID where none was told this time (a broker too old to
// say), so that it is not erased and a later re-creation still shows.
func stateTopicChanged(was, found store.StateTopic) (store.StateTopic, bool) {
	if found.ID == "" {
		found.ID = was.ID
	}
	return found, was.Partitions != found.Partitions || was.ID != "" && was.ID != found.ID
}

// RepublishStates publishes the current state of every lock with a
// revision again (handlers.Batch.RepublishStates), 1000 a transaction in
// key order, and returns how many. The rows of a page that other
// transactions held are published after it, each alone in a transaction
// (handlers.Batch.RepublishState).
func (w *Worker) RepublishStates(ctx context.Context) (int, error) {
	const page = 1000
	inTx := func(step func(*handlers.Batch) error) error {
		return w.writeTx(ctx, w.cfg.Store.InTx, func(tx pgx.Tx) (*handlers.Batch, error) {
			b := handlers.NewBatch(tx, w.env(0))
			return b, step(b)
		})
	}
	total := 0
	var after handlers.StateKey
	for {
		var keys, skipped []handlers.StateKey // an attempt's: store.InTx may retry it
		var published int
		err := inTx(func(b *handlers.Batch) error {
			var err error
			keys, skipped, published, err = b.RepublishStates(ctx, after, page)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("publishing the lock states again: %w", err)
		}
		total += published
		for _, k := range skipped {
			var done bool
			err := inTx(func(b *handlers.Batch) error {
				var err error
				done, err = b.RepublishState(ctx, k)
				return err
			})
			if err != nil {
				return total, fmt.Errorf("publishing the state of lock %q again: %w", topics.LockKey(k.Namespace, k.Name), err)
			}
			if done {
				total++
			}
		}
		if len(keys) < page {
			return total, nil
		}
		after = keys[len(keys)-1]
	}
}
