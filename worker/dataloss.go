package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/store"
)

// Kafka can lose records a replica applied (an unclean leader election, a
// broker restarted without its unsynced tail) and number new ones under
// their offsets; a replica that went on from its stored offset would skip
// those as applied. So the stored offset moves back to where the log still
// holds what was applied, and the records from there are applied: those
// applied before have their request_ids' stored outcomes, the rest are new
// (unless the log's start passed there too: checkLogEnds then moves it on
// to the start, skipRetained).
// It is checked when a partition is resumed (resumeFromStore: a log that
// ends below the stored offset) and when the Kafka client reports a loss
// while consuming (kgo.ErrDataLoss: lostRecords, beside the applier once
// the records polled before it are applied).

// errTakenOver is rewind's error when the stored offset moved meanwhile:
// another replica applied records of the partition.
var errTakenOver = errors.New("the stored offset moved: another replica applied records of the partition")

// errMovedBefore is moveOffset's error when the stored offset is no longer
// where its move is from, while a move from there sent before, whose
// outcome is unknown, is kept: that move was presumably made meanwhile (its
// UPDATE still ran when moveTimeout fired, and this one queued behind it).
// The offset is read again, which finds it made (foundMade) or moved by
// another replica.
var errMovedBefore = errors.New("the stored offset moved, presumably by the move sent before whose answer was lost: reading it again")

// lostRecords handles a loss kgo reported on partition s.p, after the
// records polled before it were applied; the partition's records polled
// meanwhile are dropped (losing). It is retried until done or the partition
// is let go, revoked or restarted (its next owner or run checks again when
// it resumes).
func (w *Worker) lostRecords(s segment) {
	defer s.p.pending.Done()
	var sent *offsetMove // the last move sent, whose answer may have been lost
	w.retry(s.p.revoking, s.p.logger(), "checking what the commands topic lost failed", nil, func(ctx context.Context) error {
		return w.rewindLost(ctx, s.p, &sent)
	})
}

// rewindLost is one attempt of lostRecords. sent is the move of the stored
// offset back an earlier attempt sent whose outcome is unknown (nil: none),
// kept while the offset read is still where it is from, and is set to the
// one this attempt sends when its outcome is unknown (moveOffset): a move
// whose answer was lost (the connection dropped, or moveTimeout fired,
// before or after the server committed it) is found made, the stored
// position where it put it (foundMade), and is taken as this worker's own,
// not as another replica's; so is the offset found moved by a move sent
// again meanwhile (errMovedBefore: read again, not a takeover), while one
// found neither there nor where it was from was moved by another replica:
// a takeover. (A replica that took the partition over and moved it to the
// same offset is told apart as any takeover is: the offset guard of this
// worker's next batch finds it moved, settleMoved.) An offset found below
// the one this worker expected (before the partition's first batch, the
// one it resumed from), or gone, and not where its own move put it, went
// back as wentBack says: checkWentBack, then the partition restarts from
// there, uncounted.
func (w *Worker) rewindLost(ctx context.Context, p *partition, sent **offsetMove) error {
	stored, err := w.cfg.Store.Offsets(ctx, w.cfg.Group, w.cfg.Names.Commands)
	if err != nil {
		return err
	}
	pos, ok := stored[p.id]
	kept := *sent
	made := ok && w.foundMade(p.id, sent, pos)
	// Before its first batch, where it resumed (knowResumed, seekStored),
	// as that batch's offset guard compares: the move back below would
	// set the expected offset to a lower one, and that guard would not
	// compare either.
	want := p.expected
	if want == unknownOffset {
		want = p.resumed.Load()
	}
	if !made && want != unknownOffset && (!ok || pos.Next < want) {
		// Below what this worker applied or resumed from, and not
		// where its own move put it: PostgreSQL lost transactions too
		// (the failover that lost a move's answer may have), or
		// another replica moved it back (wentBack). The partition
		// restarts from there once the tokens are checked.
		if !ok {
			pos.Next = -1
		}
		if err := w.checkWentBack(ctx, p.id, want, pos.Next); err != nil {
			return err
		}
		w.takenOver(p, true)
		return nil
	}
	if !ok {
		// Nothing applied: the client reads again what was dropped.
		w.seekTo(p, fromStart)
		return nil
	}
	switch {
	case made:
	case kept != nil && pos.Next != kept.from:
		// Moved elsewhere since this worker's move from there was
		// sent: by another replica, which owns the partition now (the
		// check below cannot tell while nothing was applied here).
		err = errTakenOver
	case p.expected != unknownOffset && pos.Next != p.expected:
		err = errTakenOver
	default:
		pos, err = w.rewind(ctx, p.id, pos, sent)
	}
	if errors.Is(err, errTakenOver) {
		w.takenOver(p, false)
		return nil
	}
	if err != nil {
		return err
	}
	p.expected = pos.Next
	p.stored.Store(pos.Next)
	// The client resumed at its own reset point (the log start, or where
	// its epoch check said): it moves to the stored offset, so that it
	// neither reads again the records decode would skip nor misses those
	// dropped since the loss.
	w.seekTo(p, pos)
	return nil
}

