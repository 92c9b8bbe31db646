package handlers

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/topics"
)

// The common cases take one statement: an acquire of a lock that is new, or
// released or expired with nobody waiting, the holder's release of a lease
// in force that nobody waits for, and the holder's extend of a lease in
// force. The statement applies only in that
// case and returns the row; otherwise it changes nothing and the general path
// decides. Updating an existing row takes its token and times after the row
// lock, like the general path; creating a row takes them before a possible
// wait on a racing insert of the same lock, so such a lease starts a little
// early.
//
// The statements take arrays, one element per command, so a batch sends the
// common cases of all its commands that may go ahead in one statement per
// operation (QueueAtOnce), in the round trip of its prefetch, before it knows
// which are duplicates: each element applies only if its request_id is new.
// A command applied on its own sends arrays of one. The request_ids already
// stored are read once per statement, by index (= ANY), never by a NOT
// EXISTS per element, which may be planned as a scan of all of
// processed_requests (docs/performance.md).

const grantAtOnceSQL = `
	INSERT INTO locks AS l (namespace, lock_name, status, owner_id, fencing_token, acquired_at, expires_at,
		lease_duration, owner_metadata, acquisition_count, reply_to, holder_request_id, source_partition, updated_at)
	SELECT u.ns, u.nm, 'acquired', u.own, nextval('fencing_tokens'), t.now, t.now + make_interval(secs => u.lease),
		u.lease, u.meta::jsonb, 1, nullif(u.reply, ''), u.req, u.part, t.now
	FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::text[], $6::text[], $7::text[], $8::int[])
			WITH ORDINALITY AS u(ns, nm, own, lease, meta, reply, req, part, ord),
		(SELECT clock_timestamp() AS now) t
	WHERE u.req <> ALL (ARRAY(SELECT request_id FROM processed_requests WHERE request_id = ANY($7)))
	ORDER BY u.ord
	ON CONFLICT (namespace, lock_name) DO UPDATE SET
		status = 'acquired', owner_id = EXCLUDED.owner_id, fencing_token = nextval('fencing_tokens'),
		(acquired_at, expires_at, updated_at) = (SELECT n, n + make_interval(secs => EXCLUDED.lease_duration), n FROM (SELECT clock_timestamp() AS n) t),
		lease_duration = EXCLUDED.lease_duration, owner_metadata = EXCLUDED.owner_metadata,
		acquisition_count = l.acquisition_count + 1, extension_count = 0, reply_to = EXCLUDED.reply_to,
		holder_request_id = EXCLUDED.holder_request_id, source_partition = EXCLUDED.source_partition
	WHERE l.status IN ('released', 'expired') AND l.waiter_count = 0
	RETURNING holder_request_id, ` + lockCols

// The holder's release and extend of a lease in force change rows found by
// primary key (the LATERAL subquery, kept apart by OFFSET 0) and updated by
// ctid, with the ctids also given as an array so that the planner fetches
// exactly those rows (a TID scan) whatever its statistics; other joins may
// scan every held lock (docs/performance.md). A row updated by another
// transaction in between has a new ctid and is left to the general path.
var (
	releaseAtOnceSQL = holderAtOnceSQL(`status = 'released'`, `AND l.waiter_count = 0`)
	extendAtOnceSQL  = holderAtOnceSQL(`expires_at = l.expires_at + make_interval(secs => CASE WHEN m.ext > 0 THEN m.ext ELSE l.lease_duration END),
		extension_count = l.extension_count + 1`, ``)
)

// holderAtOnceSQL is the statement that sets set on each lease in force of
// an element's owner (and token, when given) where cond holds too. Its
// arrays: namespaces, names, owners, tokens, request_ids, extensions
// (m.ext; 0 or none: the lease's own duration).
func holderAtOnceSQL(set, cond string) string {
	return `
	WITH m AS (
		SELECT u.own, u.tok, u.req, u.ext, k.tid
		FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::float8[]) AS u(ns, nm, own, tok, req, ext),
			LATERAL (SELECT k.ctid AS tid FROM locks k WHERE k.namespace = u.ns AND k.lock_name = u.nm OFFSET 0) k
	)
	UPDATE locks l SET ` + set + `, updated_at = clock_timestamp()
	FROM m
	WHERE l.ctid = ANY (ARRAY(SELECT tid FROM m)) AND l.ctid = m.tid
		AND l.status = 'acquired' AND l.owner_id = m.own ` + cond + `
		AND l.expires_at > clock_timestamp() AND (m.tok IS NULL OR l.fencing_token = m.tok)
		AND m.req <> ALL (ARRAY(SELECT request_id FROM processed_requests WHERE request_id = ANY($5)))
	RETURNING m.req, ` + lockCols
}

