package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/internal/fetchbound"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// applyLoop applies what the poll loop queues on q, one transaction at a
// time, until q is closed and empty or ctx (the hard stop) ends.
func (w *Worker) applyLoop(ctx context.Context, q *queue) {
	defer func() {
		for _, s := range q.stop() { // left behind by a hard stop
			s.p.pending.Done()
		}
	}()
	for ctx.Err() == nil {
		segs, ok := q.take()
		if !ok {
			return
		}
		if segs[0].lost != nil {
			// Beside the applier, which goes on with other partitions: the
			// broker may not answer for this one for a while.
			w.wg.Go(func() { w.lostRecords(segs[0]) })
			continue
		}
		w.applySegments(ctx, segs)
	}
}

// part is the records of one partition in one batch, and the batches of
// it too large to read (queueTooLarge), in offset order: applied in one
// transaction, or several when the budget cuts it (decode).
type part struct {
	p        *partition
	segments int
	records  []*kgo.Record
	polled   []time.Time // per record
	skips    []*kgo.ErrDecompressTooLarge
	// Set by the transaction:
	next   int64                        // the partition's next offset (below the last record or skip: cut by the budget)
	due    time.Time                    // when the earliest lease or wait it started ends
	marked []*kgo.ErrDecompressTooLarge // the skips it dead-letters (set by decode: apply writes each)
}

// left reports whether pt has records or skipped batches at or past the
// next offset its last transaction set: the budget cut it (decode).
func (pt *part) left() bool {
	return len(pt.records) > 0 && pt.records[len(pt.records)-1].Offset >= pt.next ||
		len(pt.skips) > 0 && pt.skips[len(pt.skips)-1].NextOffset > pt.next
}

// applySegments applies segments in one transaction, retried until it
// commits or ctx ends, then what the budget left out (decode) in the next,
// until nothing is left. A partition whose offset another replica moved is
// restarted (takenOver) and the rest applied without it; while a failing
// batch is retried, partitions being revoked are dropped from it (their next
// owner starts from the stored offset), as soon as they are revoked. Every
// segment's pending count is released at the end, applied or dropped, or
// as soon as this batch no longer applies its partition (dropped, taken
// over, or stopped before the batch began): the revoke does not wait for
// the rest of the batch.
func (w *Worker) applySegments(ctx context.Context, segs []segment) {
	released := map[*partition]int{} // segments released before the end (release)
	defer func() {
		for _, s := range segs {
			if released[s.p] > 0 {
				released[s.p]--
				continue
			}
			s.p.pending.Done()
		}
	}()
	parts := group(segs)
	txCtx := w.serving() // ended too by a withdrawal (watchPostgres)
	// The last attempt whose COMMIT went with writes, until PostgreSQL
	// says it did not commit: to tell a lost COMMIT from a takeover, and
	// report what it did if it committed.
	var sent *sentAttempt
	poison := quarantine{}
	start := time.Now()
	retriedNow := false // a refusal that did not reproduce was retried at once
	// release releases the segments of a part this batch no longer
	// applies, at once: its partition's revoke, or loss, waits for them,
	// and must not wait for the rest of the batch to be cured.
	release := func(pt *part) {
		released[pt.p] += pt.segments
		for range pt.segments {
			pt.p.pending.Done()
		}
	}
	for _, s := range segs {
		if !slices.ContainsFunc(parts, func(pt *part) bool { return pt.p == s.p }) {
			release(&part{p: s.p, segments: 1}) // stopped: group left it out
		}
	}
	// dropRevoked drops the parts whose partition is being revoked.
	dropRevoked := func() {
		parts = slices.DeleteFunc(parts, func(pt *part) bool {
			if !pt.p.letGo() {
				return false
			}
			w.drop(pt.p) // with what was polled for it since
			release(pt)
			return true
		})
	}
	attempt := 1
	// carry goes on after a commit with the parts it left records or
	// skips of (the budget cut it: decode), in a transaction of their
	// own, the parts done released.
	carry := func() {
		parts = slices.DeleteFunc(parts, func(pt *part) bool {
			if pt.left() {
				return false
			}
			release(pt)
			return true
		})
		sent, start, attempt, retriedNow = nil, time.Now(), 1, false
	}
	for len(parts) > 0 {
		if !w.holdParts(txCtx, parts) {
			if ctx.Err() != nil {
				return
			}
			dropRevoked() // let go while held; a withdrawal's batch fails below
			if len(parts) == 0 {
				return
			}
		}
		results, err := w.applyTx(txCtx, parts, &sent, poison, false)
		if err == nil {
			w.committed(parts, results, time.Since(start))
			carry()
			continue
		}
		if errors.Is(err, errStalled) {
			continue // held above, from the next attempt on
		}
		if errors.Is(err, errLetGo) {
			dropRevoked() // another's already: its records are not applied here
			continue
		}
		if ctx.Err() != nil {
			return
		}
		var moved *store.OffsetMovedError
		if errors.As(err, &moved) {
			was := slices.Clone(parts)
			var rest []*part
			rest, err = w.settleMoved(txCtx, parts, moved, &sent, start)
			switch {
			case err == nil && rest == nil:
				carry() // committed by an earlier attempt
				continue
			case err == nil:
				for _, pt := range was {
					if !slices.Contains(rest, pt) {
						release(pt) // restarted (takenOver)
					}
				}
				parts = rest
				continue
			case errors.Is(err, errRevoking):
				dropRevoked() // as after backOff; the rest is retried
				continue
			}
		}
		if refusedData(err) {
			// A command PostgreSQL refuses fails every retry of its batch:
			// find it, and answer it as invalid instead of applying it.
			perr := w.findPoison(txCtx, parts, poison, err)
			switch {
			case perr == nil, errors.Is(perr, errStalled):
				continue // errStalled: held above, from the next attempt on
			case errors.Is(perr, errLetGo):
				dropRevoked()
				continue
			case errors.Is(perr, errProbed) && !retriedNow:
				// The whole batch was accepted when probed, or the probes
				// disagreed: the refusal came and went, from what another
				// transaction did meanwhile (a row it wrote or removed),
				// not from a command. Retry at once, once: a batch refused
				// again without a culprit is retried below, slowly and
				// loudly, for then something the probe cannot see refuses
				// it.
				retriedNow = true
				w.log.Warn().Err(err).Ints32("partitions", partitionIDs(parts)).
					Msg("PostgreSQL refused a batch, but the refusal did not reproduce when probed: retrying it now")
				continue
			case !errors.Is(perr, errProbed):
				err = perr
			}
		}
		if ctx.Err() != nil {
			return // a hard stop (Kill, a drain past its bound) ended it
		}
		// Transient failures are retried inside InTx; anything else is
		// retried here, slowly and loudly: skipping the batch would lose it.
		delay := store.Backoff(w.batchRetryBase, time.Minute, attempt)
		attempt++
		if txCtx.Err() == nil {
			w.log.Error().Err(err).Ints32("partitions", partitionIDs(parts)).Dur("retry_in", delay).Msg("applying batch failed")
		} // else withdrawn: the revoke of its partitions is on its way
		if !w.backOff(ctx, parts, delay) {
			return
		}
		dropRevoked()
	}
}

