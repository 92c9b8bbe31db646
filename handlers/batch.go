package handlers

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/topics"
)

// Env is what handlers need to know beyond the command.
type Env struct {
	// Names are the topic names; Names.ReplyPrefix bounds reply_to.
	Names topics.Names
	// DefaultLease applies to an acquire without lease_duration. Default 30 s.
	DefaultLease time.Duration
	// Source is the CloudEvents ce_source, "lockworker/<instance>".
	Source string
	// Partition is the commands partition this transaction works for: outbox
	// rows are written under it, and locks granted here are watched by its
	// expiry scheduler.
	Partition int32
	// OnUnreadableOutcome, when set, is told of each request whose stored
	// outcome cannot be read back (damaged in the database), and the
	// commands partition of its copy, as the copy is refused: for the
	// operator's log. Default nil.
	OnUnreadableOutcome func(requestID string, partition int32)
	// RequireFencingToken refuses an owner's renewal of the lease it holds
	// (REQUIRE_FENCING_TOKEN; rules.Request.TokenOnly), and a release of a
	// lease without its token, which may only withdraw a wait. The worker
	// refuses an extend without the token before the handlers see it.
	RequireFencingToken bool
	// NoHistory writes no lock_events rows (LOCK_EVENTS_RETENTION=0).
	// Default false: every grant and end of a lease is recorded.
	NoHistory bool
	// PlainEvents stores events and lock states (outbox rows, outcomes) as
	// versions before topics.CompactEvent did, which cannot read the
	// compacted form: for a rolling upgrade from them. Default false:
	// compacted.
	PlainEvents bool
	// Log is where the handlers report what no path should reach (a bug
	// elsewhere); the zero Logger discards.
	Log zerolog.Logger
}

// Batch applies commands inside one transaction and buffers what they write
// until Flush. A Batch is used by one goroutine and dropped after Flush, or
// when its transaction fails. One transaction may apply the commands of
// several partitions: For gives a view of the batch for each.
type Batch struct {
	tx  pgx.Tx
	env Env
	*buffers
}

// buffers are shared by a Batch and its views.
type buffers struct {
	outbox   []outboxRow
	written  []outbox.Row // what the last flush wrote to the outbox, ids set once it ran
	history  []historyRow
	outcomes map[string]*stored  // request_id -> stored outcome to write
	known    map[string]*stored  // request_id -> outcome already stored or written in this batch; nil: known to be new
	unstored map[string]bool     // request_ids read as having no stored outcome, and not written since
	ahead    map[string]*changed // request_id -> what its common case changed, sent ahead (QueueAtOnce); nil: did not apply
	states   map[stateRow]int    // index in outbox of each lock's last state record
	unread   []unreadState       // lock states whose holders readStates reads
	// generalOnly makes every command take the general path (the
	// differential test's, see export_test.go).
	generalOnly bool
}

// pending is an event waiting to be encoded at Flush, when its duration_ms
// (poll to commit) is known; or a lock state record's value (state); or,
// when neither is set, bytes written as they are (an outcome stored
// earlier, a dead-letter copy: raw may then be nil, a tombstone's value).
type pending struct {
	ev       *topics.Event
	state    *topics.LockState
	polledAt time.Time
	raw      []byte
}

// stored is a request's outcome and the reply_to the request came with: a
// copy of the request is answered with it only from that reply_to, so a
// request_id replayed by someone else learns nothing.
type stored struct {
	p       *pending
	replyTo string
	anyone  bool // stored before the reply_to was kept: any copy gets it
}

type outboxRow struct {
	partition  int32
	topic      string
	key        []byte // nil: a record without a key
	p          *pending
	headers    []topics.Header
	form       rowForm
	superseded bool // a lock state record a later one of the lock replaces (queueState)
}

// rowForm is how an outbox row is stored, unless Env.PlainEvents.
type rowForm uint8

