package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/handlers/rules"
	"github.com/omninode/lockworker/topics"
)

// Sessions (docs/design.md "Sessions"). A session is a sessions row, kept
// alive by its own commands, which its record key (its id) sends to one
// commands partition: that partition's expiry scheduler ends it. Its
// leases (lock_holders rows with its session_id and no expires_at of their
// own) and waits live on the partitions of their locks; its end, by
// session_close or by the scheduler, deletes the row first and then locks
// every lock it holds or waits for, sorted by key, in the same
// transaction, so that no acquire can add to it meanwhile: an acquire takes
// a key-share lock on the row (which keep-alives, updating no key, never
// wait for) and finds it gone once the end commits; only on a row not past
// its expiry, so that one refused for that holds nothing the end, which
// skips locked rows, would wait for (sessionAcquire). An acquire by the
// holder of a session's lease that reads the session past its expiry,
// and would end that lease (one without a session_id, or in another live
// session of its owner's), takes a share lock on its row (waiting for a
// keep-alive in flight), and reads the time again after it, before it
// ends that lease (rereadLapsedSession); one refused for its session_id,
// or in that lease's own session, does neither.
//
// A session_id may be opened again once its session ended: each life has a
// generation of its own (sessions.generation, from a sequence), which its
// session events tell. A command naming another generation than the live
// one's (session_generation: sent in an earlier life, applied after the
// reopen) is refused SESSION_NOT_FOUND and changes nothing of the session
// (sessionProblem, refuseSession); one naming none acts on the live life.

// sessionExpiry is the expiry of the session of the lock_holders or
// lock_waiters row it is read with (its session_id; sessions has no column
// of that name, so the name is the outer row's).
const sessionExpiry = `(SELECT s.expires_at FROM sessions s WHERE s.id = session_id)`

// ownExpiry is what lock_holders.expires_at stores for h: nothing for a
// session's lease, which ends with its session.
func ownExpiry(h rules.Holder) *time.Time {
	if h.Session != "" {
		return nil
	}
	return &h.ExpiresAt
}

// session is a sessions row, with the database time it was read at.
type session struct {
	id, owner, replyTo string
	ttl                float64
	generation         int64
	expiresAt, now     time.Time
}

// sessionCols are a sessions row's columns and the time; renewedCols those
// of a session just given a new expiry from clock_timestamp(), the time
// being that one.
const (
	sessionFields = `id, owner_id, ttl, expires_at, coalesce(reply_to, ''), generation`
	sessionCols   = sessionFields + `, clock_timestamp()`
	renewedCols   = sessionFields + `, expires_at - make_interval(secs => ttl)`
)

func (s *session) dest() []any {
	return []any{&s.id, &s.owner, &s.ttl, &s.expiresAt, &s.replyTo, &s.generation, &s.now}
}

func (s *session) info() *topics.SessionInfo {
	return &topics.SessionInfo{SessionID: s.id, OwnerID: s.owner, TTL: s.ttl, ExpiresAt: topics.NewTime(s.expiresAt), Generation: s.generation}
}

// readSession reads the command's session, locked with lock ("FOR UPDATE"
// and the like, which may begin with a further condition; "": unlocked);
// nil when there is no such row. Its time is read once the row is locked
// (timedAfterLock).
func (a *applier) readSession(ctx context.Context, lock string) (*session, error) {
	var s session
	err := a.tx.QueryRow(ctx, timedAfterLock(`SELECT `+sessionFields+` FROM sessions WHERE id = $1 `+lock), a.cmd.SessionID).Scan(s.dest()...)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading session %q: %w", a.cmd.SessionID, err)
	}
	return &s, nil
}

