package handlers

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/handlers/rules"
	"github.com/omninode/lockworker/topics"
)

// The common cases take one statement: an acquire of a lock that nobody
// holds or waits for (new, released or expired; any mode and limit) or
// that its holders let it join (a reader beside readers, a free place of a
// semaphore) with nobody waiting (two statements then, one for each), a
// holder's release of its lease in force when nobody waits, and a holder's
// extend of its lease in force, both when no lease of the lock has run out
// (the general path would settle it first), the extend also when nobody
// waits or when the lock has no lock-delay (passed or not) and no waiter
// past its deadline (the general path's settling would hand the lock on).
// Every statement but the grant of a lock nobody holds or waits for also
// leaves alone a lock with a lease of a session (the extend: or a wait),
// which a session command earlier in the batch may end (see QueueAtOnce).
// The statement applies only in that case and returns what it changed;
// otherwise it changes nothing and the general path decides
// (handlers/rules). Updating an existing row takes its token and times
// after the row lock, like the general path; creating a row takes them
// before a possible wait on a racing insert of the same lock, so such a
// lease starts a little early.
//
// The statements take arrays, one element per command, so a batch sends the
// common cases of all its commands that may go ahead in one statement per
// operation (QueueAtOnce), in the round trip of its prefetch, before it knows
// which are duplicates: each element applies only if its request_id is new.
// A command applied on its own sends arrays of one. The request_ids already
// stored are read once per statement, by index (= ANY), never by a NOT
// EXISTS per element, which may be planned as a scan of all of
// processed_requests (docs/performance.md).

// A lock's holders change only with its locks row (holder_count, ended_*,
// updated_at), so a statement that updates the row read in its snapshot
// reads that row's holders as they are.

var (
	grantAtOnceSQL = grantSQL(false)
	// grantAfterSQL is grantAtOnceSQL for an acquire that follows a
	// release of its lock sent ahead in the batch, after it: its 13th array
	// names the releasing owner, and it applies only if that release did
	// (the lock's row was last written in this transaction, by a release
	// of that owner's lease). It never creates the row.
	grantAfterSQL = grantSQL(true)
)

// grantSQL is the grant statement; after adds the releasing owners' array.
func grantSQL(after bool) string {
	arrays, columns, released := "", "", "NULL::text"
	if after {
		arrays, columns, released = `, $13::text[]`, `, released`, "u.released"
	}
	// The proposed row carries the releasing owner as ended_owner_id, for
	// the conflict's condition; an existing row keeps its own.
	return `
	WITH u AS (
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::text[], $6::text[], $7::text[], $8::int[], $9::text[], $10::int[],
				$11::float8[], $12::float8[]` + arrays + `)
			WITH ORDINALITY AS u(ns, nm, own, lease, meta, reply, req, part, mode, lim, delay, hold` + columns + `, ord)
		WHERE u.req <> ALL (ARRAY(SELECT request_id FROM processed_requests WHERE request_id = ANY($7)))
			AND (` + released + ` IS NULL OR EXISTS (SELECT FROM locks k WHERE k.namespace = u.ns AND k.lock_name = u.nm))),
	l AS (
		INSERT INTO locks AS l (namespace, lock_name, status, lock_limit, holder_count, shared_count, acquisition_count, source_partition, updated_at, revision,
			ended_owner_id)
		SELECT u.ns, u.nm, 'acquired', u.lim, 1, (u.mode = 'shared')::int, 1, u.part, clock_timestamp(), 1, ` + released + ` FROM u ORDER BY u.ord
		ON CONFLICT (namespace, lock_name) DO UPDATE SET
			status = 'acquired', lock_limit = EXCLUDED.lock_limit, holder_count = 1, shared_count = EXCLUDED.shared_count,
			acquisition_count = l.acquisition_count + 1, source_partition = EXCLUDED.source_partition, updated_at = clock_timestamp(),
			revision = l.revision + 1, delay_until = NULL
		WHERE l.holder_count = 0 AND l.waiter_count = 0 AND (l.delay_until IS NULL OR l.delay_until <= clock_timestamp())
			AND (EXCLUDED.ended_owner_id IS NULL OR (l.xmin = pg_current_xact_id()::xid AND l.ended_owner_id = EXCLUDED.ended_owner_id))
		RETURNING namespace, lock_name, lock_limit, holder_count, acquisition_count, revision, updated_at, nextval('fencing_tokens') AS token),
	v AS (SELECT ` + grantedCols("u") + ` FROM l JOIN u ON u.ns = l.namespace AND u.nm = l.lock_name),
	` + insertGrantedSQL
}

