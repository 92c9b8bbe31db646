package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/store"
)

// DefaultUnreachableTimeout is Config.UnreachableTimeout's default: longer
// than PostgreSQL takes to restart, so that a restart moves no partition,
// and short beside the outage of one replica's network to it.
const DefaultUnreachableTimeout = 15 * time.Second

// How often watchPostgres probes PostgreSQL, and how long it waits for each
// step of a probe (a network partition answers nothing): a probe starts a
// second after the one before began, or as it ends if it took longer. A
// replica withdrawn rejoins after rejoinAfter probes answered in a row, and
// its pool answering too (poolAnswers): a link that flaps does not make it
// rebalance at each answer, nor take partitions while its pool's slots are
// still held by connection attempts the cut left hanging.
const (
	probeEvery   = time.Second
	probeTimeout = 2 * time.Second
	rejoinAfter  = 3
	// A withdrawn replica's probe has as long as the timeout, within
	// these: past a resolver's 5 s try, not so long a rejoin waits on it.
	withdrawnProbeMin = 5 * time.Second
	withdrawnProbeMax = 15 * time.Second
	// A rejoin's check that failed is made again after a delay doubling
	// from the first to the last (store.Backoff), not at every probe:
	// Kafka refusing the lock.acquired topic refuses at once, and the
	// replica would log and list offsets each second for as long. The
	// last bounds how long a rejoin waits once the cause is fixed.
	rejoinCheckFirstDelay = 2 * time.Second
	rejoinCheckMaxDelay   = 30 * time.Second
)

// errWithdrawn ends the serving context when the replica withdraws; the
// relays see outbox.ErrUnreachable in it.
var errWithdrawn = fmt.Errorf("this replica withdrew, its partitions go to the other replicas: %w", outbox.ErrUnreachable)

// WithdrawMetrics is told, when Config.Metrics implements it too, when the
// replica withdraws from the commands topic for PostgreSQL not answering it
// (true) and when it takes partitions again (false). Apart from Metrics, so
// that its other implementations need not change.
type WithdrawMetrics interface {
	Withdrawn(bool)
}

// withdrawal is the context the replica's partitions and their batches
// run under, ended by a withdrawal (errWithdrawn, its cause, says the
// replica has withdrawn) and made anew by a rejoin.
type withdrawal struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// serving is the context partitions (their expiry schedulers and relays)
// and batches run under: the hard stop's, also ended by a withdrawal
// (errWithdrawn).
func (w *Worker) serving() context.Context {
	w.withdrawn.mu.Lock()
	defer w.withdrawn.mu.Unlock()
	return w.withdrawn.ctx
}

// Withdrawn says whether the replica has given its partitions up because
// PostgreSQL does not answer it (Config.UnreachableTimeout), until it
// takes partitions again: the serving context's cause.
func (w *Worker) Withdrawn() bool {
	return errors.Is(context.Cause(w.serving()), errWithdrawn)
}

// serveAgain makes a new serving context; w.withdrawn.mu held.
func (w *Worker) serveAgain() {
	w.withdrawn.ctx, w.withdrawn.cancel = context.WithCancelCause(w.hard)
}

// watchPostgres probes PostgreSQL from Run's start to its end. A replica
// that PostgreSQL has not answered for Config.UnreachableTimeout since its
// last answer gives its partitions to the others (withdraw): the probe in
// flight then is cut short at that moment. It takes partitions again once
// PostgreSQL answers and the fencing tokens are checked (rejoin). Kafka
// sees a replica cut off from PostgreSQL alone as alive, so without this
// its partitions would wait for as long as the cut lasts. When PostgreSQL
// answers no replica, all withdraw, and rejoin one by one as it comes
// back: up to a rebalance each more than waiting would cost.
// It returns once the partitions are stopped for good (w.halted: stopAll,
// Kill, a drain past its bound), when there is nothing left to give up or
// take again: probing on would only dial PostgreSQL, and, one that refuses
// at once, in a tight loop (no withdrawal made, the next probe would be due
// at once) until Run ends.
func (w *Worker) watchPostgres(ctx context.Context) {
	if w.cfg.UnreachableTimeout < 0 {
		return
	}
	s := probeState{answered: time.Now()} // Run starts on a store that has just connected
	for {
		if w.halted.Err() != nil {
			return
		}
		began := time.Now()
		// Withdrawn, a probe is bounded too (resolving host names of a
		// cut-off DNS may take long): a rejoin must not wait for it.
		deadline := began.Add(min(max(w.cfg.UnreachableTimeout, withdrawnProbeMin), withdrawnProbeMax))
		if !w.Withdrawn() {
			// Cut short at the withdrawal's time, but never given less
			// than one probe's time: a process paused past it (SIGSTOP, a
			// frozen VM) probes once before it judges PostgreSQL.
			deadline = s.answered.Add(w.cfg.UnreachableTimeout)
			if least := began.Add(probeTimeout); deadline.Before(least) {
				deadline = least
			}
		}
		pctx, cancel := context.WithDeadline(ctx, deadline)
		err := w.cfg.Store.Probe(pctx, probeTimeout)
		cancel()
		if ctx.Err() != nil {
			return
		}
		w.probed(ctx, &s, err)
		next := probeEvery - time.Since(began)
		if !w.Withdrawn() {
			next = min(next, time.Until(s.answered.Add(w.cfg.UnreachableTimeout))) // the withdrawal on time
		}
		select {
		case <-ctx.Done():
			return
		case <-w.halted.Done():
			return
		case <-time.After(next):
		}
	}
}

