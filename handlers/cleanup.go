package handlers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/handlers/rules"
	"github.com/omninode/lockworker/topics"
)

// MaxCleanedNames bounds cleaned_lock_names, so a large cleanup's answer stays
// within Kafka's default record size; cleaned_count is always exact.
const MaxCleanedNames = 1000

// MaxCleanup bounds one cleanup command: it selects at most this many
// holder rows of ended leases, oldest expiry first, and deletes at most this
// many idle rows, oldest first. Its transaction holds its commands partition
// (that partition's commands and expiry scheduler wait behind it), and each
// row it ends or deletes holds a row lock and an event or tombstone in
// memory until the commit, so a namespace of millions of idle rows must not
// make one command of them. The bound counts holder rows selected, not
// leases ended: each lock they name is settled whole, every ended lease of
// it (a semaphore's many holders), so a command may end more leases than
// this. It bounds what a command writes and keeps in memory, not what it
// reads: to pick the oldest, a command reads and sorts every idle row and
// ended lease of its scope (no index orders a namespace's locks by age: one
// would cost every release an index entry), so its time grows with the
// namespace (docs/design.md, Cleanup). The periodic cleanup picks its
// partition's oldest on an index and does not pay that. Its answer says
// more (lock.cleaned's more) when a statement reached the bound, the holder
// rows selected of locks it skipped (another transaction holds them)
// counted too, for the caller to send it again.
const MaxCleanup = 10_000

// cleanupBoundKey, in the context a command is applied with, bounds its
// cleanup at another number than MaxCleanup: for tests (export_test.go).
type cleanupBoundKey struct{}

// cleanup ends every lease past expires_at (each with lock.expired, waiters
// granted) and deletes released, expired or revoked rows idle longer than
// max_age_seconds that have no holders, no waiters and no lock-delay still
// running, for one lock or all ("*") of the command's namespace, up to
// MaxCleanup of each.
func (a *applier) cleanup(ctx context.Context) error {
	c := a.cmd
	maxAge := float64(topics.DefaultMaxAgeSeconds)
	if c.MaxAgeSeconds != nil {
		maxAge = *c.MaxAgeSeconds
	}
	// "*" means every lock of the command's namespace: a tenant cannot sweep
	// another's locks (the scheduler and periodic cleanup cover them all).
	f := sweepFilter{maxAge: &maxAge, namespace: &c.Namespace, limit: MaxCleanup, countSkipped: true}
	if n, ok := ctx.Value(cleanupBoundKey{}).(int); ok {
		f.limit = n
	}
	if c.LockName != topics.CleanupAll {
		f.name = &c.LockName
	}
	names, now, full, err := a.sweep(ctx, f)
	if err != nil {
		return err
	}
	ev := topics.NewEvent(topics.TypeCleaned, c.Operation, c.RequestID, now)
	n := len(names)
	ev.CleanedCount = &n
	ev.CleanedLockNames = names[:min(n, MaxCleanedNames)]
	// Stopped at the bound, it may have left more, also behind the locks
	// it skipped: sent again once their transactions end, it settles them
	// and goes on.
	ev.More = full
	a.reply(&pending{ev: &ev, polledAt: a.polledAt})
	return nil
}

// sweepFilter narrows a sweep. Nil fields do not filter; a nil maxAge deletes
// no rows; limit bounds the holder rows of ended leases selected and the
// idle rows deleted (0: no bound). countSkipped makes the selected rows of
// locks skipped (another transaction holds them) count towards the sweep's
// full: for a caller whose repeats are its own loop, bounded by its
// patience (a cleanup command's more), not for the periodic cleanup, which
// repeats at once and would spin on them while they are held.
type sweepFilter struct {
	namespace, name *string
	partition       *int32
	maxAge          *float64
	limit           int
	countSkipped    bool
}

// statements are the sweep's two statements, finding ended leases and
// deleting idle rows (idleArgs is nil without maxAge), with their arguments. Each
// filter shape has statements of its own, with only the conditions in use,
// so that their generic plans (see store.Open) read by index. Leases end by
// lock_holders.expires_at and idle rows go by updated_at, each compared with
// statement_timestamp(), which (unlike clock_timestamp()) bounds the index
// scan; rows due during the statement wait for the next sweep. A cleanup
// command's statements (no partition) go by the simple protocol, planned for
// their values: a namespace's share of the locks is unknown to a generic
// plan (docs/performance.md).
func (f sweepFilter) statements() (endSQL string, endArgs []any, idleSQL string, idleArgs []any) {
	match, args := f.match()
	n := len(args)
	if f.partition == nil {
		args = append([]any{pgx.QueryExecModeSimpleProtocol}, args...)
	}
	endSQL = fmt.Sprintf(`
		SELECT namespace, lock_name FROM lock_holders
		WHERE expires_at <= statement_timestamp() AND %s
		ORDER BY expires_at LIMIT nullif($%d::int, 0)`, match, n+1)
	endArgs = append(slices.Clip(args), f.limit)
	idleSQL = fmt.Sprintf(`
		DELETE FROM locks WHERE (namespace, lock_name) IN (
			SELECT namespace, lock_name FROM locks
			WHERE status IN ('released', 'expired', 'revoked') AND waiter_count = 0 AND holder_count = 0
				AND (delay_until IS NULL OR delay_until <= statement_timestamp())
				AND updated_at < statement_timestamp() - make_interval(secs => $%d) AND %s
			ORDER BY updated_at LIMIT nullif($%d::int, 0) FOR UPDATE SKIP LOCKED)
		RETURNING namespace, lock_name, source_partition, clock_timestamp()`, n+1, match, n+2)
	if f.maxAge != nil {
		idleArgs = append(slices.Clip(args), *f.maxAge, f.limit)
	}
	return endSQL, endArgs, idleSQL, idleArgs
}