// joinAtOnceSQL, after grantAtOnceSQL on the same arrays, adds a holder to
// a lock held in a compatible way that nobody waits for: a reader beside
// readers, or a semaphore holder where a place is free, with the lock's
// limit, when the owner does not hold it already and no lease of the lock
// has run out or is a session's (see QueueAtOnce). The row is updated by
// the ctid its snapshot read (see holderAtOnceSQL), so the holders that
// snapshot read are the row's. A lock-delay lets it apply only once it has
// passed (by clock_timestamp()), and it clears delay_until then, in its own
// change, as the grant does and the general path's Settle would: left
// there, the scheduler would clear it in a change of its own, and a refusal
// meeting it first would change the lock. Its clock is read before a wait
// for a row another transaction locked without changing it, unlike the
// general path's: a lease that runs out during that wait is settled after
// the join, which is compatible with it (docs/design.md, Semantics, One
// clock).
var joinAtOnceSQL = joinSQL("", "", "")

// joinAfterSQL is joinAtOnceSQL for a reader (or semaphore holder) that
// follows another acquire of its lock in the batch, sent ahead in the same
// round trip, after it: its two more arrays name that acquire's owner and
// request_id, and it applies only if that acquire did (its holder row is
// there, written in this transaction: not a lease that request_id was
// granted before). So when the one before falls to the general path, this one does
// too, and a lock's commands keep their order.
var joinAfterSQL = joinSQL(`, $13::text[], $14::text[]`, `, prev_own, prev_req`, `
			AND EXISTS (SELECT FROM lock_holders p WHERE p.namespace = u.ns AND p.lock_name = u.nm
				AND p.owner_id = u.prev_own AND p.request_id = u.prev_req AND p.xmin = pg_current_xact_id()::xid)`)

// joinSQL is the join statement with more arrays, their columns and a
// condition on them.
func joinSQL(arrays, columns, guard string) string {
	return `
	WITH u AS (
		SELECT u.*, k.tid
		FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::text[], $6::text[], $7::text[], $8::int[], $9::text[], $10::int[],
				$11::float8[], $12::float8[]` + arrays + `)
				AS u(ns, nm, own, lease, meta, reply, req, part, mode, lim, delay, hold` + columns + `),
			LATERAL (SELECT k.ctid AS tid FROM locks k WHERE k.namespace = u.ns AND k.lock_name = u.nm OFFSET 0) k
		WHERE u.req <> ALL (ARRAY(SELECT request_id FROM processed_requests WHERE request_id = ANY($7)))` + guard + `),
	l AS (
		UPDATE locks l SET holder_count = l.holder_count + 1, shared_count = l.shared_count + (u.mode = 'shared')::int,
			acquisition_count = l.acquisition_count + 1, source_partition = u.part, updated_at = clock_timestamp(),
			revision = l.revision + 1, delay_until = NULL
		FROM u
		WHERE l.ctid = ANY (ARRAY(SELECT tid FROM u)) AND l.ctid = u.tid
			AND l.holder_count > 0 AND l.waiter_count = 0 AND l.lock_limit = u.lim AND (l.delay_until IS NULL OR l.delay_until <= clock_timestamp())
			AND CASE WHEN u.mode = 'shared' THEN l.shared_count = l.holder_count
				ELSE l.shared_count = 0 AND l.holder_count < l.lock_limit END
			AND NOT EXISTS (SELECT FROM lock_holders x WHERE x.namespace = l.namespace AND x.lock_name = l.lock_name
				AND (x.owner_id = u.own OR x.expires_at <= clock_timestamp() OR x.session_id IS NOT NULL))
		RETURNING l.namespace, l.lock_name, l.lock_limit, l.holder_count, l.acquisition_count, l.revision, l.updated_at,
			u.own, u.mode, u.lease, u.meta, u.reply, u.req, u.part, u.delay, u.hold, nextval('fencing_tokens') AS token),
	v AS (SELECT ` + grantedCols("l") + ` FROM l),
	` + insertGrantedSQL
}

