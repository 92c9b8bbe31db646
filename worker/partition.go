package worker

import (
	"cmp"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/store"
)

// unknownOffset is a partition's expected offset before its first batch
// reads the stored one.
const unknownOffset = -2

// partition is the work beside the batches of one owned partition: its
// expiry scheduler and its relay, stopped together. Its records are applied
// by an applier, with other partitions' records of the same polls.
type partition struct {
	w    *Worker
	id   int32
	ctx  context.Context // ended when the partition is let go or restarted (takenOver)
	wake chan struct{}   // a batch committed: the next expiry may be sooner
	// pending counts the segments submitted and not yet applied or dropped:
	// a revoked partition is let go once it is zero.
	pending sync.WaitGroup
	// revoking ends when the partition is being revoked or let go: a batch
	// failing over and over drops it, and a loss's check stops, instead of
	// holding the rebalance.
	revoking context.Context
	revoke   context.CancelFunc
	// dropped is set when a failing batch dropped its records: its later
	// segments, queued behind, are dropped too, for applying them would
	// move the stored offset past the dropped records.
	dropped atomic.Bool
	// sleepsUntil is when the expiry scheduler will look again (unix ns), 0
	// while it is awake.
	sleepsUntil atomic.Int64
	// retrying is set while the expiry scheduler waits to retry a
	// database failure: any committed batch wakes it (wakeScheduler).
	retrying atomic.Bool
	cancel   context.CancelFunc
	// finished is closed when its scheduler and relay have returned.
	finished chan struct{}
	// lost is set when the partition is another member's already (letGo:
	// the client lost it, or let it go while a stall held it): its relay
	// is stopped (stopRelay), and its scheduler and cleanup write nothing
	// more (hold, stalled).
	lost      atomic.Bool
	stopRelay context.CancelFunc
	// stallEpoch is the worker's count of stalls when Kafka assigned the
	// partition (kept across restarts): its writes wait only for the
	// confirmation of later ones (stallGate).
	stallEpoch uint64
	// expected is the next offset the stored one should be, known after the
	// first batch; only the applier uses it.
	expected int64
	// stored is the next offset PostgreSQL holds as last known here (a
	// batch committed, a move of it, or Lag's read), unknownOffset before:
	// Lag's while PostgreSQL does not answer.
	stored atomic.Int64
	// resumed is the stored offset the partition resumed from when
	// assigned (knowResumed), unknownOffset when none was stored: its first
	// batch, which knows no expected offset yet, takes one found below it
	// (or gone) as moved back (txn.offsets), as a later batch would.
	resumed atomic.Int64
	lane    int // the applier of its records, fixed while owned
	// seek is where the client is to fetch from after the applier moved the
	// stored offset back (lostRecords); the poll loop moves it there.
	seek atomic.Pointer[store.Position]
	// losing is set, under w.mu by the poll loop, from a loss of the
	// partition's records until the client fetches from the stored offset
	// again (seekRewound): what is polled meanwhile comes from the client's
	// own reset point, so it is dropped, to be read again from there.
	losing bool
	// lossAgain is another loss the client reported while losing (under
	// w.mu, poll loop): the check running may have asked the broker before
	// it, so its seek is not made and the partition is checked again.
	lossAgain *kgo.ErrDataLoss
	// refetch is set (under w.mu, poll loop) when the client reported a
	// batch too large to read: while the partition was stopped or losing,
	// which queueTooLarge leaves alone, and when it queues the batch's
	// skip. The client fetches the partition no further until a seek, so
	// its next seek is made even where it is the client's position
	// already (seekRewound). A restart carries it over.
	refetch bool
}

// newPartition starts a partition's scheduler and relay under parent (the
// serving context: the worker's hard stop or a withdrawal, not Run's
// context): a revoked partition's records are applied first, so shutdown
// drains instead of rolling back.
func (w *Worker) newPartition(parent context.Context, id int32) *partition {
	return w.startPartition(parent, id, w.stall.current())
}

// startPartition is newPartition for a partition assigned at stallEpoch.
func (w *Worker) startPartition(parent context.Context, id int32, stallEpoch uint64) *partition {
	ctx, cancel := context.WithCancel(parent)
	p := &partition{w: w, id: id, ctx: ctx, wake: make(chan struct{}, 1), cancel: cancel, expected: unknownOffset,
		finished: make(chan struct{}), stallEpoch: stallEpoch}
	p.stored.Store(unknownOffset)
	p.resumed.Store(unknownOffset)
	p.revoking, p.revoke = context.WithCancel(ctx)
	var both sync.WaitGroup
	rctx, stopRelay := context.WithCancel(ctx)
	p.stopRelay = stopRelay
	both.Go(func() { p.scheduleExpiry(ctx) })
	both.Go(func() {
		if err := w.cfg.Relay.RunHeld(rctx, id, p.hold); err != nil && rctx.Err() == nil {
			w.log.Error().Err(err).Int32("partition", id).Msg("relay stopped")
		}
	})
	w.wg.Go(func() { both.Wait(); close(p.finished) })
	return p
}