// holdParts waits while a stall of the process holds a partition of the
// batch (stallGate): false when ctx ended or any partition of the batch
// is being let go first (a revoke waits for the batch's segments).
func (w *Worker) holdParts(ctx context.Context, parts []*part) bool {
	if !w.stall.stalled() {
		return true
	}
	held, stop := whileHeld(ctx, parts)
	defer stop()
	for _, pt := range parts {
		if !w.stall.hold(held, nil, pt.p.id, pt.p.stallEpoch) {
			return false
		}
	}
	return true
}

// backOff waits delay before a failing batch is retried, less if one of its
// partitions is being revoked meanwhile (it is dropped at once); false when
// ctx ended.
func (w *Worker) backOff(ctx context.Context, parts []*part, delay time.Duration) bool {
	held, stop := whileHeld(ctx, parts)
	defer stop()
	wait, cancel := context.WithTimeout(held, delay)
	defer cancel()
	<-wait.Done()
	return ctx.Err() == nil
}

// whileHeld is ctx, also cancelled as soon as one of parts' partitions is
// being revoked: what a batch waits for (backOff, wentBack's Kafka read)
// must not hold a revoke, which waits for the batch's pending segments.
// stop releases it.
func whileHeld(ctx context.Context, parts []*part) (held context.Context, stop func()) {
	held, cancel := context.WithCancel(ctx)
	stops := make([]func() bool, len(parts))
	for i, pt := range parts {
		stops[i] = context.AfterFunc(pt.p.revoking, cancel)
	}
	return held, func() {
		for _, s := range stops {
			s()
		}
		cancel()
	}
}

// errRevoking is wentBack's check ended because a partition of the batch
// is being revoked: the caller drops it, as after backOff.
var errRevoking = errors.New("a partition of the batch is being revoked")

func partitionIDs(parts []*part) []int32 {
	ids := make([]int32, len(parts))
	for i, pt := range parts {
		ids[i] = pt.p.id
	}
	return ids
}

// group orders segments by partition, keeping each partition's records in
// poll order, and drops partitions that were stopped since.
func group(segs []segment) []*part {
	byID := map[int32]*part{}
	var parts []*part
	for _, s := range segs {
		if s.p.stopped() {
			continue
		}
		pt := byID[s.p.id]
		if pt == nil || pt.p != s.p {
			pt = &part{p: s.p}
			byID[s.p.id] = pt
			parts = append(parts, pt)
		}
		pt.segments++
		pt.records = append(pt.records, s.records...)
		if s.tooLarge != nil {
			pt.skips = append(pt.skips, s.tooLarge)
		}
		for range s.records {
			pt.polled = append(pt.polled, s.polledAt)
		}
	}
	// One order for every transaction's offset row locks.
	slices.SortFunc(parts, func(a, b *part) int { return int(a.p.id - b.p.id) })
	return parts
}

// settleMoved handles a partition whose stored offset was not the expected
// one. Either an earlier attempt of this batch committed (its COMMIT's
// answer was lost and InTx retried): PostgreSQL says *sent, the last
// attempt whose COMMIT went with writes, committed, and nil is returned as
// for success (the only nil rest: a restart returns the others, maybe
// none), what it did reported (foundCommitted). Or another replica
// moved it: that partition is restarted from the stored offset
// (takenOver) and the other parts are returned to retry. Or it went back
// (wentBack): the token floor is checked first.
func (w *Worker) settleMoved(ctx context.Context, parts []*part, moved *store.OffsetMovedError, sent **sentAttempt,
	start time.Time) ([]*part, error) {
	back, err := w.wentBack(ctx, parts, moved)
	switch {
	case err != nil:
		return nil, err // the batch is retried (errRevoking: less what is revoked), the partition not restarted
	case back:
		return w.restartMoved(parts, moved, true), nil
	}
	committed, results, err := w.foundCommitted(ctx, parts, sent)
	if err != nil {
		return nil, err
	}
	if committed {
		w.committed(parts, results, time.Since(start))
		return nil, nil
	}
	return w.restartMoved(parts, moved, false), nil
}

// sentAttempt is what an attempt of a batch whose COMMIT went with writes
// did, kept in case the COMMIT's answer is lost: a retry that finds it
// committed reports it then (foundCommitted), as its answer would have.
type sentAttempt struct {
	xid     int64 // its transaction's
	results []result
	parts   map[*part]sentPart
}

// sentPart is what an attempt set of one part for committed to report,
// which the retry that finds the attempt committed has set again (decode)
// and stops before apply sets it.
type sentPart struct {
	due    time.Time                    // its leases' and waits' earliest end: the scheduler's wake
	marked []*kgo.ErrDecompressTooLarge // the skips it dead-lettered
}