// probeState is what watchPostgres keeps from one probe to the next.
type probeState struct {
	// answered is when PostgreSQL last answered, or when the replica
	// last rejoined, if later: it then has a whole
	// Config.UnreachableTimeout from when it takes partitions, not what
	// the rejoin's check (up to tokenFloorTimeout) left of it.
	answered time.Time
	inARow   int   // probes answered in a row
	cause    error // why the last probe but one cut short failed, for the log
	// checksFailed counts the rejoin's checks failed in a row; the next
	// is not made before checkAt.
	checksFailed int
	checkAt      time.Time
}

// probed acts on a probe's outcome, err: a replica withdraws once
// PostgreSQL has not answered it for Config.UnreachableTimeout, and
// rejoins after rejoinAfter answers in a row, its pool answering too.
func (w *Worker) probed(ctx context.Context, s *probeState, err error) {
	switch {
	case err == nil:
		s.answered = time.Now()
		s.cause = nil
		s.inARow++
		if w.Withdrawn() && s.inARow >= rejoinAfter && !time.Now().Before(s.checkAt) && w.poolAnswers(ctx) {
			w.rejoin(ctx, s)
		}
	case !w.Withdrawn() && time.Since(s.answered) >= w.cfg.UnreachableTimeout:
		s.inARow = 0
		if errors.Is(err, context.DeadlineExceeded) && s.cause != nil {
			err = s.cause // the withdrawal's own deadline cut this probe short
		}
		w.withdraw(err, time.Since(s.answered))
	default:
		s.inARow = 0
		s.cause = err
	}
}

// poolAnswers says whether the pool has a slot not held by a connection
// attempt (one the cut left hanging holds its slot until it ends) nor in
// use, and one of its connections answers within probeTimeout.
func (w *Worker) poolAnswers(ctx context.Context) bool {
	if st := w.cfg.Store.Pool.Stat(); st.ConstructingConns()+st.AcquiredConns() >= st.MaxConns() {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	return w.cfg.Store.Pool.Ping(pctx) == nil
}

// withdraw ends the serving context and stops consuming the commands
// topic: the group moves the partitions to the other replicas. The batches
// in flight end, as after Kill (one ended during its COMMIT, which may have
// committed, is told by its stored offset); the records polled are dropped,
// not applied (letGo), for the partitions' next owner to apply from the
// stored offsets; the relays stop without the database work they finish
// on a stop (outbox.ErrUnreachable), once Kafka has answered their
// publishes.
func (w *Worker) withdraw(err error, unreachable time.Duration) {
	if w.halted.Err() != nil {
		return // the partitions are stopped for good (stopAll, Kill): nothing to give up
	}
	w.log.Error().Err(err).Dur("unreachable_for", unreachable).
		Msg("PostgreSQL does not answer this replica: giving its partitions to the other replicas until it does")
	w.withdrawn.mu.Lock()
	w.withdrawn.cancel(errWithdrawn)
	w.withdrawn.mu.Unlock()
	w.withdrawnMetric(true)
	w.cl.PurgeTopicsFromConsuming(w.cfg.Names.Commands)
}

// rejoin consumes the commands topic again, once the partitions withdrawn
// are let go of and the fencing tokens are checked (RaiseTokenFloor, as at
// start): PostgreSQL may answer again as another server, an asynchronous
// standby promoted while this replica was withdrawn, whose sequence went
// back, and the partitions assigned then resume from its offsets with
// nothing to compare them with (docs/design.md "PostgreSQL lost
// transactions"). A check that fails (under TokenFloorRequire, Kafka's
// failure too) leaves the replica withdrawn, to check again at a probe
// answered after a delay (s.checkAt; rejoinCheckFirstDelay). w.mu is held
// until the serving context is new, so that no partition assigned
// meanwhile is made under the withdrawn one. A rejoin restarts s's
// answered and its count of checks failed.
func (w *Worker) rejoin(ctx context.Context, s *probeState) {
	w.mu.Lock()
	cannot := w.cannotRejoin()
	w.mu.Unlock()
	if cannot {
		return
	}
	if _, err := w.RaiseTokenFloor(ctx); err != nil {
		if ctx.Err() == nil {
			s.checksFailed++
			delay := store.Backoff(rejoinCheckFirstDelay, rejoinCheckMaxDelay, s.checksFailed)
			s.checkAt = time.Now().Add(delay)
			w.log.Error().Err(err).Int("checks_failed", s.checksFailed).Dur("check_again_in", delay).
				Msg("PostgreSQL answers this replica again, but the fencing tokens could not be checked: it stays withdrawn, and checks again at the first probe answered after check_again_in")
		}
		return
	}
	w.mu.Lock()
	if w.cannotRejoin() { // stopped for good during the check
		w.mu.Unlock()
		return
	}
	w.withdrawn.mu.Lock()
	w.serveAgain()
	w.withdrawn.mu.Unlock()
	w.mu.Unlock()
	w.withdrawnMetric(false)
	w.log.Info().Msg("PostgreSQL answers this replica again: taking partitions again")
	w.cl.AddConsumeTopics(w.cfg.Names.Commands)
	s.answered, s.checksFailed = time.Now(), 0
}

// cannotRejoin says whether the partitions withdrawn are not all let go of
// yet (the next probe tries again), or are stopped for good; w.mu held.
func (w *Worker) cannotRejoin() bool {
	return len(w.parts) > 0 || w.halted.Err() != nil
}