const (
	asWritten   rowForm = iota // headers as topics.EncodeHeaders writes them, the value as it is
	asEvent                    // an event with its EventHeaders: topics.EncodeEventHeaders, CompactEvent
	asLockState                // a lock state (not a tombstone): topics.EncodeLockStateHeaders, CompactLockState
)

// stateRow names a lock's state records in the transaction: by its
// namespace and name, as two locks may share a key (topics.LockKey).
type stateRow struct {
	namespace, name string
}

type historyRow struct {
	eventID, namespace, lockName, typ, owner string
	token                                    int64
	at                                       time.Time
}

// NewBatch starts a batch in tx.
func NewBatch(tx pgx.Tx, env Env) *Batch {
	if env.DefaultLease <= 0 {
		env.DefaultLease = topics.DefaultLeaseDuration
	}
	if env.Names.ReplyPrefix == "" {
		env.Names = topics.DefaultNames()
	}
	return &Batch{tx: tx, env: env, buffers: &buffers{
		outcomes: map[string]*stored{}, known: map[string]*stored{}, unstored: map[string]bool{}, ahead: map[string]*changed{}, states: map[stateRow]int{},
	}}
}

// For returns a view of b for the commands of another commands partition:
// what it applies is written under that partition (outbox rows, the
// scheduler watching a lease) but shares b's transaction and buffers, so one
// Flush writes everything.
func (b *Batch) For(partition int32) *Batch {
	v := *b
	v.env.Partition = partition
	return &v
}

// QueuePrefetch queues on pb the query that loads the stored outcomes of
// these request_ids, so Apply need not look each up (ids not given here are
// looked up one by one); it shares a round trip with the transaction's other
// first statements. pb's Close returns its error.
func (b *Batch) QueuePrefetch(pb *pgx.Batch, requestIDs []string) {
	pb.Queue(`SELECT request_id, outcome, reply_to FROM processed_requests WHERE request_id = ANY($1)`, requestIDs).Query(func(rows pgx.Rows) error {
		var id string
		var raw []byte
		var replyTo *string
		_, err := pgx.ForEachRow(rows, []any{&id, &raw, &replyTo}, func() error {
			b.known[id] = storedRow(raw, replyTo)
			return nil
		})
		if err != nil {
			return fmt.Errorf("reading processed requests: %w", err)
		}
		for _, id := range requestIDs {
			if _, ok := b.known[id]; !ok {
				b.known[id] = nil // known to be new
				b.unstored[id] = true
			}
		}
		return nil
	})
}

// Apply applies one valid command (see topics.Validate) and returns the events
// it caused. polledAt is when the record was polled, for duration_ms.
func (b *Batch) Apply(ctx context.Context, c topics.Command, polledAt time.Time) ([]topics.Event, error) {
	// A common case sent ahead that applied the command found its
	// request_id new: that holds, though the prefetch, a statement before
	// it, may have read an outcome pruning deleted in between; its outcome
	// is then inserted as new, so a copy applied meanwhile elsewhere still
	// conflicts (Flush).
	if c.RequestID != "" && b.ahead[c.RequestID] != nil {
		b.unstored[c.RequestID] = true
	} else if c.RequestID != "" {
		prev, err := b.storedOutcome(ctx, c.RequestID)
		if err != nil {
			return nil, err
		}
		if prev != nil {
			return b.resend(c, prev, polledAt)
		}
	}
	op, ok := operations[c.Operation]
	if !ok {
		return nil, fmt.Errorf("applying %q: unknown operation", c.Operation)
	}
	a := &applier{Batch: b, cmd: c, op: op, polledAt: polledAt}
	if err := op.apply(a, ctx); err != nil {
		return nil, fmt.Errorf("applying %s of lock %q: %w", c.Operation, c.Key(), err)
	}
	return a.caused, nil
}