// commonCase is the one-statement common case of an operation (see the
// operations table): a set-based statement with one array element per
// command.
type commonCase interface {
	// add adds a command as the statement's next element.
	add(a *applier)
	// queue queues the statement on pb when any command was added; each
	// row it changes is given to got with its command's request_id.
	queue(pb *pgx.Batch, got func(requestID string, r *lockRow))
}

// atOnceSet is the common-case statements of some commands, by operation.
type atOnceSet map[string]commonCase

// add adds the command to its operation's common case; false when the
// operation has none.
func (s atOnceSet) add(a *applier) bool {
	if a.op.atOnce == nil {
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
func (s atOnceSet) queue(pb *pgx.Batch, got func(requestID string, r *lockRow)) {
	for _, op := range topics.Operations {
		if cc := s[op.Name]; cc != nil {
			cc.queue(pb, got)
		}
	}
}

// grantArgs is the arrays of grantAtOnceSQL.
type grantArgs struct {
	ns, name, owner, replyTo, requestID []string
	lease                               []float64
	metadata                            []*string
	partition                           []int32
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
}

func (g *grantArgs) queue(pb *pgx.Batch, got func(string, *lockRow)) {
	if len(g.ns) > 0 {
		pb.Queue(grantAtOnceSQL, g.ns, g.name, g.owner, g.lease, g.metadata, g.replyTo, g.requestID, g.partition).
			Query(readChanged(topics.OpAcquire, got))
	}
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
	h.ns, h.name, h.owner = append(h.ns, c.Namespace), append(h.name, c.LockName), append(h.owner, c.OwnerID)
	h.requestID, h.token, h.extension = append(h.requestID, c.RequestID), append(h.token, c.FencingToken), append(h.extension, c.ExtensionDuration)
}

func (h *holderArgs) queue(pb *pgx.Batch, got func(string, *lockRow)) {
	if len(h.ns) > 0 {
		pb.Queue(h.sql, h.ns, h.name, h.owner, h.token, h.requestID, h.extension).Query(readChanged(h.op, got))
	}
}

// readChanged reads the rows a common-case statement of op changed.
func readChanged(op string, got func(string, *lockRow)) func(pgx.Rows) error {
	return func(rows pgx.Rows) error {
		defer rows.Close()
		for rows.Next() {
			var id string
			var r lockRow
			if err := rows.Scan(append([]any{&id}, r.dest()...)...); err != nil {
				return fmt.Errorf("%s in one statement: %w", op, err)
			}
			got(id, &r)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("%s in one statement: %w", op, err)
		}
		return nil
	}
}

// atOnce runs the command's common case, or takes its result when the batch
// sent it ahead, and returns the row it changed (nil: not the common case).
func (a *applier) atOnce(ctx context.Context) (*lockRow, error) {
	if r, ok := a.ahead[a.cmd.RequestID]; ok {
		delete(a.ahead, a.cmd.RequestID)
		return r, nil
	}
	set := atOnceSet{}
	if !set.add(a) {
		return nil, nil
	}
	var changed *lockRow
	pb := &pgx.Batch{}
	set.queue(pb, func(_ string, r *lockRow) { changed = r })
	if err := a.tx.SendBatch(ctx, pb).Close(); err != nil {
		return nil, err
	}
	return changed, nil
}

// QueueAtOnce queues on pb the common cases of the commands that can go ahead
// of the rest of the batch, in one statement per operation: acquires,
// releases and extends that are the first command of their lock and the first with their
// request_id, before the first cleanup (which must see the commands before
// it, and only those). cmds must be the commands in the order Apply will see
// them; partitions[i] is the commands partition of cmds[i] (nil: the
// batch's). Apply then uses their results. pb's Close returns their errors.
func (b *Batch) QueueAtOnce(pb *pgx.Batch, cmds []topics.Command, partitions []int32) {
	set := atOnceSet{}
	locks := make(map[string]bool, len(cmds))
	ids := make(map[string]bool, len(cmds))
	for i, c := range cmds {
		op := operations[c.Operation]
		if op.barrier {
			break
		}
		key := c.Key()
		first := !locks[key] && !ids[c.RequestID]
		locks[key], ids[c.RequestID] = true, true
		if !first || c.RequestID == "" {
			continue
		}
		a := &applier{Batch: b, cmd: c, op: op}
		if partitions != nil {
			a.Batch = b.For(partitions[i])
		}
		if set.add(a) {
			b.ahead[c.RequestID] = nil
		}
	}
	set.queue(pb, func(id string, r *lockRow) { b.ahead[id] = r })
}