// seekStored has the poll loop move the client of partition p to its
// stored offset.
func (w *Worker) seekStored(ctx context.Context, p *partition) error {
	stored, err := w.cfg.Store.Offsets(ctx, w.cfg.Group, w.cfg.Names.Commands)
	if err != nil {
		return err
	}
	pos, ok := stored[p.id]
	if !ok {
		pos = fromStart
	} else {
		p.resumed.Store(pos.Next) // its first batch compares with it, as after an assignment
	}
	w.seekTo(p, pos)
	return nil
}

// fromStart is where a partition nothing was applied of is fetched from:
// the log's start (an offset below it resumes there).
var fromStart = store.Position{Next: 0, Epoch: -1}

// seekTo has the poll loop move the client of partition p to pos
// (seekRewound), waking it if no records arrive.
func (w *Worker) seekTo(p *partition, pos store.Position) {
	p.seek.Store(&pos)
	w.seeks.Store(true)
	(*w.wakePoll.Load())()
}

// moveTimeout bounds a move of a stored offset, back (rewind) or forward
// (skipRetained), which a revoke does not cancel. It is one UPDATE of one row, which waits at most
// for a batch of a replica that took the partition over; only PostgreSQL
// down makes a rebalance wait for it this long.
const moveTimeout = 5 * time.Second

// rewind moves partition p's stored offset, pos, back to where the log
// still holds what was applied (locateLoss), and returns where it stands.
// sent is set to the move when its outcome is unknown (moveOffset).
func (w *Worker) rewind(ctx context.Context, p int32, pos store.Position, sent **offsetMove) (store.Position, error) {
	m, err := w.planRewind(ctx, p, pos)
	if err == nil && m != nil {
		if err = w.moveOffset(ctx, p, *m, sent); err == nil {
			return m.to, nil
		}
	}
	return pos, err
}

// offsetMove is a move of a partition's stored offset, in either
// direction, from the offset read: back, to where the log still holds what
// was applied (rewind); or, retained, forward to the log start, past
// commands deleted unapplied (skipRetained). A move whose outcome is
// unknown (its answer lost) is kept (sent) by the caller that retries,
// whose next read may find it made (foundMade): it is reported then, once.
type offsetMove struct {
	from     int64
	to       store.Position
	located  bool // see locateLoss
	retained bool
}

// planRewind returns the move of partition p's stored offset, pos, back to
// where the log still holds what was applied, or nil when it holds all of
// it.
func (w *Worker) planRewind(ctx context.Context, p int32, pos store.Position) (*offsetMove, error) {
	to, located, err := w.locateLoss(ctx, p, pos)
	if err != nil {
		return nil, err
	}
	if to.Next >= pos.Next {
		w.log.Info().Int32("partition", p).Int64("stored", pos.Next).Msg("the commands topic holds every record applied here")
		return nil, nil
	}
	return &offsetMove{from: pos.Next, to: to, located: located}, nil
}

// moveOffset makes move m of partition p's stored offset and reports it
// (moved); errTakenOver when the stored offset is no longer m.from, or
// errMovedBefore when sent, kept, is a move from there too. sent is set to
// m when it fails leaving the outcome unknown (outcomeUnknown), to nil when
// m is made (a move kept from the same offset, conditional on it too, can
// no longer be), else left as it is.
func (w *Worker) moveOffset(ctx context.Context, p int32, m offsetMove, sent **offsetMove) error {
	// Once decided, the move is made and reported even if the partition is
	// revoked meanwhile: a move committed under a cancelled context would
	// be neither logged nor counted, and the next owner, finding the offset
	// already back, would have nothing to report either. It is conditional
	// on the offset read, so a replica that took over since is not undone.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), moveTimeout)
	defer cancel()
	var moved bool
	var err error
	if m.retained {
		moved, err = w.cfg.Store.SkipOffset(mctx, w.cfg.Group, w.cfg.Names.Commands, p, m.from, m.to.Next)
	} else {
		moved, err = w.cfg.Store.RewindOffset(mctx, w.cfg.Group, w.cfg.Names.Commands, p, m.from, m.to.Next, m.to.Epoch)
	}
	switch {
	case err != nil:
		if outcomeUnknown(err) {
			*sent = &m
		}
		return err
	case !moved && *sent != nil && (*sent).from == m.from:
		return errMovedBefore
	case !moved:
		return errTakenOver
	}
	*sent = nil
	w.moved(p, m, false)
	return nil
}