// Resend answers c, a copy the caller refused (not a valid command, as it
// judges it now), as Apply answers a copy of a request when c's request_id
// has a stored outcome, and reports whether it has one (false: nothing is
// answered, c is refused as any invalid command). The request was applied
// under other rules (an older version's validation) or with another
// content, and a copy "with any content" is not judged again: its
// requester, told INVALID_REQUEST, would think refused what it got.
func (b *Batch) Resend(ctx context.Context, c topics.Command, polledAt time.Time) ([]topics.Event, bool, error) {
	prev, err := b.storedOutcome(ctx, c.RequestID)
	if err != nil || prev == nil {
		return nil, false, err
	}
	evs, err := b.resend(c, prev, polledAt)
	return evs, true, err
}

// Reject answers a command that failed validation: lock.rejected to its
// reply_to when that is a valid reply topic. It changes no lock and stores no
// outcome.
func (b *Batch) Reject(r *topics.Rejection, polledAt time.Time) topics.Event {
	ev := topics.NewEvent(topics.TypeRejected, r.Command.Operation, r.Command.RequestID, time.Now())
	ev.ErrorCode, ev.ErrorMessage = r.Code, r.Message
	if topics.ValidReplyTo(r.Command.ReplyTo, b.env.Names.ReplyPrefix) {
		b.emit(r.Command.ReplyTo, r.Command.Key(), &pending{ev: &ev, polledAt: polledAt})
	}
	return ev
}

// Publish queues a raw record (a dead-letter copy, say) in the outbox. A nil
// key or value is published as null.
func (b *Batch) Publish(topic string, key, value []byte, headers []topics.Header) {
	b.queue(topic, key, &pending{raw: value}, headers)
}

func (b *Batch) storedOutcome(ctx context.Context, requestID string) (*stored, error) {
	if s, ok := b.known[requestID]; ok {
		return s, nil
	}
	var raw []byte
	var replyTo *string
	err := b.tx.QueryRow(ctx, `SELECT outcome, reply_to FROM processed_requests WHERE request_id = $1`, requestID).Scan(&raw, &replyTo)
	if err == pgx.ErrNoRows {
		b.unstored[requestID] = true
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading outcome of request %q: %w", requestID, err)
	}
	s := storedRow(raw, replyTo)
	b.known[requestID] = s
	return s, nil
}

// storedRow is a processed_requests row read back, its outcome expanded
// (topics.ExpandEvent); one that cannot be expanded is kept as nil, which
// resend refuses as it refuses any outcome it cannot decode.
func storedRow(raw []byte, replyTo *string) *stored {
	v, err := topics.ExpandEvent(raw)
	if err != nil {
		v = nil
	}
	if replyTo == nil {
		return &stored{p: &pending{raw: v}, anyone: true}
	}
	return &stored{p: &pending{raw: v}, replyTo: *replyTo}
}

// resend sends a stored outcome again to the duplicate's reply_to; a copy
// from another reply_to is refused REQUEST_ID_CONFLICT and told nothing of
// the outcome.
func (b *Batch) resend(c topics.Command, s *stored, polledAt time.Time) ([]topics.Event, error) {
	if !s.anyone && s.replyTo != c.ReplyTo {
		return []topics.Event{b.Reject(&topics.Rejection{Command: c, Code: topics.CodeRequestIDConflict,
			Message: fmt.Sprintf("request_id %q was already used with another reply_to: send a new request_id", c.RequestID)}, polledAt)}, nil
	}
	prev := s.p
	var ev topics.Event
	if prev.ev != nil {
		ev = *prev.ev
	} else {
		var err error
		if ev, err = topics.DecodeEvent(prev.raw); err != nil {
			// Damaged in the database (lockworker writes none it cannot
			// read): refused, rather than failing the batch on every retry
			// until the outcome is pruned.
			if b.env.OnUnreadableOutcome != nil {
				b.env.OnUnreadableOutcome(c.RequestID, b.env.Partition)
			}
			return []topics.Event{b.Reject(&topics.Rejection{Command: c, Code: topics.CodeRequestIDConflict,
				Message: fmt.Sprintf("request_id %q was applied before, but its stored outcome cannot be read back: send a new request_id", c.RequestID)}, polledAt)}, nil
		}
	}
	if c.ReplyTo != "" {
		b.queueEvent(c.ReplyTo, []byte(eventKey(ev, c)), prev, ev)
	}
	return []topics.Event{ev}, nil
}