// foundCommitted reports whether *sent (nil: no attempt's COMMIT went with
// writes) committed, its answer lost, and then its results, each part's
// due time and dead-lettered skips set back (sentPart) for committed to
// report. Only *sent can have committed writes: an attempt with writes
// finds the batch's offsets where it expects them, so none before it
// committed, and after one that committed no attempt finds anything left
// to write. An attempt that wrote nothing (a partition's first batch, all
// of it found applied) moved no offset, whether it committed or not. One
// that did not commit never will (the retry asking waited for its offset
// row locks, so it has ended): *sent is cleared, not asked about again.
//
// When PostgreSQL cannot say, the error is returned with each part's due
// time no later than *sent's: should the batch be done without the answer
// (applyTx), its scheduler is woken for the leases *sent may have
// started, early at worst, not up to maxExpirySleep late. Its skips are
// not set back, as its results are not returned: whoever applied the
// batch wrote their dead-letter markers, and the client is moved past
// them either way (committed, from the part's skips); only their report
// may be missing (applyTx's warning says so), where setting them back
// would report twice those another replica applied and reported.
func (w *Worker) foundCommitted(ctx context.Context, parts []*part, sent **sentAttempt) (bool, []result, error) {
	if *sent == nil {
		return false, nil, nil
	}
	committed, err := w.cfg.Store.AnyCommitted(ctx, []int64{(*sent).xid})
	if err == nil && !committed {
		*sent = nil
		return false, nil, nil
	}
	for _, pt := range parts {
		sp := (*sent).parts[pt]
		if err != nil {
			pt.due = earliest(pt.due, sp.due)
			continue
		}
		pt.due, pt.marked = sp.due, sp.marked
	}
	if err != nil {
		return false, nil, fmt.Errorf("asking whether an earlier attempt committed: %w", err)
	}
	w.log.Warn().Msg("batch found committed on retry (connection lost during COMMIT); not applying it again")
	return true, (*sent).results, nil
}

// restartMoved restarts the partition whose offset moved (takenOver; back:
// it went back, wentBack) and returns the other parts.
func (w *Worker) restartMoved(parts []*part, moved *store.OffsetMovedError, back bool) []*part {
	rest := parts[:0]
	for _, pt := range parts {
		if pt.p.id != moved.Partition {
			rest = append(rest, pt)
			continue
		}
		w.takenOver(pt.p, back)
	}
	return rest
}

// wentBack reports whether the moved partition's stored offset is below the
// one this worker expected (at its first batch: resumed from) or gone, and
// if so checks the fencing token floor (RaiseTokenFloor, Kafka read
// included) before the partition applies anything again, so that the
// commands it applies again (their outcomes lost too) and every other
// grant do not hand out published tokens again. Every batch, of any
// replica, moves an offset forward from where it found it; this worker's
// own moves back (rewindLost) set its expected offset before any batch of
// the partition runs again. So a lower offset is
// PostgreSQL having lost committed transactions (a restore, an
// asynchronous standby promoted while this worker ran), or another replica
// having moved it back because the commands topic lost records or was
// created again (checkLogEnds, CheckTopicID), when the check finds the
// sequence ahead. The check failing (under TokenFloorRequire) is returned:
// the batch is retried, and the check with it, until it succeeds.
//
// The check runs while the batch's segments are pending, so a revoke of
// any of its partitions ends it (whileHeld, as backOff): errRevoking, and
// the caller drops what is revoked. The check then runs again with the
// rest of the batch if the partition that went back stays; if it is the
// one revoked, its next owner compares with the group's offset committed
// to Kafka where it resumes (knowResumed), and checks then (docs/design.md
// "PostgreSQL lost transactions").
func (w *Worker) wentBack(ctx context.Context, parts []*part, moved *store.OffsetMovedError) (bool, error) {
	stored, err := w.cfg.Store.Offsets(ctx, w.cfg.Group, w.cfg.Names.Commands)
	if err != nil {
		return false, fmt.Errorf("reading the stored offset that moved: %w", err)
	}
	pos, ok := stored[moved.Partition]
	if ok && pos.Next >= moved.From {
		return false, nil
	}
	if !ok {
		pos.Next = -1
	}
	held, stop := whileHeld(ctx, parts)
	defer stop()
	err = w.checkWentBack(held, moved.Partition, moved.From, pos.Next)
	if err != nil && held.Err() != nil && ctx.Err() == nil {
		w.log.Warn().Err(err).Int32("partition", moved.Partition).
			Msg("the fencing token check after the stored offset went back ended: a partition of the batch is being revoked")
		return true, errRevoking
	}
	return true, err
}

// checkWentBack logs that the stored offset of partition went back from
// (the offset this worker expected, or resumed from) to stored (-1: gone)
// and checks the fencing token floor (RaiseTokenFloor) before the
// partition applies anything again: wentBack's check, and rewindLost's
// when the offset it reads after a Kafka loss is below the one expected.
func (w *Worker) checkWentBack(ctx context.Context, partition int32, from, stored int64) error {
	check := "checking the fencing tokens against the lock.acquired topic before the partition applies its commands again from the stored offset"
	if w.cfg.TokenFloorCheck == TokenFloorOff || w.cfg.Names.Acquired == "" {
		check = "the fencing tokens are not checked (TOKEN_FLOOR_CHECK=off, or no lock.acquired topic): tokens already granted may be granted again"
	}
	w.log.Error().Int32("partition", partition).Int64("expected_offset", from).Int64("stored_offset", stored).
		Msg("the partition's stored offset went back, below the one this replica committed or resumed from: PostgreSQL lost transactions (a restore, " +
			"an asynchronous failover), or the commands topic was recreated / rewound (another replica moved the offset back after Kafka " +
			"lost records); " + check)
	f, err := w.RaiseTokenFloor(ctx)
	if err != nil {
		return fmt.Errorf("the stored offset of partition %d went back from %d to %d, and checking the fencing tokens failed: %w",
			partition, from, stored, err)
	}
	if f.Skipped {
		return nil // said by RaiseTokenFloor
	}
	// Always at error level: a sequence found ahead does not mean no
	// token was granted twice. Other partitions, lanes and replicas, and
	// the expiry scheduler, kept granting from the sequence as it went
	// back until this check; they may have granted past the lost tokens.
	outcome := "the sequence was ahead of every token published: it was not moved"
	if f.Raised {
		outcome = fmt.Sprintf("the sequence was behind: moved from %d to %d", f.Was, f.Floor)
	}
	w.log.Error().Int32("partition", partition).Str("topic", f.Topic).Int64("highest_published", f.Highest).
		Int64("sequence_was", f.Was).Bool("raised", f.Raised).Int("records", f.Records).Ints64("granted_twice", f.GrantedTwice).
		Msg(fmt.Sprintf("the fencing token check after the stored offset went back: the highest token published is %d, %s. "+
			"Ahead does not mean no token was granted twice: what granted since the loss (other partitions, replicas, the expiry "+
			`scheduler) may have handed out the lost tokens again before this check. See docs/design.md "PostgreSQL lost transactions"`,
			f.Highest, outcome))
	return nil
}