// outcomeUnknown reports whether err, of a move of a stored offset, leaves
// unknown whether the move was made: not when PostgreSQL answered it (the
// UPDATE matched no row, errTakenOver; or it failed, a *pgconn.PgError of
// severity ERROR, and its implicit transaction was rolled back), nor when
// nothing was sent (pgconn.SafeToRetry); else (the connection lost,
// moveTimeout fired, or a FATAL or PANIC ended the session, which may
// follow a commit: pg_terminate_backend while it waits for synchronous
// replication, after "already committed locally") it may have committed.
func outcomeUnknown(err error) bool {
	answered := false
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		severity := pgErr.SeverityUnlocalized // Severity is translated (lc_messages)
		if severity == "" {
			severity = pgErr.Severity // a server before 9.6 sends only that
		}
		answered = severity == "ERROR"
	}
	return !answered && !errors.Is(err, errTakenOver) && !pgconn.SafeToRetry(err)
}

// foundMade reports whether *sent, a move of partition p's stored offset
// whose outcome was unknown (nil: none), was made: the stored position read,
// pos, is where it put it, offset and leader epoch (RewindOffset stores
// m.to's, SkipOffset none, a batch applied the epoch of its last record). A
// move found made is reported (moved, answer_lost) and dropped; so is one
// whose offset moved elsewhere (another replica's). One whose offset is
// still where it is from stays kept: its UPDATE may yet commit (it may
// still wait behind another transaction after moveTimeout fired), and a
// move sent again then finds the offset moved (errMovedBefore).
func (w *Worker) foundMade(p int32, sent **offsetMove, pos store.Position) bool {
	m := *sent
	switch {
	case m == nil:
		return false
	case pos == m.to:
		*sent = nil
		w.moved(p, *m, true)
		return true
	case pos.Next != m.from:
		*sent = nil
	}
	return false
}

// moved reports move m of partition p's stored offset, made (rewound or
// retained); answerLost when its answer was lost and a later read found it
// made.
func (w *Worker) moved(p int32, m offsetMove, answerLost bool) {
	if m.retained {
		w.retained(p, m, answerLost)
	} else {
		w.rewound(p, m, answerLost)
	}
}

// rewound counts and logs move m of partition p's stored offset, made;
// answerLost when its answer was lost and a later read found it made.
func (w *Worker) rewound(p int32, m offsetMove, answerLost bool) {
	w.cfg.Metrics.DataLoss()
	w.log.Error().Int32("partition", p).Int64("stored_was", m.from).Int64("resumed_at", m.to.Next).Bool("located", m.located).
		Bool("answer_lost", answerLost).
		Msg("the commands topic lost records this group applied: the stored offset moved back to resumed_at, so the records the log numbers anew from there are not skipped as applied (those it no longer holds either are reported apart)")
}

// locateLoss returns where partition p's log stops holding the records
// applied up to pos, never past pos: where the log that pos's leader epoch
// wrote ends now (KIP-320's OffsetForLeaderEpoch), located; or, where the
// broker does not know that epoch or pos has none, where the log ends, not
// located: records after the loss and below that end cannot be told from
// records applied before it, and are skipped rather than risk applying a
// command twice.
func (w *Worker) locateLoss(ctx context.Context, p int32, pos store.Position) (store.Position, bool, error) {
	topic := w.cfg.Names.Commands
	adm := kadm.NewClient(w.cl)
	if pos.Epoch >= 0 {
		var req kadm.OffsetForLeaderEpochRequest
		req.Add(topic, p, pos.Epoch)
		resp, err := adm.OffsetForLeaderEpoch(ctx, req)
		if err != nil {
			return pos, false, fmt.Errorf("asking where epoch %d of %s/%d ends: %w", pos.Epoch, topic, p, err)
		}
		r, ok := resp[topic][p]
		if !ok {
			return pos, false, fmt.Errorf("asking where epoch %d of %s/%d ends: no answer for the partition", pos.Epoch, topic, p)
		}
		if r.Err != nil {
			return pos, false, fmt.Errorf("asking where epoch %d of %s/%d ends: %w", pos.Epoch, topic, p, r.Err)
		}
		if r.EndOffset >= 0 && r.LeaderEpoch >= 0 {
			if r.EndOffset >= pos.Next {
				return pos, true, nil
			}
			return store.Position{Next: r.EndOffset, Epoch: r.LeaderEpoch}, true, nil
		}
	}
	ends, err := w.logEnds(ctx)
	if err != nil {
		return pos, false, err
	}
	end, ok := ends.Lookup(topic, p)
	if !ok || end.Offset >= pos.Next {
		return pos, false, nil
	}
	return store.Position{Next: end.Offset, Epoch: -1}, false, nil
}

