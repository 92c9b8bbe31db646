package worker

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

type batchIn struct {
	records  []*kgo.Record
	polledAt time.Time
}

// partition is the work of one owned partition: its batches, its expiry
// scheduler and its relay, all stopped together.
type partition struct {
	w    *Worker
	id   int32
	in   chan batchIn
	wake chan struct{} // a batch committed: the next expiry may be sooner
	// sleepsUntil is when the expiry scheduler will look again (unix ns), 0
	// while it is awake.
	sleepsUntil atomic.Int64
	cancel      context.CancelFunc
	done        chan struct{}
}

// newPartition starts a partition's work under parent, which Run's context
// does not cancel: stop lets the in-flight batch commit first, so shutdown
// drains instead of rolling back.
func (w *Worker) newPartition(parent context.Context, id int32) *partition {
	ctx, cancel := context.WithCancel(parent)
	p := &partition{w: w, id: id, in: make(chan batchIn, 4), wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	w.wg.Add(3)
	go func() { defer w.wg.Done(); defer close(p.done); p.consume(ctx) }()
	go func() { defer w.wg.Done(); p.scheduleExpiry(ctx) }()
	go func() {
		defer w.wg.Done()
		if err := w.cfg.Relay.Run(ctx, id); err != nil && ctx.Err() == nil {
			w.log.Error().Err(err).Int32("partition", id).Msg("relay stopped")
		}
	}()
	return p
}

// submit hands a poll's records to the partition; it blocks while the
// partition is busy, which is the backpressure on polling.
func (p *partition) submit(b batchIn) {
	select {
	case p.in <- b:
	case <-p.done:
	}
}

// stop lets the in-flight batch finish, then stops the partition's work.
func (p *partition) stop() {
	close(p.in)
	<-p.done
	p.cancel()
}

func (p *partition) consume(ctx context.Context) {
	var expected int64 = -2 // not known yet: read at the first batch
	for b := range p.in {
		if ctx.Err() != nil {
			return
		}
		next, due, err := p.apply(ctx, b, expected)
		// Transient failures are retried inside apply; anything else is
		// retried here, slowly and loudly: skipping the batch would lose it.
		for attempt := 1; err != nil && !errors.Is(err, store.ErrOffsetMoved) && ctx.Err() == nil; attempt++ {
			delay := store.Backoff(time.Second, time.Minute, attempt)
			p.w.log.Error().Err(err).Int32("partition", p.id).Dur("retry_in", delay).Msg("applying batch failed")
			select {
			case <-ctx.Done():
			case <-time.After(delay):
				next, due, err = p.apply(ctx, b, expected)
			}
		}
		if errors.Is(err, store.ErrOffsetMoved) {
			p.w.log.Warn().Int32("partition", p.id).Msg("partition offset moved: another worker owns it now; stopping")
			p.cancel()
			return
		}
		if err != nil {
			return
		}
		expected = next
		p.w.cfg.Relay.Wake(p.id)
		p.wakeScheduler(due)
		// Group offsets are only for lag tooling; PostgreSQL is the truth.
		p.w.cl.MarkCommitRecords(b.records[len(b.records)-1])
		if err := p.w.cl.CommitMarkedOffsets(ctx); err != nil && ctx.Err() == nil {
			p.w.log.Debug().Err(err).Msg("committing group offsets")
		}
	}
}

// apply runs one poll's records in one transaction, retried whole on
// transient failures, and returns the next offset and when the earliest lease
// or wait it started ends (zero: none).
func (p *partition) apply(ctx context.Context, b batchIn, expected int64) (int64, time.Time, error) {
	w := p.w
	topic := w.cfg.Names.Commands
	start := time.Now()
	var next int64
	var due time.Time
	var results []result
	err := w.cfg.Store.InTx(ctx, func(tx pgx.Tx) error {
		results, due = results[:0], time.Time{}
		recs := b.records
		// The first statement locks the partition's offset row. Once the
		// stored offset is known it also advances it, in the first round
		// trip of the batch: the transaction commits both or neither.
		stored := expected
		if expected == -2 {
			var err error
			if stored, err = store.LockOffset(ctx, tx, w.cfg.Group, topic, p.id); err != nil {
				return err
			}
		}
		// Records below the stored offset were applied already: before this
		// worker got the partition, or redelivered (a fetch reset).
		for len(recs) > 0 && stored >= 0 && recs[0].Offset < stored {
			recs = recs[1:]
		}
		if len(recs) == 0 {
			next = stored
			return nil
		}
		next = recs[len(recs)-1].Offset + 1
		batch := handlers.NewBatch(tx, w.env(p.id))
		cmds := make([]topics.Command, len(recs))
		rejections := make([]*topics.Rejection, len(recs))
		valid := make([]topics.Command, 0, len(recs))
		ids := make([]string, 0, len(recs))
		for i, r := range recs {
			c, err := topics.Decode(r.Value, w.cfg.Names.ReplyPrefix)
			if err != nil {
				rejections[i] = err.(*topics.Rejection)
				continue
			}
			if c.RequestID == "" {
				c.RequestID = r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10)
			}
			cmds[i] = c
			valid = append(valid, c)
			ids = append(ids, c.RequestID)
		}
		// One round trip: the offset, the stored outcomes, and the common
		// cases of the commands that may go ahead of the rest.
		first := &pgx.Batch{}
		store.QueueAdvanceOffset(first, w.cfg.Group, topic, p.id, stored, next)
		batch.QueuePrefetch(first, ids)
		batch.QueueAtOnce(first, valid)
		if err := tx.SendBatch(ctx, first).Close(); err != nil {
			return err
		}
		for i, r := range recs {
			if rej := rejections[i]; rej != nil {
				batch.Reject(rej, b.polledAt)
				batch.Publish(w.cfg.Names.DeadLetter, r.Key, r.Value, deadLetterHeaders(r, rej))
				results = append(results, result{op: rej.Command.Operation, outcome: rej.Code, rejected: rej, offset: r.Offset})
				continue
			}
			evs, err := batch.Apply(ctx, cmds[i], b.polledAt)
			if err != nil {
				return err
			}
			results = append(results, result{op: cmds[i].Operation, outcome: outcome(cmds[i].RequestID, evs), requestID: cmds[i].RequestID, events: evs})
			due = earliest(due, dueBy(cmds[i], evs))
		}
		return batch.Flush(ctx)
	})
	if err != nil {
		return 0, time.Time{}, err
	}
	took := time.Since(start)
	w.cfg.Metrics.Batch(p.id, len(results), took)
	for _, r := range results {
		w.cfg.Metrics.Command(r.op, r.outcome, time.Since(b.polledAt))
		if len(r.events) > 0 {
			w.cfg.Metrics.Events(r.requestID, r.events)
		}
		if r.rejected != nil {
			w.cfg.Metrics.DeadLettered(r.rejected.Code)
			w.log.Warn().Int32("partition", p.id).Int64("offset", r.offset).Str("error", r.rejected.Error()).
				Msg("invalid command: answered INVALID_REQUEST where possible and copied to the dead-letter topic")
		}
	}
	return next, due, nil
}