// grantedCols are the columns of the holder rows that l (a statement's
// changed locks rows with their new token) grants, with the element's own
// columns (owner, lease, ...) from x, and the lock's.
func grantedCols(x string) string {
	return `l.namespace, l.lock_name, ` + x + `.own AS owner_id, ` + x + `.mode, l.token AS fencing_token, l.updated_at AS acquired_at,
		l.updated_at + make_interval(secs => ` + x + `.lease) AS expires_at, ` + x + `.lease AS lease_duration, ` + x + `.meta::jsonb AS owner_metadata,
		0 AS extension_count, nullif(` + x + `.reply, '') AS reply_to, ` + x + `.req AS request_id, ` + x + `.part AS source_partition,
		NULL::text AS session_id, ` + x + `.delay AS lock_delay, ` + x + `.hold AS max_hold,
		l.lock_limit, l.holder_count, l.acquisition_count, l.revision`
}

// insertGrantedSQL inserts the holder rows of v (grantedCols) and returns
// them, read from v: what it inserted. Returning the inserted rows with
// their lock's columns would take a join of two CTEs, which the generic
// plan (each CTE estimated at a row or two) makes a nested loop reading one
// CTE again for every row of the other: quadratic in the batch
// (docs/performance.md).
const insertGrantedSQL = `h AS (INSERT INTO lock_holders (` + grantedHolderCols + `) SELECT ` + grantedHolderCols + ` FROM v)
	SELECT h.request_id, h.namespace, h.lock_name, h.lock_limit, h.holder_count, h.acquisition_count, h.revision, 0, h.acquired_at, ` + changedHolderCols + `
	FROM v h`

// grantedHolderCols are lock_holders' columns that a grant sets.
const grantedHolderCols = `namespace, lock_name, owner_id, mode, fencing_token, acquired_at, expires_at, lease_duration, owner_metadata,
	extension_count, reply_to, request_id, source_partition, session_id, lock_delay, max_hold`

// changedHolderCols are holderCols of a common case's holder row h.
const changedHolderCols = `h.owner_id, h.mode, h.fencing_token, h.acquired_at, h.expires_at, h.lease_duration, h.owner_metadata,
	h.extension_count, coalesce(h.reply_to, ''), coalesce(h.request_id, ''), h.source_partition, coalesce(h.session_id, ''),
	h.lock_delay, h.max_hold`

// lockOfHolder is the RETURNING of a holder's row changed using l, the
// locks rows changed: the holder with its lock's columns, so the result is
// read from the holder rows alone, not from a join of two CTEs (see
// insertGrantedSQL).
const lockOfHolder = `h.*, l.req AS l_req, l.lock_limit AS l_limit, l.holder_count AS l_holders, l.acquisition_count AS l_acquisitions,
	l.revision AS l_revision, l.waiter_count AS l_waiters, l.now AS l_now`

// The holder's release and extend of a lease in force change rows found by
// primary key (the LATERAL subquery, kept apart by OFFSET 0) and updated by
// ctid, with the ctids also given as an array so that the planner fetches
// exactly those rows (a TID scan) whatever its statistics; other joins may
// scan every held lock (docs/performance.md). A row updated by another
// transaction in between has a new ctid and is left to the general path.
// They apply when no lease of the lock has run out (the general path would
// settle it first) or is a session's (see QueueAtOnce), the lock is in no
// lock-delay (the general path's state record shows it) and, for a
// release, nobody waits. A lock-delay that has passed (by
// clock_timestamp(), as the general path judges it) is cleared in the same
// change, as the general path's Settle does (see joinAtOnceSQL).
var (
	releaseAtOnceSQL = releaseSQL(false)
	// releaseAfterSQL is releaseAtOnceSQL for a holder's release that
	// follows its own acquire of the lock in the batch (and its extends
	// after it), sent ahead in the same round trip after them: it applies
	// only to the lease that acquire was granted in this transaction (the
	// holder row carries its request_id, a seventh array, and this
	// transaction's xmin) when it has been extended as often as the extends
	// before it (an eighth). So when any command before it
	// does not apply (falls to the general path, renews an earlier lease
	// there), neither does the release, which follows it there in order.
	releaseAfterSQL = releaseSQL(true)
	// An extend leaves updated_at (only a lock nobody holds is ever idle)
	// and so every indexed column: a HOT update, which still gives the row
	// the new ctid that keeps other statements off it.
	// An extend past the lease's max_hold, or more than
	// topics.MaxLeaseAheadSeconds past now, is refused by the general path.
	// So is one of a lock with waiters whose lock-delay has passed (the
	// statement already leaves a lock-delay in force to it) or with a
	// waiter past its deadline: the general path settles the lock first
	// and may hand it on (rules.Lock.Extend: Settle, HandOff), which
	// otherwise only the expiry scheduler's next tick would do; and one of
	// a lock a session waits for (see QueueAtOnce). Only then does the
	// statement read the queue: two probes, each by an index of its own,
	// which read a few pages however long the queue: the earliest deadline
	// (lock_waiters_lock_deadline's first entry of the lock; a deadline <=
	// clock_timestamp() would be a filter, not an index condition, as the
	// function is volatile) and a session's wait (lock_waiters_lock_session;
	// its OFFSET 0 keeps PostgreSQL from making it a hashed subplan of every
	// session's wait in the table, as it did where lock_waiters was analyzed
	// nearly empty: 1,108 pages an extend with 5,000 session waits on other
	// locks). One probe with the two conditions ORed walked every waiter of
	// the lock.
	extendAtOnceSQL = extendSQL(false)
	// extendAfterSQL is extendAtOnceSQL for an extend that follows its
	// holder's acquire of the lock in the batch (and the holder's extends
	// after it), guarded as releaseAfterSQL.
	extendAfterSQL = extendSQL(true)
)