// checkLogEnds finds, before the assigned partitions are resumed, those
// whose log ends below their stored offset, and moves them back (rewind):
// the Kafka client would start them at the log start (or its end) and skip
// every record up to the stored offset as applied. It also finds those
// whose log starts above their stored offset, or above where a rewind
// moved it (skipRetained): the records between were deleted (retention.ms,
// DeleteRecords) before this group applied them. stored is updated. sent
// holds, by partition, the move an earlier attempt sent whose outcome is
// unknown (offsetMove): one found made is reported now, one whose offset is
// still where it is from stays kept (foundMade); it is set to the one this
// attempt sends when its outcome is unknown. read is kept across attempts
// too (storedRead).
func (w *Worker) checkLogEnds(ctx context.Context, assigned map[int32]kgo.Offset, stored map[int32]store.Position, sent map[int32]*offsetMove, read map[int32]storedRead) error {
	ends, err := w.logEnds(ctx)
	if err != nil {
		return err
	}
	var starts kadm.ListedOffsets // listed only when a partition has a stored offset
	for p := range assigned {
		pos, ok := stored[p]
		m := sent[p] // kept while its outcome stays unknown (foundMade, moveOffset)
		delete(sent, p)
		if !ok {
			delete(read, p)
			continue
		}
		made := w.foundMade(p, &m, pos) // and the checks go on from where it put the offset
		r, seen := read[p]
		if !seen || !made && pos.Next != r.at {
			r.before = pos.Next // not where an earlier attempt's moves left it
		}
		to, err := w.checkLogBounds(ctx, p, pos, ends, &starts, &m)
		if m != nil {
			sent[p] = m
		}
		r.at = to.Next // also on an error: a move made before it is this worker's
		read[p] = r
		if err != nil {
			return err
		}
		stored[p] = to
	}
	return nil
}

// storedRead is, for a partition being resumed, its stored offset as
// resumeFromStore read it before its own moves (before), and where they
// left it (at): an attempt that reads it there again, or where a move
// whose answer was lost put it (foundMade), keeps before; one that finds it
// elsewhere (another replica moved it) takes what it reads.
type storedRead struct{ before, at int64 }

// checkLogBounds is checkLogEnds for partition p, stored at pos: it moves
// the stored offset back when the log ends below pos (rewind), then forward
// when the log starts above where it stands (skipRetained), and returns
// where it stands. starts are listed the first time they are needed; sent
// is set as moveOffset sets it.
func (w *Worker) checkLogBounds(ctx context.Context, p int32, pos store.Position, ends kadm.ListedOffsets, starts *kadm.ListedOffsets, sent **offsetMove) (store.Position, error) {
	topic := w.cfg.Names.Commands
	if end, found := ends.Lookup(topic, p); found && end.Offset < pos.Next {
		to, err := w.rewind(ctx, p, pos, sent)
		if err != nil {
			return pos, fmt.Errorf("the commands topic's partition %d ends at %d, below the stored offset %d: %w", p, end.Offset, pos.Next, err)
		}
		// The log may also start above where it moved back to (it lost
		// its tail and retention moved its start past it): checked too.
		pos = to
	}
	if *starts == nil {
		var err error
		if *starts, err = w.logStarts(ctx); err != nil {
			return pos, err
		}
	}
	if start, found := starts.Lookup(topic, p); found && start.Offset > pos.Next {
		to, err := w.skipRetained(ctx, p, pos, start.Offset, sent)
		if err != nil {
			return pos, fmt.Errorf("the commands topic's partition %d starts at %d, above the stored offset %d: %w", p, start.Offset, pos.Next, err)
		}
		pos = to
	}
	return pos, nil
}

// skipRetained handles partition p, whose log now starts at start, above
// its stored offset pos: the commands from pos to start were deleted by the
// topic's retention (or DeleteRecords) before any replica of the group
// applied them, and nothing can apply them now. It moves the stored offset
// forward to the log start (moveOffset), where the partition resumes as the
// Kafka client would have resumed it unasked, and reports them (retained).
// The move, conditional on pos as every move of a stored offset is, records
// the loss once, not at every assignment until a batch is applied; sent is
// set to it when its outcome is unknown, as rewind's. errTakenOver when the
// stored offset moved meanwhile.
func (w *Worker) skipRetained(ctx context.Context, p int32, pos store.Position, start int64, sent **offsetMove) (store.Position, error) {
	m := offsetMove{from: pos.Next, to: store.Position{Next: start, Epoch: -1}, retained: true}
	if err := w.moveOffset(ctx, p, m, sent); err != nil {
		return pos, err
	}
	return m.to, nil
}