// takenOver stops partition p, whose stored offset another replica moved,
// and restarts it from there (restart), after restartDelay. That replica
// owns the partition now, or lost it and has not learned yet (stalled past
// its session, it applies what it polled until its client learns it):
// only Kafka can tell, so p is not stopped for good while Kafka assigns it
// here. Either way each offset is applied once: every batch advances the
// offset row it locked from where it found it. back says the offset went
// back instead (wentBack, which logged why): the restart is the same, but
// it is no takeover, and not counted as one (Config.Metrics'
// PartitionRestarted).
func (w *Worker) takenOver(p *partition, back bool) {
	delay := w.restartDelay(p.id, time.Now())
	msg := "partition offset moved by another replica: restarting the partition from the stored offset"
	if back {
		msg = "partition offset went back: restarting the partition from the stored offset"
	}
	w.log.Warn().Int32("partition", p.id).Dur("restart_in", delay).Msg(msg)
	p.cancel()
	w.wg.Go(func() { w.restart(p, delay, !back) })
}

// quarantine holds the records of a batch that PostgreSQL refused to apply
// (see findPoison), with the rejection each is answered with instead.
type quarantine map[recordID]*topics.Rejection

type recordID struct {
	partition int32
	offset    int64
}

// refusedData reports whether err is PostgreSQL refusing the data of a
// statement (SQLSTATE classes 22 and 23): the same commands fail the same
// way on every retry, unlike a lost connection or a stopped server.
func refusedData(err error) bool {
	return errors.Is(err, store.ErrInvalidData) || errors.Is(err, store.ErrConstraint)
}

// errProbed ends a probe transaction that succeeded (and so rolls it back).
var errProbed = errors.New("probe succeeded")

// findPoison finds the records that make the batch fail with data
// PostgreSQL refuses and quarantines them: each is answered INVALID_REQUEST
// and dead-lettered like a record that failed validation, so it no longer
// stops its partition. Validation refuses what PostgreSQL is known to
// refuse, so this is the net for what it does not know. It looks for the
// shortest failing prefix of the batch (in the order the batch applies its
// records) by bisection, each probe a transaction rolled back: the last
// record of that prefix is the one whose effects PostgreSQL refuses, given
// the records before it, once both sides are probed again alike (the prefix
// before it accepted, the prefix with it refused with the same SQLSTATE and
// constraint), and it is a command PostgreSQL sees (one refused before,
// unreadable or not admitted, is not convicted: the batch is retried as
// usual). After a conviction the whole batch is probed again, and while it
// is still refused the search goes on after the culprit, not from the
// start: many refused records cost a few probes each, not a search of the
// whole batch and a failed attempt each. It returns nil once the batch is
// accepted with what it convicted, or when the culprit was its last
// record (the batch's retry tells). When the whole batch is accepted, or
// the probes disagree (the refusal comes and goes), it returns errProbed,
// also after convictions, which stand; a failure of another kind is
// returned (the batch is retried as usual), errLetGo when a partition of
// the batch is being let go.
func (w *Worker) findPoison(ctx context.Context, parts []*part, poison quarantine, refused error) error {
	type at struct{ part, rec int }
	var order []at
	for i, pt := range parts {
		for k := range pt.records {
			order = append(order, at{i, k})
		}
	}
	prefix := func(n int) []*part {
		var sub []*part
		for i, pt := range parts {
			take := 0
			for _, o := range order[:n] {
				if o.part == i {
					take++
				}
			}
			if take > 0 {
				sub = append(sub, &part{p: pt.p, segments: pt.segments, records: pt.records[:take], polled: pt.polled[:take]})
			}
		}
		return sub
	}
	if len(order) == 0 {
		// Only unreadable batches skipped, no command: nothing to
		// quarantine. The batch is retried as any other failure.
		return errors.New("PostgreSQL refused a batch that applies no command, only skips")
	}
	probes := 0
	probe := func(n int) error {
		// A revoke waits for the batch's segments: a partition being let
		// go ends the search (its records dropped, the rest searched
		// again, the convictions kept), as a failing batch's retry does.
		if slices.ContainsFunc(parts, func(pt *part) bool { return pt.p.letGo() }) {
			return errLetGo
		}
		probes++
		_, err := w.applyTx(ctx, prefix(n), nil, poison, true)
		return err
	}
	cause := refused        // of the shortest failing prefix found so far
	lo, hi := 1, len(order) // the whole batch fails
	step := len(order)      // the first search bisects the whole batch
	last := -1              // the previous culprit's place, none yet
	for convicted := 1; ; convicted++ {
		for lo < hi {
			// After a conviction the next culprit is looked for as far
			// behind it as it was behind the one before, the step
			// doubling while accepted: refused records close together,
			// or evenly spread, cost a few probes each.
			mid := min((lo+hi)/2, lo-1+step)
			switch err := probe(mid); {
			case errors.Is(err, errProbed):
				lo, step = mid+1, 2*step
			case refusedData(err):
				hi, cause = mid, err
			default:
				return err
			}
		}
		// One probe each way may have met what another transaction did
		// meanwhile (a row it wrote or removed): both sides of the
		// culprit are probed again, and it is convicted only when the
		// prefix before it is accepted and the prefix with it refused
		// alike (the same SQLSTATE and constraint); else the refusal did
		// not reproduce (errProbed).
		if hi > 1 {
			switch before := probe(hi - 1); {
			case refusedData(before) && hi-1 == last && sameRefusal(cause, before):
				// Refused up to the last culprit, quarantined: its
				// rejection is refused too (convict says so).
				return w.convict(ctx, parts[order[last-1].part], order[last-1].rec, poison, before)
			case refusedData(before):
				return errProbed // accepted when bisected: the refusal comes and goes
			case !errors.Is(before, errProbed):
				return before
			}
		}
		again := probe(hi)
		switch {
		case errors.Is(again, errProbed):
			return errProbed
		case !refusedData(again):
			return again
		case !sameRefusal(cause, again):
			return errProbed
		}
		if err := w.convict(ctx, parts[order[hi-1].part], order[hi-1].rec, poison, again); err != nil {
			return err
		}
		if convicted%64 == 0 {
			w.log.Warn().Ints32("partitions", partitionIDs(parts)).Int("records", len(order)).Int("convicted", convicted).
				Int("probes", probes).Msg("PostgreSQL refuses many commands of a batch: still looking for them")
		}
		if hi == len(order) {
			return nil // the culprit was the last record: the batch is retried
		}
		// The prefix up to the culprit, quarantined, is accepted: if the
		// rest is not, the next culprit lies after it.
		switch err := probe(len(order)); {
		case errors.Is(err, errProbed):
			return nil // the batch is retried, and commits
		case !refusedData(err):
			return err
		default:
			cause = err
		}
		step = 1 // close behind the first
		if last >= 0 {
			step = hi - last
		}
		lo, hi, last = hi+1, len(order), hi
	}
}