// sessionProblem is why the command may not use session s: missing or past
// its expiry, or another life of its id than the command names
// (SESSION_NOT_FOUND), or another owner's (NOT_OWNER).
func (a *applier) sessionProblem(s *session) (code, msg string) {
	g := a.cmd.SessionGeneration
	switch {
	case s == nil:
		return topics.CodeSessionNotFound, fmt.Sprintf("session %q is not open (never opened, closed, or expired)", a.cmd.SessionID)
	case !s.expiresAt.After(s.now):
		return expired(s.id)
	case g != nil && *g < s.generation:
		// Sent in an earlier life of the id, applied only after it was
		// opened again: that life has ended, and this one is not the
		// command's to use.
		return topics.CodeSessionNotFound, fmt.Sprintf("session %q of generation %d is not open (it ended; the session_id was opened again)", s.id, *g)
	case g != nil && *g > s.generation:
		// No life of the id had it yet: a made-up or corrupted generation.
		return topics.CodeSessionNotFound, fmt.Sprintf("session %q of generation %d was never opened", s.id, *g)
	case s.owner != a.cmd.OwnerID:
		return topics.CodeNotOwner, fmt.Sprintf("session %q belongs to another owner", s.id)
	}
	return "", ""
}

// expired refuses the command for session id, past its expiry.
func expired(id string) (code, msg string) {
	return topics.CodeSessionNotFound, fmt.Sprintf("session %q has expired", id)
}

// sessionEvent starts an event of the current command about a session.
func (a *applier) sessionEvent(typ string, s *session, now time.Time) *pending {
	ev := topics.NewEvent(typ, a.cmd.Operation, a.cmd.RequestID, now)
	if s != nil {
		ev.SessionInfo = s.info()
	}
	return &pending{ev: &ev, polledAt: a.polledAt}
}

// refuseSession answers a session command lock.rejected. A session whose
// row is still there past its expiry (before its scheduler) is ended as
// expired first, as the scheduler would: the command holds its row, so a
// hand-off that met it locked meanwhile has its grant ended with it
// (rules.Lock.SessionLive). A live one is left as it is, refused for
// another generation as for another owner.
func (a *applier) refuseSession(ctx context.Context, s *session, code, msg string) error {
	if s != nil && !s.expiresAt.After(s.now) {
		if err := a.endSession(ctx, s); err != nil {
			return err
		}
	}
	now := time.Time{}
	if s != nil {
		now = s.now
	} else if err := a.tx.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&now); err != nil {
		return fmt.Errorf("reading the time: %w", err)
	}
	p := a.sessionEvent(topics.TypeRejected, nil, now)
	p.ev.ErrorCode, p.ev.ErrorMessage = code, msg
	a.reply(p)
	return nil
}

// sessionOpen opens a session of the command's owner for ttl (default
// topics.DefaultSessionTTLSeconds). A session_id in use is refused; one
// past its expiry that its partition's scheduler has not ended yet is ended
// here as expired, then opened again, as keep-alive and acquire already
// call it not found.
func (a *applier) sessionOpen(ctx context.Context) error {
	c := a.cmd
	ttl := c.TTL
	if ttl == 0 {
		ttl = topics.DefaultSessionTTLSeconds
	}
	var s session
	open := func() error {
		return a.tx.QueryRow(ctx, `
			INSERT INTO sessions (id, owner_id, ttl, expires_at, reply_to, source_partition)
			VALUES ($1, $2, $3, clock_timestamp() + make_interval(secs => $3), nullif($4, ''), $5)
			ON CONFLICT (id) DO NOTHING
			RETURNING `+renewedCols, c.SessionID, c.OwnerID, ttl, c.ReplyTo, a.env.Partition).Scan(s.dest()...)
	}
	err := open()
	if errors.Is(err, pgx.ErrNoRows) {
		old, rerr := a.readSession(ctx, `FOR UPDATE`)
		if rerr != nil {
			return rerr
		}
		switch {
		case old == nil: // ended meanwhile
			err = open()
		case !old.expiresAt.After(old.now):
			if err := a.endSession(ctx, old); err != nil {
				return err
			}
			err = open()
		}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return a.refuseSession(ctx, nil, topics.CodeSessionExists,
			fmt.Sprintf("session %q is in use: open a session with a new session_id", c.SessionID))
	}
	if err != nil {
		return fmt.Errorf("opening session %q: %w", c.SessionID, err)
	}
	a.reply(a.sessionEvent(topics.TypeSessionOpened, &s, s.now))
	return nil
}