// extendSQL is the extend's holderAtOnceSQL.
func extendSQL(after bool) string {
	until := `m.o_expires + make_interval(secs => CASE WHEN m.ext > 0 THEN m.ext ELSE m.o_lease END)`
	return holderAtOnceSQL(`holder_count = l.holder_count`,
		`AND (m.o_max_hold = 0 OR `+until+` <= m.o_acquired + make_interval(secs => m.o_max_hold))
			AND `+until+` <= clock_timestamp() + make_interval(secs => `+strconv.Itoa(topics.MaxLeaseAheadSeconds)+`)
			AND (l.waiter_count = 0 OR l.delay_until IS NULL
				AND coalesce((SELECT min(w.deadline) FROM lock_waiters w WHERE w.namespace = l.namespace AND w.lock_name = l.lock_name)
					> clock_timestamp(), true)
				AND NOT EXISTS (SELECT FROM lock_waiters w
					WHERE w.namespace = l.namespace AND w.lock_name = l.lock_name AND w.session_id IS NOT NULL OFFSET 0))`,
		`UPDATE lock_holders h SET expires_at = h.expires_at + make_interval(secs => CASE WHEN l.ext > 0 THEN l.ext ELSE h.lease_duration END),
			extension_count = h.extension_count + 1
		FROM l WHERE h.namespace = l.namespace AND h.lock_name = l.lock_name AND h.owner_id = l.own RETURNING `+lockOfHolder, after)
}

// releaseSQL is the release's holderAtOnceSQL.
func releaseSQL(after bool) string {
	return holderAtOnceSQL(`status = CASE WHEN l.holder_count = 1 THEN 'released' ELSE 'acquired' END,
		holder_count = l.holder_count - 1, shared_count = l.shared_count - (m.o_mode = 'shared')::int,
		(ended_owner_id, ended_mode, ended_fencing_token, ended_acquired_at, ended_expires_at, ended_lease_duration,
			ended_owner_metadata, ended_extension_count) =
			(m.own, m.o_mode, m.o_token, m.o_acquired, m.o_expires, m.o_lease, m.o_meta, m.o_ext),
		updated_at = clock_timestamp()`,
		`AND l.waiter_count = 0`,
		`DELETE FROM lock_holders h USING l WHERE h.namespace = l.namespace AND h.lock_name = l.lock_name AND h.owner_id = l.own RETURNING `+lockOfHolder, after)
}