// convict quarantines record k of pt, refused by PostgreSQL with cause
// (see findPoison), or returns cause when it cannot be the command's doing.
func (w *Worker) convict(ctx context.Context, pt *part, k int, poison quarantine, cause error) error {
	r := pt.records[k]
	notConvicted := func(why string) error {
		w.log.Error().Err(cause).Int32("partition", pt.p.id).Int64("offset", r.Offset).
			Msg("PostgreSQL refuses a batch at a record that cannot be convicted (" + why + "): the batch is retried")
		return cause
	}
	if poison[recordID{pt.p.id, r.Offset}] != nil {
		return notConvicted("its rejection fails too: not the command's doing")
	}
	// A record refused before PostgreSQL sees it (unreadable, or refused
	// admission: its reply_to not to be answered, its owner not scoped
	// yet) cannot be what PostgreSQL refuses: not convicted. The one that
	// is, is answered as admitted.
	c, err := topics.Decode(r.Value, w.cfg.Names.ReplyPrefix)
	if err == nil {
		c, err = w.admit(ctx, c, r)
	}
	if err != nil {
		return notConvicted("refused before PostgreSQL sees it")
	}
	poison[recordID{pt.p.id, r.Offset}] = &topics.Rejection{Code: topics.CodeInvalidRequest,
		Message: "PostgreSQL refused to apply the command: " + pgMessage(cause), Command: withRequestID(c, r)}
	w.log.Error().Err(cause).Int32("partition", pt.p.id).Int64("offset", r.Offset).
		Msg("PostgreSQL refused a command: answering it INVALID_REQUEST and copying it to the dead-letter topic")
	return nil
}

// sameRefusal reports whether a and b, refusals of PostgreSQL, are alike:
// the same SQLSTATE and constraint.
func sameRefusal(a, b error) bool {
	pa, aok := errors.AsType[*pgconn.PgError](a)
	pb, bok := errors.AsType[*pgconn.PgError](b)
	if !aok || !bok {
		return aok == bok && a.Error() == b.Error()
	}
	return pa.Code == pb.Code && pa.ConstraintName == pb.ConstraintName
}

// withRequestID is c with the request_id its record's place gives it when
// it has none (<topic>/<partition>/<offset>), as every answer to it carries.
func withRequestID(c topics.Command, r *kgo.Record) topics.Command {
	if c.RequestID == "" {
		c.RequestID = r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10)
	}
	return c
}

// pgMessage is PostgreSQL's own message of err, for a requester: the rest
// of the chain names our statements.
func pgMessage(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Message + " (SQLSTATE " + pgErr.Code + ")"
	}
	return err.Error()
}

// result is what one record did, for metrics after commit.
type result struct {
	op, outcome string
	rejected    *topics.Rejection
	partition   int32
	offset      int64
	polledAt    time.Time
	requestID   string
	events      []topics.Event
}