// hold waits while a stall of the process since the partition's assignment
// is not confirmed harmless (stallGate): nil once it may write, ctx's error
// or errLetGo when it ended first.
func (p *partition) hold(ctx context.Context) error {
	if p.lost.Load() {
		return errLetGo // another's already: a stall may have ended since it was lost
	}
	if p.w.stall.hold(ctx, p.revoking.Done(), p.id, p.stallEpoch) {
		return nil
	}
	return cmp.Or(ctx.Err(), errLetGo)
}

// mayWrite is hold without the wait, for a transaction as it begins (each
// attempt: the store retries after a pause a stall may fall in) and once
// it holds the partition's offset row: errLetGo for a partition another
// member has already (lost), maybe since the transaction began;
// errStalled while a stall holds it.
func (p *partition) mayWrite() error {
	if p.lost.Load() {
		return errLetGo
	}
	if _, held := p.w.stall.holds(p.id, p.stallEpoch); held {
		return errStalled
	}
	return nil
}

// errLetGo is hold's error when the partition was let go while it waited.
var errLetGo = errors.New("the partition was let go")

// logger is the worker's logger, naming the partition.
func (p *partition) logger() zerolog.Logger {
	return p.w.log.With().Int32("partition", p.id).Logger()
}

// letGo reports whether the partition's records may be dropped from a
// failing batch: it is stopped or being revoked.
func (p *partition) letGo() bool { return p.revoking.Err() != nil }

// stopped reports whether the partition's records are no longer applied:
// it was let go, restarted, or dropped from a failing batch.
func (p *partition) stopped() bool { return p.ctx.Err() != nil || p.dropped.Load() }

// restart starts partition old, stopped by takenOver, again once its
// scheduler and relay have returned (the new relay then reads the table
// first: the other replica's rows go out before this one's next) and delay
// has passed, unless it was let go meanwhile; only a restart made, and
// only when counted (a takeover's), is counted (RestartMetrics). It fetches from the stored offset: the records
// polled before that are dropped (losing), as those polled for old were (the
// poll loop queues none for a stopped partition).
func (w *Worker) restart(old *partition, delay time.Duration, counted bool) {
	wait := time.NewTimer(delay)
	defer wait.Stop()
	<-old.finished
	select {
	case <-w.halted.Done():
		return
	case <-wait.C:
	}
	w.mu.Lock()
	if w.parts[old.id] != old || w.halted.Err() != nil || w.Withdrawn() { // not after stopAll, nor for a withdrawal
		w.mu.Unlock()
		return
	}
	p := w.startPartition(w.serving(), old.id, old.stallEpoch) // as assigned then: a restart is no assignment
	p.lane, p.losing, p.refetch = old.lane, true, old.refetch
	w.parts[p.id] = p
	w.mu.Unlock()
	if counted {
		w.restarted()
	}
	w.log.Info().Int32("partition", p.id).Msg("partition restarted")
	w.retry(p.revoking, p.logger(), "reading the stored offset of a restarted partition failed", nil, func(ctx context.Context) error {
		return w.seekStored(ctx, p)
	})
}

// A partition restarted again soon after its last restart waits first:
// while two replicas both apply it (a stale one until its client learns it
// was dropped), each commit of one restarts the other, which drops the
// records it polled, fetches them again and waits for its relay; the delay
// keeps that from spinning. It grows from restartFirstDelay, doubling, to
// restartMaxDelay, and is forgotten after restartQuiet without a restart.
const (
	restartFirstDelay = 100 * time.Millisecond
	restartMaxDelay   = 5 * time.Second
	restartQuiet      = 10 * time.Second
)

// restartLog is a partition's last restart.
type restartLog struct {
	at    time.Time // when it was due
	delay time.Duration
}

// restartDelay returns how long partition id waits before it restarts at
// now, and notes the restart.
func (w *Worker) restartDelay(id int32, now time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	last := w.restarts[id]
	delay := time.Duration(0)
	if !last.at.IsZero() && now.Sub(last.at) < restartQuiet {
		delay = min(max(2*last.delay, restartFirstDelay), restartMaxDelay)
	}
	w.restarts[id] = restartLog{at: now.Add(delay), delay: delay}
	return delay
}