// sessionKeepAlive keeps the owner's live session alive for its ttl from
// now. The partition that sees it watches the session from then on. A
// session past its expiry is ended as expired and the keep-alive refused
// SESSION_NOT_FOUND, as a close does (refuseSession).
func (a *applier) sessionKeepAlive(ctx context.Context) error {
	s, err := a.readSession(ctx, `FOR NO KEY UPDATE`)
	if err != nil {
		return err
	}
	if code, msg := a.sessionProblem(s); code != "" {
		return a.refuseSession(ctx, s, code, msg)
	}
	err = a.tx.QueryRow(ctx, `UPDATE sessions SET expires_at = clock_timestamp() + make_interval(secs => ttl), source_partition = $2
		WHERE id = $1 RETURNING `+renewedCols, s.id, a.env.Partition).Scan(s.dest()...)
	if err != nil {
		return fmt.Errorf("keeping session %q alive: %w", s.id, err)
	}
	a.reply(a.sessionEvent(topics.TypeSessionKeptAlive, s, s.now))
	return nil
}

// sessionClose closes the owner's live session: every lease it holds is
// released and every wait withdrawn (endSessions). A session past its
// expiry is ended as expired and the close refused SESSION_NOT_FOUND.
func (a *applier) sessionClose(ctx context.Context) error {
	s, err := a.readSession(ctx, `FOR UPDATE`)
	if err != nil {
		return err
	}
	if code, msg := a.sessionProblem(s); code != "" {
		return a.refuseSession(ctx, s, code, msg)
	}
	p := a.sessionEvent(topics.TypeSessionClosed, s, s.now)
	if err := a.endSessions(ctx, []*session{s}, rules.ReasonSessionClosed, []*topics.SessionInfo{p.ev.SessionInfo}); err != nil {
		return err
	}
	a.reply(p)
	if s.replyTo != "" && s.replyTo != a.cmd.ReplyTo {
		a.emit(s.replyTo, topics.SessionKey(s.id), p)
	}
	return nil
}

// endSession ends the session s, locked by the caller, as expired.
func (a *applier) endSession(ctx context.Context, s *session) error {
	return a.expireSessions(ctx, []*session{s})
}

// expireSessions ends the sessions ss, locked by the caller, as expired:
// session.expired goes to each one's reply_to.
func (a *applier) expireSessions(ctx context.Context, ss []*session) error {
	infos := make([]*topics.SessionInfo, len(ss))
	for i, s := range ss {
		infos[i] = s.info()
	}
	if err := a.endSessions(ctx, ss, rules.ReasonSessionExpired, infos); err != nil {
		return err
	}
	for i, s := range ss {
		ev := topics.NewEvent(topics.TypeSessionExpired, topics.OpExpire, "", s.now)
		ev.SessionInfo = infos[i]
		if s.replyTo != "" {
			a.emit(s.replyTo, topics.SessionKey(s.id), &pending{ev: &ev})
		}
		a.caused = append(a.caused, ev)
	}
	return nil
}

// sessionLocksSQL finds the locks of the sessions $1 (text[]), in key
// order, and which of the sessions each has, by the indexes on session_id.
const sessionLocksSQL = `
	SELECT namespace, lock_name, session_id FROM lock_holders WHERE session_id = ANY($1)
	UNION SELECT namespace, lock_name, session_id FROM lock_waiters WHERE session_id = ANY($1)
	ORDER BY 1, 2`