// applyTx runs the parts' records in one transaction, retried whole on
// transient failures. Per partition it advances the offset row only from
// the offset this worker expects, skips records already applied, and applies
// the handlers in order; the outbox, history and outcomes of all of them are
// written together. Quarantined records are answered as invalid. Each
// attempt whose COMMIT goes with writes is noted in *sent; an attempt that
// commits with nothing left to write returns the results of *sent if
// PostgreSQL says it committed (foundCommitted), else none: also when it
// cannot be asked (logged), for the batch is done either way. A probe
// (sent nil) sends everything but COMMIT and rolls back, failing with
// errProbed when all of it was accepted.
//
// Its round trips: the first carries BEGIN, the offsets (locked and read
// first, in a round trip of their own, after an assignment), the stored
// outcomes and the common cases; then the general path's statements, if
// any; the last carries the outbox, history and outcome writes with COMMIT.
func (w *Worker) applyTx(ctx context.Context, parts []*part, sent **sentAttempt, poison quarantine, probe bool) ([]result, error) {
	var t *txn
	var h *handoff // the current attempt's
	err := w.cfg.Store.InTxBatch(ctx, func(tx pgx.Tx, first, last *pgx.Batch) error {
		h.abandon() // a retry's: the previous attempt failed at or after COMMIT
		h = nil
		for _, pt := range parts {
			if err := pt.p.mayWrite(); err != nil {
				return err // nothing sent: nothing began
			}
		}
		t = &txn{w: w, tx: tx, batch: handlers.NewBatch(tx, w.env(parts[0].p.id))}
		t.queueXactID(first)
		pb, stored, err := t.offsets(ctx, parts, first)
		if err != nil {
			return err
		}
		dctx := ctx
		if pb != first {
			// The offsets' round trip began the transaction: what decode
			// asks Kafka (reply topics not seen before) happens while it
			// holds the offset rows, idle to PostgreSQL, which ends it
			// after store.Config.IdleInTransactionTimeout. Kafka not
			// answering within openLookups is Kafka's trouble, which
			// refuses no command (replyTopics.allow).
			var cancel context.CancelFunc
			dctx, cancel = context.WithTimeout(ctx, openLookups)
			defer cancel()
		}
		t.decode(dctx, parts, stored, poison, pb)
		if len(t.todos) == 0 {
			if probe {
				return errProbed // only records applied before: nothing to refuse
			}
			return nil // when nothing was sent, nothing began
		}
		t.prefetch(pb)
		if err := tx.SendBatch(ctx, pb).Close(); err != nil {
			return err
		}
		if err := t.apply(ctx); err != nil {
			return err
		}
		// The outbox, history and outcomes travel with COMMIT.
		if err := t.batch.QueueFlush(ctx, last); err != nil {
			return err
		}
		if !probe {
			h = w.reserve(t.batch.Written(), last)
			*sent = t.sent(parts)
			return nil
		}
		if err := tx.SendBatch(ctx, last).Close(); err != nil {
			return err
		}
		return errProbed
	})
	if t == nil {
		return nil, err
	}
	h.settle(err, t.batch.Written)
	if err == nil && len(t.todos) == 0 && !probe {
		// All found applied: at a partition's first batch, maybe by an
		// earlier attempt whose COMMIT's answer was lost (a later batch's
		// offset guard fails instead: settleMoved). The offsets are
		// right whatever the answer, which only decides what is
		// reported: its failure must not fail, and back off, a batch
		// with nothing left to do (whose scheduler wake foundCommitted
		// keeps).
		_, results, err := w.foundCommitted(ctx, parts, sent)
		if err != nil {
			w.log.Warn().Err(err).Ints32("partitions", partitionIDs(parts)).
				Msg("batch found applied on retry, but PostgreSQL could not say whether by its earlier attempt (connection lost during COMMIT): " +
					"if so, its commands' metrics and dead-letter warnings are missing")
		}
		return results, nil
	}
	return t.results, err
}

// openLookups bounds the Kafka lookups of an attempt that holds its
// transaction open while it decodes (after an assignment), well within
// store.DefaultIdleInTransactionTimeout (5 s).
const openLookups = 2 * time.Second

// txn is one attempt of a batch's transaction.
type txn struct {
	w       *Worker
	tx      pgx.Tx
	xid     int64 // its transaction's id (queueXactID)
	batch   *handlers.Batch
	todos   []todo
	ids     []string // the request_ids of the valid commands, and of the refusals that may be copies (mayRepeat)
	results []result
}

// todo is what a transaction does for one partition.
type todo struct {
	pt         *part
	view       *handlers.Batch // the batch, writing under pt's partition
	records    []*kgo.Record   // not applied before
	polled     []time.Time
	cmds       []topics.Command    // by record; zero where rejected, but for a refusal that may be a copy (mayRepeat)
	rejections []*topics.Rejection // by record; nil where valid
}

// queueXactID notes the transaction's id, so that a retry can ask whether
// this attempt committed after all (foundCommitted).
func (t *txn) queueXactID(b *pgx.Batch) {
	b.Queue(`SELECT pg_current_xact_id()::text::bigint`).QueryRow(func(row pgx.Row) error { return row.Scan(&t.xid) })
}

// sent is what t did, about to send its COMMIT.
func (t *txn) sent(parts []*part) *sentAttempt {
	set := make(map[*part]sentPart, len(parts))
	for _, pt := range parts {
		set[pt] = sentPart{due: pt.due, marked: pt.marked}
	}
	return &sentAttempt{xid: t.xid, results: t.results, parts: set}
}

// offsets returns each part's stored offset and the batch to queue the
// rest of the first round trip on. While every partition's offset is known
// from its last batch, the offset rows are locked by advancing them (in
// decode) and nothing is sent here. After an assignment they are read and
// locked first, in partition order as every transaction locks them, in a
// round trip of their own. A partition's first batch takes the offset
// found there, or further on (another replica applied more), but not
// below where the partition resumed, nor gone (-1): it moved back since
// (another replica forgot a recreated topic's offsets, or moved them back
// after Kafka lost records), and the records polled from where it resumed,
// maybe the deleted topic's, would move it past records never applied.
func (t *txn) offsets(ctx context.Context, parts []*part, first *pgx.Batch) (*pgx.Batch, []int64, error) {
	w := t.w
	topic := w.cfg.Names.Commands
	stored := make([]int64, len(parts))
	if !slices.ContainsFunc(parts, func(pt *part) bool { return pt.p.expected == unknownOffset }) {
		for i, pt := range parts {
			stored[i] = pt.p.expected
		}
		return first, stored, nil
	}
	for i, pt := range parts {
		store.QueueLockOffset(first, w.cfg.Group, topic, pt.p.id, &stored[i])
	}
	if err := t.tx.SendBatch(ctx, first).Close(); err != nil {
		return nil, nil, err
	}
	for i, pt := range parts {
		switch resumed := pt.p.resumed.Load(); {
		case pt.p.expected != unknownOffset && stored[i] != pt.p.expected:
			return nil, nil, &store.OffsetMovedError{Topic: topic, Partition: pt.p.id, From: pt.p.expected}
		case pt.p.expected == unknownOffset && resumed != unknownOffset && stored[i] < resumed:
			return nil, nil, &store.OffsetMovedError{Topic: topic, Partition: pt.p.id, From: resumed}
		}
	}
	return &pgx.Batch{}, stored, nil
}