type result struct {
	op, outcome string
	rejected    *topics.Rejection
	offset      int64
	requestID   string
	events      []topics.Event
}

// outcome names a command's result for metrics: its own answer's error code,
// queued for an acquire that must wait, or ok. The answer is the event
// carrying its request_id: events for others (an ended lease's lock.expired,
// a waiter's grant or LOCK_TIMEOUT) may come before it.
func outcome(requestID string, evs []topics.Event) string {
	for _, ev := range evs {
		switch {
		case ev.RequestID != requestID:
		case ev.ErrorCode != "":
			return ev.ErrorCode
		case ev.Type == topics.TypeQueued:
			return "queued"
		}
	}
	return "ok"
}

func deadLetterHeaders(r *kgo.Record, rej *topics.Rejection) []topics.Header {
	h := []topics.Header{
		{Key: topics.HeaderError, Value: []byte(rej.Error())},
		{Key: topics.HeaderSourceTopic, Value: []byte(r.Topic)},
		{Key: topics.HeaderSourcePartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
		{Key: topics.HeaderSourceOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
	}
	for _, x := range r.Headers {
		h = append(h, topics.Header{Key: x.Key, Value: x.Value})
	}
	return h
}

func (w *Worker) env(partition int32) handlers.Env {
	return handlers.Env{Names: w.cfg.Names, DefaultLease: w.cfg.DefaultLease, Source: "lockworker/" + w.cfg.Instance, Partition: partition}
}