// endSessions deletes the rows of the sessions ss, then ends their leases
// and waits on every lock, the locks taken in key order, each lock once
// for all of them (rules.Lock.EndSessions), and counts them in infos (one
// per session).
func (a *applier) endSessions(ctx context.Context, ss []*session, reason string, infos []*topics.SessionInfo) error {
	ids := make([]string, len(ss))
	at := make(map[string]int, len(ss))
	for i, s := range ss {
		ids[i], at[s.id] = s.id, i
	}
	what := fmt.Sprintf("session %q", ids[0]) // for errors, bounded
	if len(ids) > 1 {
		what = fmt.Sprintf("%d sessions", len(ids))
	}
	if _, err := a.tx.Exec(ctx, `DELETE FROM sessions WHERE id = ANY($1)`, ids); err != nil {
		return fmt.Errorf("ending %s: %w", what, err)
	}
	// After the delete: an acquire that held a row meanwhile has
	// committed, and this statement sees its lease or wait.
	rows, err := a.tx.Query(ctx, sessionLocksSQL, ids)
	if err != nil {
		return fmt.Errorf("finding the locks of %s: %w", what, err)
	}
	// on is the sessions each lock has: the lock's load reads their waits
	// (only theirs: an array of every session per lock would grow as their
	// square), and no other session's can appear, since an acquire in one
	// holds its row (sessionAcquire) and the rows are gone.
	var locks []lockKey
	on := map[lockKey][]string{}
	var k lockKey
	var id string
	if _, err := pgx.ForEachRow(rows, []any{&k.ns, &k.name, &id}, func() error {
		if len(locks) == 0 || locks[len(locks)-1] != k {
			locks = append(locks, k)
		}
		on[k] = append(on[k], id)
		return nil
	}); err != nil {
		return fmt.Errorf("finding the locks of %s: %w", what, err)
	}
	// However many they are, all in this transaction: every lock of a
	// session is free at once, never some before others (docs/design.md
	// "Sessions"), so only each round trip is bounded (settleLocks).
	err = a.settleLocks(ctx, locks, on, lockRowSQL, lockPartition,
		func(k lockKey, st *lockState) []rules.Effect {
			// Their leases end at their session's expiry, which their rows
			// could not read from the rows deleted above (holderCols).
			for i := range st.l.Holders {
				if j, ok := at[st.l.Holders[i].Session]; ok {
					st.l.Holders[i].ExpiresAt = ss[j].expiresAt
				}
			}
			effs := st.l.EndSessions(on[k], st.ending, reason)
			for _, e := range effs {
				switch e.Kind {
				case rules.Lose:
					infos[at[e.Holder.Session]].Leases++
				case rules.Drop:
					// A hand-off may also drop the wait of a session past
					// its expiry that is not one of these (rules.HandOff).
					if j, ok := at[e.Waiter.Session]; ok {
						infos[j].Waits++
					}
				}
			}
			return effs
		})
	if err != nil {
		return fmt.Errorf("ending %s: %w", what, err)
	}
	return nil
}

// endDueSessions ends the partition's sessions past their expiry (at most
// MaxSweep) together, skipping those another transaction holds (a
// keep-alive, or a close). It returns how many it ended.
func (a *applier) endDueSessions(ctx context.Context) (int, error) {
	rows, err := a.tx.Query(ctx, `SELECT `+sessionCols+` FROM sessions
		WHERE source_partition = $1 AND expires_at <= statement_timestamp()
		ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED`, a.env.Partition, MaxSweep)
	if err != nil {
		return 0, fmt.Errorf("finding expired sessions: %w", err)
	}
	var due []*session
	var s session
	if _, err := pgx.ForEachRow(rows, s.dest(), func() error { c := s; due = append(due, &c); return nil }); err != nil {
		return 0, fmt.Errorf("finding expired sessions: %w", err)
	}
	if len(due) == 0 {
		return 0, nil
	}
	return len(due), a.expireSessions(ctx, due)
}