// retained logs at error level and counts (LostMetrics) the commands move m
// of partition p's stored offset to the log start skipped: deleted before
// any replica applied them; answerLost as rewound's.
func (w *Worker) retained(p int32, m offsetMove, answerLost bool) {
	lost := m.to.Next - m.from
	w.commandsLost("retention", lost)
	w.log.Error().Str("topic", w.cfg.Names.Commands).Int32("partition", p).Int64("stored", m.from).Int64("log_start", m.to.Next).Int64("lost", lost).
		Bool("answer_lost", answerLost).
		Msg("commands deleted by the topic's retention before any replica applied them: they are never applied; the partition resumes at its log start (the commands topic's retention.ms must exceed the longest outage)")
}

// seekRewound takes the seeks set since the last poll (seekTo), under w.mu
// by the poll loop, which makes them (SetOffsets, before it allows a
// rebalance, as kgo asks; it drops what the client fetched before, so the
// partition's next records come from there). A partition that lost records
// again meanwhile is checked again instead, in segs: the seek may be above
// the log's new end, where kgo would resume at the log's start unasked.
// No skip of the partition is queued in segs: a seek is set while it is
// losing (a loss's check, a restart), when queueTooLarge skips nothing of
// it, or once its skip committed, the client stopped at that batch since.
// Were there one, it would move the stored offset past records fetched
// again from the seek, lost: it is voided, and the seek made.
//
// detours holds, for a partition marked refetch, a seek to make just
// before: kgo makes a SetOffsets only to another position than the one it
// holds (the last polled offset + 1 with that record's epoch:
// applySetOffsets), and only a seek it makes lets a partition it stopped at
// a batch too large to read be fetched again (assignPartitions clears the
// cursor's fatal state). The detour, the same offset with another epoch,
// is always another position than the seek's, so the seek after it is
// made; nothing is fetched meanwhile that the seek keeps (it drops what
// was fetched).
func (w *Worker) seekRewound(segs [][]segment) (to, detours map[int32]kgo.EpochOffset) {
	if !w.seeks.Swap(false) {
		return nil, nil
	}
	for id, p := range w.parts {
		pos := p.seek.Swap(nil)
		switch {
		case pos == nil:
		case p.lossAgain != nil:
			queueLoss(segs, p, p.lossAgain)
			p.lossAgain = nil
		default:
			if to == nil {
				to = map[int32]kgo.EpochOffset{}
			}
			to[id] = kgo.EpochOffset{Epoch: pos.Epoch, Offset: pos.Next}
			p.losing = false
			voidSkips(segs[p.lane], p) // none: see above
			if p.refetch {
				if detours == nil {
					detours = map[int32]kgo.EpochOffset{}
				}
				detours[id] = kgo.EpochOffset{Epoch: otherEpoch(pos.Epoch), Offset: pos.Next}
				p.refetch = false
			}
		}
	}
	return to, detours
}

// voidSkips empties the skips of partition p queued in segs (its lane's),
// which are then applied as segments of no records.
func voidSkips(segs []segment, p *partition) {
	for i := range segs {
		if segs[i].p == p {
			segs[i].tooLarge = nil
		}
	}
}

// otherEpoch is a leader epoch other than e: none (-1), or 0 for none.
func otherEpoch(e int32) int32 {
	if e >= 0 {
		return -1
	}
	return 0
}

// queueLosses adds the losses the client reported to segs, under w.mu by
// the poll loop; one reported while a check of the partition runs is kept
// for seekRewound.
func (w *Worker) queueLosses(segs [][]segment, losses []*kgo.ErrDataLoss) {
	for _, lost := range losses {
		switch p := w.parts[lost.Partition]; {
		case p == nil || p.stopped():
		case p.losing:
			p.lossAgain = lost
		default:
			queueLoss(segs, p, lost)
		}
	}
}

// queueLoss adds the news of partition p's loss to segs; p's records are
// dropped until the seek its check sets.
func queueLoss(segs [][]segment, p *partition, lost *kgo.ErrDataLoss) {
	p.losing = true
	p.pending.Add(1)
	segs[p.lane] = append(segs[p.lane], segment{p: p, lost: lost})
}