// holderAtOnceSQL is the statement that sets set (assignments; m.o_* are
// the holder's columns) on the locks row of each element whose owner holds
// a lease in force (with the token, when given) where cond holds too, then
// changes the holder's row by change (a statement on lock_holders h using
// l, the updated rows, returning lockOfHolder). Its arrays:
// namespaces, names, owners, tokens, request_ids, extensions (0 or none:
// the lease's own duration) and, after, the request_ids the leases must
// have been granted to and the extensions they must show.
func holderAtOnceSQL(set, cond, change string, after bool) string {
	arrays, columns, guard := "", "", ""
	if after {
		// Written in this transaction: by this batch's grant and extends,
		// not a lease granted to the same request_id before (a repeated
		// acquire, or one whose stored outcome was pruned).
		arrays, columns, guard = `, $7::text[], $8::int[]`, `, prev, exts`,
			` AND o.request_id = u.prev AND o.extension_count = u.exts AND o.xmin = pg_current_xact_id()::xid`
	}
	return `
	WITH m AS (
		SELECT u.own, u.tok, u.req, u.ext, k.tid, o.mode AS o_mode, o.fencing_token AS o_token, o.acquired_at AS o_acquired,
			o.expires_at AS o_expires, o.lease_duration AS o_lease, o.owner_metadata AS o_meta, o.extension_count AS o_ext,
			o.max_hold AS o_max_hold
		FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::float8[]` + arrays + `) AS u(ns, nm, own, tok, req, ext` + columns + `),
			LATERAL (SELECT k.ctid AS tid FROM locks k WHERE k.namespace = u.ns AND k.lock_name = u.nm OFFSET 0) k,
			LATERAL (SELECT o.* FROM lock_holders o WHERE o.namespace = u.ns AND o.lock_name = u.nm AND o.owner_id = u.own
				AND o.expires_at > clock_timestamp() AND (u.tok IS NULL OR o.fencing_token = u.tok)` + guard + ` OFFSET 0) o
	),
	l AS (
		UPDATE locks l SET revision = l.revision + 1, delay_until = NULL, ` + set + `
		FROM m
		WHERE l.ctid = ANY (ARRAY(SELECT tid FROM m)) AND l.ctid = m.tid ` + cond + `
			AND NOT EXISTS (SELECT FROM lock_holders x WHERE x.namespace = l.namespace AND x.lock_name = l.lock_name
				AND (x.expires_at <= clock_timestamp() OR x.session_id IS NOT NULL))
			AND (l.delay_until IS NULL OR l.delay_until <= clock_timestamp())
			AND m.req <> ALL (ARRAY(SELECT request_id FROM processed_requests WHERE request_id = ANY($5)))
		RETURNING l.namespace, l.lock_name, l.lock_limit, l.holder_count, l.acquisition_count, l.revision, l.waiter_count,
			m.own, m.ext, m.req, clock_timestamp() AS now),
	h AS (` + change + `)
	SELECT h.l_req, h.namespace, h.lock_name, h.l_limit, h.l_holders, h.l_acquisitions, h.l_revision, h.l_waiters, h.l_now, ` + changedHolderCols + `
	FROM h`
}

// changed is a lock and the holder a common case changed.
type changed struct {
	row    *lockRow
	holder rules.Holder
}

// info is lock_info of the event about the holder.
func (c *changed) info(s rules.Status) rules.Info {
	return rules.Info{Holder: c.holder, Status: s, Acquisitions: c.row.acquisitions, Limit: c.row.limit, Holders: c.row.holders}
}

// commonCase is the one-statement common case of an operation (see the
// operations table): a set-based statement with one array element per
// command.
type commonCase interface {
	// add adds a command as the statement's next element.
	add(a *applier)
	// queue queues the statement on pb when any command was added; each
	// row it changes is given to got with its command's request_id.
	queue(pb *pgx.Batch, got func(requestID string, c *changed))
}

// atOnceSet is the common-case statements of some commands, by operation.
type atOnceSet map[string]commonCase

// add adds the command to its operation's common case; false when the
// operation has none.
func (s atOnceSet) add(a *applier) bool {
	if !a.hasCommonCase() {
		return false
	}
	cc := s[a.cmd.Operation]
	if cc == nil {
		cc = a.op.atOnce()
		s[a.cmd.Operation] = cc
	}
	cc.add(a)
	return true
}

// queue queues the statements on pb, in the order of topics.Operations.
func (s atOnceSet) queue(pb *pgx.Batch, got func(requestID string, c *changed)) {
	for _, op := range topics.Operations {
		if cc := s[op.Name]; cc != nil {
			cc.queue(pb, got)
		}
	}
}

// grantArgs is the arrays of grantAtOnceSQL and joinAtOnceSQL.
type grantArgs struct {
	ns, name, owner, replyTo, requestID, mode []string
	lease, lockDelay, maxHold                 []float64
	metadata                                  []*string
	partition, limit                          []int32
}