// eventKey is the record key of ev, the stored outcome of a request that c
// repeats: the key of the lock or session ev is about, which a copy "with
// any content" may not name; c's own when ev is about neither.
func eventKey(ev topics.Event, c topics.Command) string {
	switch {
	case ev.LockInfo != nil:
		return topics.LockKey(ev.LockInfo.Namespace, ev.LockInfo.LockName)
	case ev.SessionInfo != nil:
		return topics.SessionKey(ev.SessionInfo.SessionID)
	}
	return c.Key()
}

// emit queues p for topic.
func (b *Batch) emit(topic, key string, p *pending) {
	if topic == "" {
		return
	}
	b.queueEvent(topic, []byte(key), p, *p.ev)
}

// queueEvent queues p, whose value is the event ev, with ev's headers.
func (b *Batch) queueEvent(topic string, key []byte, p *pending, ev topics.Event) {
	b.queue(topic, key, p, topics.EventHeaders(ev, b.env.Source))
	b.outbox[len(b.outbox)-1].form = asEvent
}

// queue adds an outbox row under the batch's partition.
func (b *Batch) queue(topic string, key []byte, p *pending, headers []topics.Header) {
	b.outbox = append(b.outbox, outboxRow{partition: b.env.Partition, topic: topic, key: key, p: p, headers: headers})
}

// staleState logs (Env.Log) the drop of a lock state record of revision
// rev, of the batch's partition, after the transaction's record of
// revision kept.
func (b *Batch) staleState(k stateRow, rev, kept int64) {
	b.env.Log.Error().Int32("partition", b.env.Partition).Str("namespace", k.namespace).Str("lock_name", k.name).
		Int64("revision", rev).Int64("kept_revision", kept).
		Msg("dropped a lock state record of a lower revision than the transaction's earlier one: a stale view of the lock (a bug)")
}

// queueState queues a lock state record (or, with neither state nor raw
// set, a tombstone) and marks the lock's earlier record of this
// transaction superseded: the state topic gets one record per lock per
// transaction, the last, in its place after the lock's events. A lock that
// many commands of one batch change (readers joining one by one) then
// costs one record, not one per command; a Watch sees the transaction's
// last revision. That holds across the commands partitions of the batch
// (producers not keying by lock key): an earlier record under another
// partition may reach the topic after the last, and one whose holders are
// read at flush (changedState) would show the last change's holders under
// its own revision. A tombstone stays before a state that follows it (the
// lock deleted, then created again at revision 1): without it a reader
// would take revision 1 for an old one. A state of a lower revision than
// the lock's record before it is dropped, never put in its place: the
// lock's changes are applied in order, so it would be a stale view (a
// common case sent ahead of a change it should have followed), and the
// topic must not go back. No path is known to reach that: it is logged as
// an error (Env.Log), so that a regression is seen.
func (b *Batch) queueState(namespace, name string, p *pending) {
	k := stateRow{namespace, name}
	if i, ok := b.states[k]; ok {
		prev := b.outbox[i].p.state
		if p.state != nil && prev != nil && prev.Revision > p.state.Revision {
			b.staleState(k, p.state.Revision, prev.Revision)
			return
		}
		if p.state == nil || prev != nil {
			b.outbox[i].superseded = true
		}
	}
	b.states[k] = len(b.outbox)
	b.queue(b.env.Names.State, []byte(topics.LockKey(namespace, name)), p, topics.LockStateHeaders())
	if p.state != nil {
		b.outbox[len(b.outbox)-1].form = asLockState
	}
}