// decode skips each part's records and unreadable batches below its stored
// offset (applied or skipped already: before this worker got the
// partition, or redelivered), takes the rest in decode order while their
// cost (txnCost) stays within txnBudget, queues the move of its offset
// past what it takes, and decodes the records: invalid or quarantined
// records get their rejection (the invalid ones that may be copies of a
// request also their command: mayRepeat), valid commands without a
// request_id get topic/partition/offset. The first record past the budget,
// the rest of its part (its batches skipped after it too) and the later
// parts are left for the next transaction (applySegments), their offsets
// not moved; the first record is always taken. The cut depends on the
// records alone, so a retry or a probe cuts where the attempt did.
func (t *txn) decode(ctx context.Context, parts []*part, stored []int64, poison quarantine, pb *pgx.Batch) {
	w := t.w
	held, cut := 0, false // the cost of the records taken; whether the budget left records out
	for i, pt := range parts {
		pt.due = time.Time{}
		// Set here, not by apply: an attempt whose offset guard fails
		// before apply because an earlier attempt committed (its
		// COMMIT's answer lost) reports the offsets that attempt moved,
		// which are these (settleMoved).
		pt.next, pt.marked = stored[i], nil
		if cut {
			continue
		}
		recs, polled := pt.records, pt.polled
		for len(recs) > 0 && stored[i] >= 0 && recs[0].Offset < stored[i] {
			recs, polled = recs[1:], polled[1:]
		}
		skips := unskipped(pt.skips, stored[i])
		cmds, errs := make([]topics.Command, len(recs)), make([]error, len(recs))
		for k, r := range recs {
			cmds[k], errs[k] = topics.Decode(r.Value, w.cfg.Names.ReplyPrefix)
			cost := txnCost(r, cmds[k], errs[k])
			if held > 0 && held+cost > txnBudget {
				cut = true
				recs, polled = recs[:k], polled[:k]
				skips = slices.DeleteFunc(skips, func(b *kgo.ErrDecompressTooLarge) bool { return b.Offset > r.Offset })
				break
			}
			held += cost
		}
		pt.marked = skips
		if len(recs) == 0 && len(skips) == 0 {
			continue
		}
		var epoch int32
		if len(recs) > 0 {
			pt.next, epoch = recs[len(recs)-1].Offset+1, recs[len(recs)-1].LeaderEpoch
		}
		if last := len(skips) - 1; last >= 0 && skips[last].NextOffset > pt.next {
			pt.next, epoch = skips[last].NextOffset, skips[last].Epoch
		}
		// From where the stored offset is, as for any batch: the records
		// polled before a skipped batch are applied before it, here or
		// in an earlier transaction of this applier. (Its first offset
		// need not be the stored one: offsets that hold no record, as a
		// transaction's markers, lie between.)
		store.QueueAdvanceOffset(pb, w.cfg.Group, w.cfg.Names.Commands, pt.p.id, stored[i], pt.next, epoch)
		td := todo{pt: pt, view: t.batch.For(pt.p.id), records: recs, polled: polled,
			cmds: make([]topics.Command, len(recs)), rejections: make([]*topics.Rejection, len(recs))}
		for k, r := range recs {
			if rej := poison[recordID{pt.p.id, r.Offset}]; rej != nil {
				td.rejections[k] = rej
				continue
			}
			c, err := cmds[k], errs[k]
			if err != nil {
				td.rejections[k] = w.refused(ctx, err.(*topics.Rejection), r)
				t.mayRepeat(td, k)
				continue
			}
			if c, err = w.admit(ctx, c, r); err != nil {
				td.rejections[k] = err.(*topics.Rejection)
				t.mayRepeat(td, k)
				continue
			}
			td.cmds[k] = withRequestID(c, r)
			t.ids = append(t.ids, td.cmds[k].RequestID) // its generated one too
		}
		t.todos = append(t.todos, td)
	}
}

// txnBudget bounds the cost (txnCost) of the records one transaction
// takes (decode): it holds what they write until COMMIT, and a burst of
// queries, each answered with up to topics.MaxHoldersBytes of holders,
// would otherwise hold hundreds of MiB. What it holds is held about twice
// over: the replies' JSON and what they were encoded from (the holders
// as scanned). A variable for tests.
var txnBudget = 32 << 20

// txnCost bounds what record r, decoded as c (err: not a command), may
// make its transaction hold until COMMIT: its own bytes (its dead-letter
// copy, or what its answer repeats of it), and for a query its reply's
// holders (topics.MaxHoldersBytes), for another command its lock's state
// record (topics.MaxStateHolders holders' owner_metadata).
func txnCost(r *kgo.Record, c topics.Command, err error) int {
	switch {
	case err != nil:
		return len(r.Value)
	case c.Operation == topics.OpQuery:
		return len(r.Value) + topics.MaxHoldersBytes
	default:
		return len(r.Value) + topics.MaxStateHolders*topics.MaxOwnerMetadataBytes
	}
}

// mayRepeat keeps the command of record k, refused as invalid (by Decode,
// or by admit for another reason than authorize's), for apply to answer
// from its request_id's stored outcome if it has one, and has that
// prefetched: it may be a copy of a request applied under other rules (an
// older version's validation, a resend whose content changed since), which
// is answered as any copy is. Only one that would be answered on its
// reply_to: one refused UNAUTHENTICATED or FORBIDDEN may not be the
// requester's (and a forged request_id was cleared: generatedID), and one
// answered nowhere keeps its dead-letter copy, the operator's only trace.
// Nor one whose request_id holds NUL, which PostgreSQL's text cannot
// hold: the prefetch would fail on every retry (Decode leaves one that is
// not UTF-8 unread).
func (t *txn) mayRepeat(td todo, k int) {
	rej := td.rejections[k]
	id := rej.Command.RequestID
	if id == "" || rej.Command.ReplyTo == "" || rej.Code == topics.CodeUnauthenticated || rej.Code == topics.CodeForbidden ||
		strings.IndexByte(id, 0) >= 0 {
		return
	}
	td.cmds[k] = rej.Command
	t.ids = append(t.ids, id)
}