func (g *grantArgs) add(a *applier) {
	c := a.cmd
	var meta *string
	if m := metadata(c.OwnerMetadata); m != nil {
		v := string(m)
		meta = &v
	}
	g.ns, g.name, g.owner = append(g.ns, c.Namespace), append(g.name, c.LockName), append(g.owner, c.OwnerID)
	g.replyTo, g.requestID = append(g.replyTo, c.ReplyTo), append(g.requestID, c.RequestID)
	g.lease, g.metadata, g.partition = append(g.lease, a.lease()), append(g.metadata, meta), append(g.partition, a.env.Partition)
	g.mode, g.limit = append(g.mode, string(mode(c.Mode))), append(g.limit, int32(max(c.Limit, 1)))
	g.lockDelay, g.maxHold = append(g.lockDelay, c.LockDelay), append(g.maxHold, c.MaxHold)
}

func (g *grantArgs) queue(pb *pgx.Batch, got func(string, *changed)) {
	if len(g.ns) > 0 {
		sqls := []string{grantAtOnceSQL}
		// An exclusive acquire of limit 1 (every v1 acquire) never joins.
		if slices.Contains(g.mode, string(rules.Shared)) || slices.ContainsFunc(g.limit, func(n int32) bool { return n > 1 }) {
			sqls = append(sqls, joinAtOnceSQL)
		}
		for _, sql := range sqls {
			pb.Queue(sql, g.args()...).Query(readChanged(topics.OpAcquire, got))
		}
	}
}

// args are the statement's arrays, then more.
func (g *grantArgs) args(more ...any) []any {
	return append([]any{g.ns, g.name, g.owner, g.lease, g.metadata, g.replyTo, g.requestID, g.partition, g.mode, g.limit,
		g.lockDelay, g.maxHold}, more...)
}

// holderArgs is the arrays of holderAtOnceSQL, for its statement sql.
type holderArgs struct {
	sql, op                    string
	ns, name, owner, requestID []string
	token                      []*int64
	extension                  []float64
}

func (h *holderArgs) add(a *applier) {
	c := a.cmd
	ext := c.ExtensionDuration
	if h.op != topics.OpExtend {
		ext = 0 // a release's is not validated (1e400 reads as +Inf), and not used
	}
	h.ns, h.name, h.owner = append(h.ns, c.Namespace), append(h.name, c.LockName), append(h.owner, c.OwnerID)
	h.requestID, h.token, h.extension = append(h.requestID, c.RequestID), append(h.token, c.FencingToken), append(h.extension, ext)
}

func (h *holderArgs) queue(pb *pgx.Batch, got func(string, *changed)) {
	if len(h.ns) > 0 {
		pb.Queue(h.sql, h.args()...).Query(readChanged(h.op, got))
	}
}

// args are the statement's arrays, then more.
func (h *holderArgs) args(more ...any) []any {
	return append([]any{h.ns, h.name, h.owner, h.token, h.requestID, h.extension}, more...)
}

// readChanged reads the rows a common-case statement of op changed.
func readChanged(op string, got func(string, *changed)) func(pgx.Rows) error {
	return func(rows pgx.Rows) error {
		defer rows.Close()
		for rows.Next() {
			var id string
			c := &changed{row: &lockRow{}}
			r := c.row
			dest := append([]any{&id, &r.namespace, &r.name, &r.limit, &r.holders, &r.acquisitions, &r.revision, &r.waiters, &r.now},
				holderDest(&c.holder)...)
			if err := rows.Scan(dest...); err != nil {
				return fmt.Errorf("%s in one statement: %w", op, err)
			}
			got(id, c)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("%s in one statement: %w", op, err)
		}
		return nil
	}
}

// atOnce runs the command's common case, or takes its result when the batch
// sent it ahead, and returns what it changed (nil: not the common case).
func (a *applier) atOnce(ctx context.Context) (*changed, error) {
	if r, ok := a.ahead[a.cmd.RequestID]; ok {
		delete(a.ahead, a.cmd.RequestID)
		return r, nil
	}
	set := atOnceSet{}
	if !set.add(a) {
		return nil, nil
	}
	var ch *changed
	pb := &pgx.Batch{}
	set.queue(pb, func(_ string, c *changed) { ch = c })
	if err := a.tx.SendBatch(ctx, pb).Close(); err != nil {
		return nil, err
	}
	return ch, nil
}