// remember stores p as the outcome of requestID, asked with replyTo,
// replacing an earlier one.
func (b *Batch) remember(requestID, replyTo string, p *pending) {
	if requestID == "" {
		return
	}
	s := &stored{p: p, replyTo: replyTo}
	b.outcomes[requestID] = s
	b.known[requestID] = s
}

// Flush writes the buffered outbox rows, history and outcomes in one round
// trip. Waking the relay is the caller's business, after commit and in
// process: a NOTIFY here would serialize every committing transaction on
// PostgreSQL's database-wide notify lock (docs/performance.md).
func (b *Batch) Flush(ctx context.Context) error {
	batch := &pgx.Batch{}
	if err := b.QueueFlush(ctx, batch); err != nil {
		return err
	}
	if batch.Len() == 0 {
		return nil
	}
	if err := b.tx.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("writing outbox and history: %w", err)
	}
	return nil
}

// QueueFlush is Flush for a caller that sends the writes itself, on batch
// (store.InTxBatch's last batch, which travels with COMMIT). It first reads
// the holders the lock state records still lack (readStates), a round trip
// when there are any. The buffers are emptied: the writes belong to batch
// now.
func (b *Batch) QueueFlush(ctx context.Context, batch *pgx.Batch) error {
	if err := b.readStates(ctx); err != nil {
		return err
	}
	now := time.Now()
	b.written = nil
	b.outbox = slices.DeleteFunc(b.outbox, func(r outboxRow) bool { return r.superseded })
	encoded := map[*pending][]byte{}
	encode := func(p *pending) ([]byte, error) {
		if p.state != nil {
			return p.state.Encode()
		}
		if p.ev == nil {
			return p.raw, nil
		}
		if v, ok := encoded[p]; ok {
			return v, nil
		}
		if !p.polledAt.IsZero() && p.ev.DurationMS == nil {
			ms := float64(now.Sub(p.polledAt).Microseconds()) / 1000
			p.ev.DurationMS = &ms
		}
		v, err := p.ev.Encode()
		encoded[p] = v
		return v, err
	}
	// An event's stored form, once per event: its reply, its lifecycle
	// record and its outcome hold the same one.
	compacted := map[*pending][]byte{}
	compact := func(p *pending, v []byte) []byte {
		c, ok := compacted[p]
		if !ok {
			c = topics.CompactEvent(nil, v)
			compacted[p] = c
		}
		return c
	}
	if n := len(b.outbox); n > 0 {
		parts, topicsCol, keys, values, headers := make([]int32, n), make([]string, n), make([][]byte, n), make([][]byte, n), make([][]byte, n)
		written := make([]outbox.Row, n)
		for i, r := range b.outbox {
			v, err := encode(r.p)
			if err != nil {
				return fmt.Errorf("encoding event: %w", err)
			}
			hs := topics.EncodeHeaders(nil, r.headers)
			parts[i], topicsCol[i], keys[i], values[i], headers[i] = r.partition, r.topic, r.key, v, hs
			switch {
			case b.env.PlainEvents:
			case r.form == asEvent:
				values[i], headers[i] = compact(r.p, v), topics.EncodeEventHeaders(nil, b.env.Source)
			case r.form == asLockState:
				values[i], headers[i] = topics.CompactLockState(nil, v), topics.EncodeLockStateHeaders(nil)
			}
			written[i] = outbox.Row{Partition: r.partition, Topic: r.topic, Key: r.key, Value: v, Headers: hs}
		}
		b.written = written
		// unnest keeps the arrays' order, and each row takes the next id
		// as it is inserted, so outbox ids follow emit order: sorted by
		// id, the rows returned are the rows' in order. created_at goes to
		// the relay with the id, which it deletes the row by (outbox.Row).
		batch.Queue(`INSERT INTO outbox (source_partition, topic, key, value, headers)
			SELECT * FROM unnest($1::int[], $2::text[], $3::bytea[], $4::bytea[], $5::bytea[])
			RETURNING id, created_at`,
			parts, topicsCol, keys, values, headers).Query(func(rows pgx.Rows) error {
			got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[inserted])
			if err != nil {
				return fmt.Errorf("writing the outbox: %w", err)
			}
			if len(got) != len(written) {
				return fmt.Errorf("writing the outbox: %d rows inserted, %d returned", len(written), len(got))
			}
			slices.SortFunc(got, func(a, b inserted) int { return cmp.Compare(a.ID, b.ID) })
			for i := range written {
				written[i].ID, written[i].CreatedAt = got[i].ID, got[i].CreatedAt
			}
			return nil
		})
	}
	if n := len(b.history); n > 0 {
		ids, nss, names, types, owners, tokens, ats := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]int64, n), make([]time.Time, n)
		for i, h := range b.history {
			ids[i], nss[i], names[i], types[i], owners[i], tokens[i], ats[i] = h.eventID, h.namespace, h.lockName, h.typ, h.owner, h.token, h.at
		}
		batch.Queue(`INSERT INTO lock_events (event_id, namespace, lock_name, type, owner_id, fencing_token, occurred_at)
			SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::timestamptz[])`,
			ids, nss, names, types, owners, tokens, ats)
	}
	if len(b.outcomes) > 0 {
		// A request read as new is inserted without ON CONFLICT: when
		// another transaction applied the same request_id meanwhile (a copy
		// on another partition), the insert waits for it and then fails,
		// store.ErrTransient, and the retry answers the copy from the
		// stored outcome instead of applying it twice. Outcomes of
		// requests from earlier transactions (a queued acquire granted
		// now) replace theirs. In request_id order: two transactions
		// inserting the same two ids take them in one order, so one waits
		// for the other instead of both deadlocking.
		var fresh, later outcomeRows
		for _, id := range slices.Sorted(maps.Keys(b.outcomes)) {
			s := b.outcomes[id]
			v, err := encode(s.p)
			if err != nil {
				return fmt.Errorf("encoding outcome: %w", err)
			}
			if !b.env.PlainEvents {
				v = compact(s.p, v)
			}
			if b.unstored[id] {
				fresh.add(id, v, s.replyTo)
				delete(b.unstored, id)
			} else {
				later.add(id, v, s.replyTo)
			}
		}
		if len(fresh.ids) > 0 {
			batch.Queue(`INSERT INTO processed_requests (request_id, outcome, reply_to)
				SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[])`,
				fresh.ids, fresh.values, fresh.replyTos)
		}
		if len(later.ids) > 0 {
			batch.Queue(`INSERT INTO processed_requests (request_id, outcome, reply_to)
				SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[])
				ON CONFLICT (request_id) DO UPDATE SET outcome = EXCLUDED.outcome, reply_to = EXCLUDED.reply_to, processed_at = clock_timestamp()`,
				later.ids, later.values, later.replyTos)
		}
	}
	b.outbox, b.history, b.outcomes, b.states = nil, nil, map[string]*stored{}, map[stateRow]int{}
	return nil
}

// inserted is an outbox row's id and created_at, as its INSERT returns them.
type inserted struct {
	ID        int64
	CreatedAt time.Time
}

// outcomeRows are processed_requests rows to write, as columns.
type outcomeRows struct {
	ids, replyTos []string
	values        [][]byte
}

func (o *outcomeRows) add(id string, value []byte, replyTo string) {
	o.ids, o.values, o.replyTos = append(o.ids, id), append(o.values, value), append(o.replyTos, replyTo)
}

// Written returns the outbox rows the last Flush (or QueueFlush, once its
// batch ran) wrote, with their ids, in id order: for the relay, after
// commit (outbox.Slot.Fill).
func (b *Batch) Written() []outbox.Row { return b.written }
