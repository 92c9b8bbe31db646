package httpapi

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/topics"
)

// LockView is /locks/{name}: a lock as the query operation sees it, with its
// queue.
type LockView struct {
	// LockInfo is the contract's lock_info, as lock.status gives it: the
	// newest holder (owner_id, mode, fencing_token, acquired_at,
	// expires_at), status (expired for a lease past expires_at not yet
	// ended), the lock's limit, holder_count and every holder (holders).
	LockInfo *topics.LockInfo `json:"lock_info"`
	// ExpiresInSeconds is the time left of a lease in force.
	ExpiresInSeconds *float64 `json:"expires_in_seconds,omitempty"`
	// QueueLength counts the waiters; Queue lists the first MaxQueueShown in
	// the order they will be served.
	QueueLength int             `json:"queue_length"`
	Queue       []QueuedAcquire `json:"queue"`
	// CheckedAt is the database time of the reading.
	CheckedAt topics.Time `json:"checked_at"`
	// Redacted: owner_metadata and the waiters' request_ids are left out,
	// for a caller without the INSPECT_TOKEN (people put secrets in
	// metadata; a request_id lets one replay or withdraw a request).
	Redacted bool `json:"redacted,omitempty"`
}

// QueuedAcquire is one waiter.
type QueuedAcquire struct {
	Position      int         `json:"position"`
	OwnerID       string      `json:"owner_id"`
	Mode          string      `json:"mode"`
	RequestID     string      `json:"request_id,omitempty"`
	LeaseDuration float64     `json:"lease_duration"`
	QueuedAt      topics.Time `json:"queued_at"`
	// Deadline is when the wait ends with LOCK_TIMEOUT.
	Deadline topics.Time `json:"deadline"`
}

// MaxQueueShown bounds the queue listed by /locks/{name}.
const MaxQueueShown = 1000

var errNoLock = errors.New("no such lock")

// lock answers 400 for a name the contract refuses or a query string that
// does not parse, repeats namespace or gives another key, 404 for a lock without a row, else
// the lock and its queue read in one snapshot.
func (s *server) lock(w http.ResponseWriter, r *http.Request) {
	ns, err := namespaceParam(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	q := topics.Command{Operation: topics.OpQuery, Namespace: ns, LockName: r.PathValue("name")}
	if refused(w, q) {
		return
	}
	var v LockView
	err = s.snapshot(r.Context(), func(ctx context.Context, tx pgx.Tx) (err error) {
		v, err = readLock(ctx, tx, q)
		return err
	})
	switch {
	case errors.Is(err, errNoLock):
		writeError(w, http.StatusNotFound, fmt.Sprintf("lock %q has no row: never acquired, or cleaned up", q.Key()))
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("reading lock %q: %v", q.Key(), err))
	default:
		if !s.authorized(r) {
			v.redact()
		}
		writeJSON(w, http.StatusOK, v)
	}
}

// redact leaves out what only an authorized caller may see.
func (v *LockView) redact() {
	v.Redacted = true
	v.LockInfo.OwnerMetadata = nil
	for i := range v.LockInfo.Holders {
		v.LockInfo.Holders[i].OwnerMetadata = nil
	}
	for i := range v.Queue {
		v.Queue[i].RequestID = ""
	}
}

// readLock runs the query operation of the state machine, so the page says
// what a query command would, and reads the queue. The transaction is read
// only: the operation, without request_id or reply_to, writes nothing.
func readLock(ctx context.Context, tx pgx.Tx, q topics.Command) (LockView, error) {
	evs, err := handlers.NewBatch(tx, handlers.Env{}).Apply(ctx, q, time.Time{})
	if err != nil {
		return LockView{}, err
	}
	if len(evs) != 1 || evs[0].LockInfo == nil {
		return LockView{}, fmt.Errorf("query of %q answered %d events", q.Key(), len(evs))
	}
	li, now := evs[0].LockInfo, evs[0].OccurredAt
	if li.Status == topics.StatusFree {
		return LockView{}, errNoLock
	}
	v := LockView{LockInfo: li, CheckedAt: now, Queue: []QueuedAcquire{}}
	if li.Status == topics.StatusAcquired && li.ExpiresAt != nil {
		left := li.ExpiresAt.Sub(now.Time).Seconds()
		v.ExpiresInSeconds = &left
	}
	rows, err := tx.Query(ctx, `
		SELECT owner_id, mode, request_id, lease_duration, enqueued_at, deadline, count(*) OVER ()
		FROM lock_waiters WHERE namespace = $1 AND lock_name = $2 ORDER BY id LIMIT $3`, q.Namespace, q.LockName, MaxQueueShown)
	if err != nil {
		return LockView{}, fmt.Errorf("reading the queue of %q: %w", q.Key(), err)
	}
	var w QueuedAcquire
	var queued, deadline time.Time
	_, err = pgx.ForEachRow(rows, []any{&w.OwnerID, &w.Mode, &w.RequestID, &w.LeaseDuration, &queued, &deadline, &v.QueueLength}, func() error {
		w.Position, w.QueuedAt, w.Deadline = len(v.Queue)+1, topics.NewTime(queued), topics.NewTime(deadline)
		v.Queue = append(v.Queue, w)
		return nil
	})
	if err != nil {
		return LockView{}, fmt.Errorf("reading the queue of %q: %w", q.Key(), err)
	}
	return v, nil
}

// namespaceParam is the query's namespace, empty when absent. A query that
// does not parse, gives namespace more than once, or gives another key (a
// misspelt namespace) is an error: each would answer about another lock,
// the default namespace's (url.URL.Query drops the pairs it cannot parse).
func namespaceParam(r *http.Request) (string, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return "", fmt.Errorf("malformed query string: %w", err)
	}
	for _, key := range slices.Sorted(maps.Keys(q)) {
		if key != "namespace" {
			return "", fmt.Errorf("unknown query parameter %.64q: only namespace is read", key)
		}
	}
	if n := len(q["namespace"]); n > 1 {
		return "", fmt.Errorf("namespace is given %d times: give it once", n)
	}
	return q.Get("namespace"), nil
}

// refused answers 400 with the contract's reason when it refuses c, the
// command a path names (a lock, a session), and reports whether it did.
func refused(w http.ResponseWriter, c topics.Command) bool {
	err := topics.Validate(c, "")
	if err == nil {
		return false
	}
	var rej *topics.Rejection
	if errors.As(err, &rej) {
		err = errors.New(rej.Message)
	}
	writeError(w, http.StatusBadRequest, err.Error())
	return true
}

// snapshot runs read in one read-only transaction that sees one snapshot,
// bounded by Config.CheckTimeout.
func (s *server) snapshot(ctx context.Context, read func(context.Context, pgx.Tx) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CheckTimeout)
	defer cancel()
	return s.withDB(ctx, func(ctx context.Context) error {
		return pgx.BeginTxFunc(ctx, s.cfg.Pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly},
			func(tx pgx.Tx) error { return read(ctx, tx) })
	})
}