// QueueAtOnce queues on pb the common cases of the commands that can go ahead
// of the rest of the batch, before the first cleanup (which must see the
// commands before it, and only those): acquires, releases and extends that
// are the first command of their lock, in one statement per operation; and
// after them, in "waves" (a statement per kind and place in the lock's run),
// the commands that follow: readers (and semaphore holders) after acquires
// (joinAfterSQL), the holder's extends and release after its acquire
// (extendAfterSQL, releaseAfterSQL) and an acquire after a release
// (grantAfterSQL), each applying only if every command of its lock before
// it did. A lock's run ends at its first command that is not sent, and a
// request_id seen before in the batch ends it too. cmds must be the
// commands in the order Apply will see them; partitions[i] is the commands
// partition of cmds[i] (nil: the batch's). Apply then uses their results.
// pb's Close returns their errors.
//
// Commands go ahead of the session commands before them too, though a
// session's end (a close, or a keep-alive or open that finds the session
// past its expiry: refuseSession) changes every lock the session holds or
// waits for, whatever their keys. So every statement that may apply to a
// lock with holders or waiters applies only when none of them is a
// session's (it reads the lock's holders, or waiters, anyway): the session
// command then changes nothing of that lock, and no session can join it
// before (a session's acquire takes the general path, after the row lock
// the statement took). Keep-alives come often: a barrier at each session
// command would send much of a busy batch down the general path, a round
// trip per command; locks held both in sessions and outside them pay
// instead, rarer.
func (b *Batch) QueueAtOnce(pb *pgx.Batch, cmds []topics.Command, partitions []int32) {
	set := atOnceSet{}
	var waves []*wave // waves[k-1]: the commands k after the first of their lock's run
	locks := make(map[string]*lockRun, len(cmds))
	ids := make(map[string]bool, len(cmds))
	for i, c := range cmds {
		op := operations[c.Operation]
		if op.barrier {
			break
		}
		key := c.Key()
		run, seen := locks[key]
		fresh := !ids[c.RequestID] && c.RequestID != ""
		ids[c.RequestID] = true
		a := &applier{Batch: b, cmd: c, op: op}
		if partitions != nil {
			a.Batch = b.For(partitions[i])
		}
		if !seen {
			run = &lockRun{pos: -1}
			run.acquirers = run.buf[:0]
			locks[key] = run
			if fresh && set.add(a) {
				b.ahead[c.RequestID] = nil
				run.pos, run.acquires, run.prev = 0, c.Operation == topics.OpAcquire, c
				switch c.Operation {
				case topics.OpAcquire:
					run.lease = &leaseRun{owner: c.OwnerID, requestID: c.RequestID}
					run.acquirers = append(run.acquirers, c.OwnerID)
				case topics.OpRelease:
					// The lease it ends counts as one of the owner's
					// acquires (see the hand-over below).
					run.released = c.OwnerID
					run.acquirers = append(run.acquirers, c.OwnerID)
				}
			}
			continue
		}
		if run.pos < 0 || !fresh {
			run.pos = -1
			continue
		}
		if len(waves) <= run.pos {
			waves = append(waves, newWave())
		}
		w := waves[run.pos]
		switch l := run.lease; {
		case run.acquires && mayJoin(a):
			w.joins.add(a, run.prev)
			run.lease = &leaseRun{owner: c.OwnerID, requestID: c.RequestID}
			run.acquirers = append(run.acquirers, c.OwnerID)
		case l != nil && c.OwnerID == l.owner && a.hasCommonCase() && c.Operation == topics.OpExtend:
			w.extends.add(a, l)
			l.extensions++
			run.acquires = false
		case l != nil && c.OwnerID == l.owner && a.hasCommonCase() && c.Operation == topics.OpRelease:
			w.releases.add(a, l)
			run.lease, run.acquires, run.released = nil, false, c.OwnerID
		// The row names the owner whose lease ended last, not the lease:
		// with two acquires of that owner in the run, it would not say
		// whether the second one's release applied.
		case run.released != "" && run.acquisitions(run.released) <= 1 && c.Operation == topics.OpAcquire && a.hasCommonCase():
			w.grants.add(a)
			w.grants.released = append(w.grants.released, run.released)
			run.lease, run.acquires, run.released = &leaseRun{owner: c.OwnerID, requestID: c.RequestID}, false, ""
			run.acquirers = append(run.acquirers, c.OwnerID)
		default:
			run.pos = -1
			continue
		}
		b.ahead[c.RequestID] = nil
		run.pos++
		run.prev = c
	}
	got := func(id string, c *changed) { b.ahead[id] = c }
	set.queue(pb, got)
	for _, w := range waves {
		w.queue(pb, got)
	}
}