// prefetch queues the stored outcomes of the commands' request_ids and the
// common cases of the commands that may go ahead of the rest.
func (t *txn) prefetch(pb *pgx.Batch) {
	t.batch.QueuePrefetch(pb, t.ids)
	valid, partitions := make([]topics.Command, 0, len(t.ids)), make([]int32, 0, len(t.ids))
	for _, td := range t.todos {
		for k, c := range td.cmds {
			if td.rejections[k] == nil {
				valid, partitions = append(valid, c), append(partitions, td.pt.p.id)
			}
		}
	}
	t.batch.QueueAtOnce(pb, valid, partitions)
}

// apply answers each rejected record (and copies it to the dead-letter
// topic) unless it is the copy of a request answered from its stored
// outcome, applies each valid command and writes the dead-letter marker of
// each batch skipped unread, in order.
func (t *txn) apply(ctx context.Context) error {
	w := t.w
	for _, td := range t.todos {
		skips := td.pt.marked
		for k, r := range td.records {
			for len(skips) > 0 && skips[0].Offset < r.Offset {
				t.skip(td, skips[0])
				skips = skips[1:]
			}
			if rej := td.rejections[k]; rej != nil {
				if c := td.cmds[k]; c.RequestID != "" {
					evs, repeated, err := td.view.Resend(ctx, c, td.polled[k])
					if err != nil {
						return err
					}
					if repeated {
						// It changes nothing: nothing falls due.
						t.answered(td, k, c, evs)
						continue
					}
				}
				td.view.Reject(rej, td.polled[k])
				key, value, headers := deadLetter(r, rej.Error(), w.cfg.DeadLetterMaxBytes)
				td.view.Publish(w.cfg.Names.DeadLetter, key, value, headers)
				t.results = append(t.results, result{op: rej.Command.Operation, outcome: rej.Code, rejected: rej,
					partition: td.pt.p.id, offset: r.Offset, polledAt: td.polled[k]})
				continue
			}
			c := td.cmds[k]
			evs, err := td.view.Apply(ctx, c, td.polled[k])
			if err != nil {
				return err
			}
			t.answered(td, k, c, evs)
			td.pt.due = earliest(td.pt.due, dueBy(c, evs))
		}
		for _, b := range skips {
			t.skip(td, b)
		}
	}
	return nil
}

// answered notes the result of td's record k, command c, answered with evs.
func (t *txn) answered(td todo, k int, c topics.Command, evs []topics.Event) {
	t.results = append(t.results, result{op: c.Operation, outcome: outcome(c.RequestID, evs), partition: td.pt.p.id,
		polledAt: td.polled[k], requestID: c.RequestID, events: evs})
}

// skip writes the dead-letter marker of batch b, skipped unread.
func (t *txn) skip(td todo, b *kgo.ErrDecompressTooLarge) {
	td.view.Publish(t.w.cfg.Names.DeadLetter, nil, nil, t.w.skipMarker(b))
}

// committed does what follows a commit (the relays were handed the rows
// in applyTx): the partitions' schedulers are woken and the metrics told.
func (w *Worker) committed(parts []*part, results []result, took time.Duration) {
	for _, pt := range parts {
		pt.p.expected = pt.next
		pt.p.stored.Store(pt.next)
		pt.p.wakeScheduler(pt.due)
		// Group offsets are only for lag tooling (committed in the
		// background); PostgreSQL is the truth. (Neither mark moves
		// back.)
		// Only what it applied: the rest of a part the budget cut is the
		// next transaction's.
		if n, _ := slices.BinarySearchFunc(pt.records, pt.next, func(r *kgo.Record, next int64) int {
			return cmp.Compare(r.Offset, next)
		}); n > 0 {
			w.cl.MarkCommitRecords(pt.records[n-1])
		}
		if len(pt.skips) > 0 && !pt.left() {
			// The client, stopped at the last one, is moved past it only
			// now that the stored offset is: the seek marks its offset
			// for commit (queueTooLarge).
			past := fetchbound.Past(pt.skips[len(pt.skips)-1])
			w.cl.MarkCommitOffsets(map[string]map[int32]kgo.EpochOffset{w.cfg.Names.Commands: {pt.p.id: past}})
			w.seekTo(pt.p, store.Position{Next: past.Offset, Epoch: past.Epoch})
		}
		for _, b := range pt.marked {
			w.skipped(pt.p, b)
		}
	}
	if len(results) == 0 {
		return
	}
	w.cfg.Metrics.Batch(len(results), took)
	now := time.Now()
	for _, r := range results {
		w.cfg.Metrics.Command(r.op, r.outcome, now.Sub(r.polledAt))
		if len(r.events) > 0 {
			w.cfg.Metrics.Events(r.requestID, r.events)
		}
		if r.rejected != nil {
			w.cfg.Metrics.DeadLettered(r.rejected.Code)
			w.log.Warn().Int32("partition", r.partition).Int64("offset", r.offset).Str("error", r.rejected.Error()).
				Msg("invalid command: answered with its error code where its reply_to allows (never for UNAUTHENTICATED, whose reply_to is not trusted), and copied to the dead-letter topic")
		}
	}
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

func (w *Worker) env(partition int32) handlers.Env {
	return handlers.Env{Names: w.cfg.Names, DefaultLease: w.cfg.DefaultLease, Source: "lockworker/" + w.cfg.Instance, Partition: partition,
		PlainEvents: w.cfg.PlainEvents, NoHistory: w.cfg.NoHistory, RequireFencingToken: w.cfg.RequireFencingToken,
		OnUnreadableOutcome: w.unreadableOutcome, Log: w.log}
}

// unreadableOutcome logs a stored outcome damaged in the database
// (handlers.Env.OnUnreadableOutcome).
func (w *Worker) unreadableOutcome(requestID string, partition int32) {
	w.log.Error().Str("request_id", requestID).Int32("partition", partition).
		Msg("a stored outcome cannot be read back (damaged in the database): the request's copy is refused REQUEST_ID_CONFLICT")
}