// match is the filter's condition on locks, with its arguments as $1...
func (f sweepFilter) match() (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, fmt.Sprintf(cond, len(args)))
	}
	if f.namespace != nil {
		add("namespace = $%d::text", *f.namespace)
	}
	if f.name != nil {
		add("lock_name = $%d::text", *f.name)
	}
	if f.partition != nil {
		add("source_partition = $%d::int", *f.partition)
	}
	if len(conds) == 0 {
		return "true", nil
	}
	return strings.Join(conds, " AND "), args
}

// MaxSweep bounds what the expiry scheduler and the periodic cleanup take in
// one transaction (they go on in the next), so that a backlog after an
// outage is worked off a bound at a time: the sessions past their expiry,
// the holder rows of ended leases, the waiters past their deadline and the
// passed lock-delays each selects, the idle rows it deletes, and the
// waiters past their deadline that each MaxSweep locks it loads answer
// (dueBound). What those cause grows with the locks and sessions they name,
// not with MaxSweep: a lock is settled whole (every ended lease of it), a
// session's end ends every lease and wait it has, and a hand-off grants
// its whole run of compatible waiters (a run of readers may be thousands,
// their tokens drawn in one round trip). A cleanup command has a bound of
// its own, MaxCleanup.
const MaxSweep = 1000

// sweep ends the ended leases the filter selects and deletes its idle rows,
// returning the keys of the locks it touched, the database time, and
// whether one of its statements reached the filter's limit (full; never
// without a limit): the holder rows of ended leases it selected (of the
// locks it settled, unless countSkipped), or the idle rows it deleted.
// Locks that another transaction has locked are skipped: that transaction
// settles them.
func (a *applier) sweep(ctx context.Context, f sweepFilter) (names []string, now time.Time, full bool, err error) {
	endSQL, endArgs, idleSQL, idleArgs := f.statements()
	rows, err := a.tx.Query(ctx, endSQL, endArgs...)
	if err != nil {
		return nil, time.Time{}, false, fmt.Errorf("finding ended leases: %w", err)
	}
	var due []lockKey
	held := map[lockKey]int{} // the holder rows selected of each lock
	selected := 0
	var k lockKey
	if _, err := pgx.ForEachRow(rows, []any{&k.ns, &k.name}, func() error {
		if held[k] == 0 {
			due = append(due, k)
		}
		held[k]++
		selected++
		return nil
	}); err != nil {
		return nil, time.Time{}, false, fmt.Errorf("finding ended leases: %w", err)
	}
	named := map[lockKey]bool{} // a row whose lease this sweep ends may be deleted too: name it once
	settled := 0                // the holder rows selected of the locks settled
	err = a.settleLocks(ctx, due, nil, lockRowSkipSQL, lockPartition,
		func(k lockKey, s *lockState) []rules.Effect {
			effs, ended := s.l.Settle()
			if len(ended) > 0 {
				named[k] = true
				names = append(names, topics.LockKey(k.ns, k.name))
				settled += held[k]
			}
			return effs
		})
	if err != nil {
		return nil, time.Time{}, false, fmt.Errorf("ending leases: %w", err)
	}
	// Without countSkipped, only the rows of the locks settled count: those
	// of a lock another transaction holds (skipped) would be selected again
	// first.
	counted := settled
	if f.countSkipped {
		counted = selected
	}
	full = f.limit > 0 && counted >= f.limit
	if f.maxAge == nil {
		err = a.tx.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&now)
		return names, now, full, err
	}
	rows, err = a.tx.Query(ctx, idleSQL, idleArgs...)
	if err != nil {
		return nil, time.Time{}, false, fmt.Errorf("deleting idle rows: %w", err)
	}
	var ns, name string
	var partition int32
	deleted := 0
	for rows.Next() {
		deleted++
		if err := rows.Scan(&ns, &name, &partition, &now); err != nil {
			rows.Close()
			return nil, time.Time{}, false, fmt.Errorf("deleting idle rows: %w", err)
		}
		a.deleted(ns, name, partition)
		if !named[lockKey{ns, name}] {
			names = append(names, topics.LockKey(ns, name))
		}
	}
	if err := rows.Err(); err != nil {
		return nil, time.Time{}, false, fmt.Errorf("deleting idle rows: %w", err)
	}
	full = full || f.limit > 0 && deleted >= f.limit
	if now.IsZero() {
		err = a.tx.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&now)
	}
	return names, now, full, err
}