// lockRun is a lock's run in QueueAtOnce: its commands sent ahead so far,
// all of its commands until then. pos is the last one's place (0: the
// first; -1: the run ended, the rest go the general path), acquires
// whether all were acquires, prev the last, lease the lease whose holder's
// extends and release may follow, released the owner whose release was the
// last (an acquire may follow it), acquirers the owners of its acquires.
type lockRun struct {
	pos       int
	acquires  bool
	prev      topics.Command
	lease     *leaseRun
	released  string
	acquirers []string
	buf       [2]string // acquirers' first, within the run's allocation
}

// acquisitions counts owner's acquires in the run.
func (r *lockRun) acquisitions(owner string) int {
	n := 0
	for _, o := range r.acquirers {
		if o == owner {
			n++
		}
	}
	return n
}

// hasCommonCase says whether the command's operation has a one-statement
// common case it may take. An acquire with a session checks the session
// first (session.go).
func (a *applier) hasCommonCase() bool {
	return a.op.atOnce != nil && !a.generalOnly && a.cmd.SessionID == "" && !a.waitOnly()
}

// mayJoin says whether an acquire could join holders in one statement: a
// reader, or a place in a semaphore (an exclusive acquire of limit 1 never
// joins).
func mayJoin(a *applier) bool {
	c := a.cmd
	return c.Operation == topics.OpAcquire && a.hasCommonCase() && (mode(c.Mode) == rules.Shared || c.Limit > 1)
}

// holderAfter is the arrays of releaseAfterSQL or extendAfterSQL.
type holderAfter struct {
	holderArgs
	grantedTo  []string // the request_id of the acquire the lease was granted to
	extensions []int32  // the extends of the lease before the command
}

func (h *holderAfter) add(a *applier, lease *leaseRun) {
	h.holderArgs.add(a)
	h.grantedTo, h.extensions = append(h.grantedTo, lease.requestID), append(h.extensions, lease.extensions)
}

func (h *holderAfter) queue(pb *pgx.Batch, got func(string, *changed)) {
	if len(h.ns) > 0 {
		pb.Queue(h.sql, h.args(h.grantedTo, h.extensions)...).Query(readChanged(h.op, got))
	}
}

// leaseRun is a lease granted in the batch's first round trip, while the
// commands after its acquire are its holder's extends: what the lease
// must show for the holder's next command to apply.
type leaseRun struct {
	owner, requestID string
	extensions       int32
}

// grantAfter is the arrays of grantAfterSQL.
type grantAfter struct {
	grantArgs
	released []string
}

func (g *grantAfter) queue(pb *pgx.Batch, got func(string, *changed)) {
	if len(g.ns) > 0 {
		pb.Queue(grantAfterSQL, g.args(g.released)...).Query(readChanged(topics.OpAcquire, got))
	}
}

// wave is the statements for the commands that are the k-th after the
// first of their lock's run (see QueueAtOnce).
type wave struct {
	joins             joinAfter
	grants            grantAfter
	releases, extends holderAfter
}

func newWave() *wave {
	return &wave{releases: holderAfter{holderArgs: holderArgs{sql: releaseAfterSQL, op: topics.OpRelease}},
		extends: holderAfter{holderArgs: holderArgs{sql: extendAfterSQL, op: topics.OpExtend}}}
}

func (w *wave) queue(pb *pgx.Batch, got func(string, *changed)) {
	w.joins.queue(pb, got)
	w.grants.queue(pb, got)
	w.releases.queue(pb, got)
	w.extends.queue(pb, got)
}

// joinAfter is the arrays of joinAfterSQL.
type joinAfter struct {
	grantArgs
	prevOwner, prevRequestID []string
}

func (j *joinAfter) add(a *applier, prev topics.Command) {
	j.grantArgs.add(a)
	j.prevOwner, j.prevRequestID = append(j.prevOwner, prev.OwnerID), append(j.prevRequestID, prev.RequestID)
}

func (j *joinAfter) queue(pb *pgx.Batch, got func(string, *changed)) {
	if len(j.ns) > 0 {
		pb.Queue(joinAfterSQL, j.args(j.prevOwner, j.prevRequestID)...).Query(readChanged(topics.OpAcquire, got))
	}
}