// sessionAcquire is an acquire with a session_id: the session must be the
// owner's and live; the lease it grants and the wait it queues end with
// the session.
func (a *applier) sessionAcquire(ctx context.Context) error {
	c := a.cmd
	// Only a live session's row is locked. An acquire refused for a
	// session past its expiry would otherwise hold the row to the end of
	// its batch, and the session's end, which skips a locked row, would
	// leave its leases held past ttl + 1 s while such acquires keep coming.
	s, err := a.readSession(ctx, `AND expires_at > clock_timestamp() FOR KEY SHARE`)
	if err != nil {
		return err
	}
	code, msg := a.sessionProblem(s)
	if s == nil {
		// Refused: read without a lock whether the session was there. It
		// was past its expiry, even if a keep-alive or an open that had
		// not committed then has made it live since (its row unlocked, no
		// lease may be added to it here).
		if s, err = a.readSession(ctx, ``); err != nil {
			return err
		}
		if s != nil {
			code, msg = expired(s.id)
		}
	}
	st, err := a.loadLock(ctx, c.Namespace, c.LockName, c.OwnerID, code == "")
	if err != nil {
		return err
	}
	if code == "" && !s.expiresAt.After(st.l.Now) {
		// Past the expiry read before the lock's row was waited for, a
		// keep-alive (which the key-share lock does not wait for) may have
		// renewed it meanwhile: read it again, as only this case needs to
		// (the key-share lock keeps the row). Renewed, it is granted with
		// the new expiry.
		if err := a.tx.QueryRow(ctx, `SELECT expires_at FROM sessions WHERE id = $1`, s.id).Scan(&s.expiresAt); err != nil {
			return fmt.Errorf("reading session %q again: %w", s.id, err)
		}
		st.l.RenewSession(s.id, s.expiresAt) // its lease here, read before, would lapse
		if !s.expiresAt.After(st.l.Now) {
			// It expired while the lock's row was waited for.
			code, msg = expired(s.id)
			if st.row.status == topics.StatusFree {
				// loadLock created the row for this acquire (free exists
				// only inside the transaction creating a row): the refusal
				// leaves none, as when the refusal was known before.
				if _, err := a.tx.Exec(ctx, `DELETE FROM locks WHERE namespace = $1 AND lock_name = $2 AND status = 'free'`,
					c.Namespace, c.LockName); err != nil {
					return fmt.Errorf("deleting the new row of lock %q: %w", c.Key(), err)
				}
			}
		}
	}
	if code != "" {
		// Refused for its session, it still settles the lock whose row it
		// locked, as every command on a lock does (a refused release or
		// extend too: rules.Lock.Release, Extend), and shows it settled:
		// leases that ran out end, a lock-delay that passed is cleared, and
		// the lock goes to its waiters, in one change with the refusal.
		// Only a lease of its owner's in a session past its expiry stays
		// (Settle does not end a session's lease): the session's end takes
		// it, as only an acquire that may be granted ends it (lapsed).
		effs, _ := st.l.Settle()
		return a.apply(ctx, st, append(effs, rules.Effect{Kind: rules.Refuse, Code: code, Message: msg, Info: st.l.Info()}))
	}
	r := a.request()
	r.Session, r.SessionExpires = s.id, s.expiresAt
	return a.apply(ctx, st, st.l.Acquire(r))
}

// lost tells a holder that its session's end ended its lease: on its
// reply_to and the lifecycle topic, lock.released for a closed session,
// lock.expired for an expired one, with the reason.
func (a *applier) lost(r *lockRow, e rules.Effect) {
	typ, op := topics.TypeExpired, topics.OpExpire
	if e.Info.Status == rules.Released {
		typ, op = topics.TypeReleased, topics.OpSessionClose
	}
	a.ended(r, typ, op, e.Reason, e.Info, e.Holder.ReplyTo)
}

// dropped answers a waiting acquire that its session's end withdrew it.
func (a *applier) dropped(r *lockRow, e rules.Effect) {
	a.answer(topics.TypeWithdrawn, topics.OpAcquire, e.Waiter.RequestID, e.Waiter.ReplyTo, r, e.Info,
		func(ev *topics.Event) { ev.Reason = e.Reason })
}
