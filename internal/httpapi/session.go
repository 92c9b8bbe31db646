package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/topics"
)

// SessionView is /sessions/{id}: an open session (topics.OpSessionOpen) and
// what it holds and waits for, so an operator can follow a lock's holder
// (its session_id) to the process that keeps it alive.
type SessionView struct {
	SessionID string `json:"session_id"`
	// Generation tells this life of the session id from earlier and later
	// ones (session_info.generation of its session.opened).
	Generation int64   `json:"generation"`
	OwnerID    string  `json:"owner_id"`
	TTL        float64 `json:"ttl"`
	// Status is open, or expired for a session past expires_at that its
	// partition's expiry scheduler has not ended yet.
	Status    string      `json:"status"`
	ExpiresAt topics.Time `json:"expires_at"`
	// ExpiresInSeconds is the time left until the session ends without a
	// keep-alive; negative once expired.
	ExpiresInSeconds float64     `json:"expires_in_seconds"`
	OpenedAt         topics.Time `json:"opened_at"`
	// Partition is the commands partition whose replica watches it.
	Partition int32 `json:"source_partition"`
	// Holding lists the locks held in the session and Waiting the acquires
	// queued in it, each the first MaxSessionLocksShown by name; the counts
	// are of all.
	HoldingCount int           `json:"holding_count"`
	Holding      []SessionLock `json:"holding"`
	WaitingCount int           `json:"waiting_count"`
	Waiting      []SessionLock `json:"waiting"`
	// CheckedAt is the database time of the reading.
	CheckedAt topics.Time `json:"checked_at"`
}

// SessionLock is a lock held or waited for in a session.
type SessionLock struct {
	Namespace string `json:"namespace,omitempty"`
	LockName  string `json:"lock_name"`
	Mode      string `json:"mode"`
	// FencingToken is the holder's; absent for a waiter.
	FencingToken *int64 `json:"fencing_token,omitempty"`
}

// MaxSessionLocksShown bounds each list of /sessions/{id}.
const MaxSessionLocksShown = 1000

// Session statuses of SessionView.Status.
const (
	SessionOpen    = "open"
	SessionExpired = "expired"
)

var errNoSession = errors.New("no such session")

// session answers 400 for an id the contract refuses, 404 for a session
// that is not open (never opened, closed or ended), else the session and
// its locks read in one snapshot.
func (s *server) session(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if id == "" {
		writeError(w, http.StatusBadRequest, "a session id is required: GET /sessions/{id}")
		return
	}
	// The contract's bounds on session_id, as a keep-alive would meet them.
	if refused(w, topics.Command{Operation: topics.OpSessionKeepAlive, SessionID: id, OwnerID: "-"}) {
		return
	}
	var v SessionView
	err := s.snapshot(r.Context(), func(ctx context.Context, tx pgx.Tx) (err error) {
		v, err = readSession(ctx, tx, id)
		return err
	})
	switch {
	case errors.Is(err, errNoSession):
		writeError(w, http.StatusNotFound, fmt.Sprintf("session %q is not open: never opened, closed, or ended", id))
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("reading session %q: %v", id, err))
	default:
		writeJSON(w, http.StatusOK, v)
	}
}

func readSession(ctx context.Context, tx pgx.Tx, id string) (SessionView, error) {
	v := SessionView{SessionID: id, Holding: []SessionLock{}, Waiting: []SessionLock{}}
	var expires, opened, now time.Time
	err := tx.QueryRow(ctx, `
		SELECT generation, owner_id, ttl, expires_at, created_at, source_partition, clock_timestamp()
		FROM sessions WHERE id = $1`, id).Scan(&v.Generation, &v.OwnerID, &v.TTL, &expires, &opened, &v.Partition, &now)
	if errors.Is(err, pgx.ErrNoRows) {
		return v, errNoSession
	}
	if err != nil {
		return v, fmt.Errorf("reading the session: %w", err)
	}
	v.ExpiresAt, v.OpenedAt, v.CheckedAt = topics.NewTime(expires), topics.NewTime(opened), topics.NewTime(now)
	v.ExpiresInSeconds = expires.Sub(now).Seconds()
	v.Status = SessionOpen
	if !expires.After(now) {
		v.Status = SessionExpired
	}
	for _, q := range []struct {
		sql   string
		count *int
		into  *[]SessionLock
	}{
		{`SELECT namespace, lock_name, mode, fencing_token, count(*) OVER () FROM lock_holders
		  WHERE session_id = $1 ORDER BY namespace, lock_name LIMIT $2`, &v.HoldingCount, &v.Holding},
		{`SELECT namespace, lock_name, mode, NULL::bigint, count(*) OVER () FROM lock_waiters
		  WHERE session_id = $1 ORDER BY namespace, lock_name, id LIMIT $2`, &v.WaitingCount, &v.Waiting},
	} {
		rows, err := tx.Query(ctx, q.sql, id, MaxSessionLocksShown)
		if err != nil {
			return v, fmt.Errorf("reading the session's locks: %w", err)
		}
		var l SessionLock
		_, err = pgx.ForEachRow(rows, []any{&l.Namespace, &l.LockName, &l.Mode, &l.FencingToken, q.count}, func() error {
			*q.into = append(*q.into, l)
			l = SessionLock{}
			return nil
		})
		if err != nil {
			return v, fmt.Errorf("reading the session's locks: %w", err)
		}
	}
	return v, nil
}
