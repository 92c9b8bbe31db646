package handlers_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/handlers/rules"
	"github.com/omninode/lockworker/topics"
)

// TestDifferential drives seeded random sequences of commands with modes
// and limits (a mutex, a read/write lock and a semaphore of 3, with a
// wrong mode or limit now and then), sessions (o1's and o2's acquires
// now and then in their session, which is closed and reopened, or expires,
// at random), lock-delays, max_hold caps, revokes and copies of earlier
// commands (a producer's retry: answered with the stored outcome from the
// same reply_to, refused from another, in the batch of the original or a
// later one), batched at random,
// through the
// general path alone, through the common cases sent ahead and through them
// inline, each on a schema of its own, and through rules.Memory; all four must
// give the same events. Leases, waits and lock-delays end only when the
// test ends them (in the database and in the model alike), then the expiry
// step runs.
func TestDifferential(t *testing.T) {
	const seeds, steps = 16, 80
	h := newHarness(t)
	paths := []string{"general", "ahead", "inline"}
	schemas := map[string]*harness{"general": h, "ahead": h.fresh(), "inline": h.fresh()}
	seen := map[string]int{}
	for seed := uint64(1); seed <= seeds; seed++ {
		script := diffScript(rand.New(rand.NewPCG(seed, 14)), steps)
		want := modelRun(script)
		for _, line := range want {
			for _, what := range diffCoverage {
				if strings.Contains(line, what[0]) && strings.Contains(line, what[1]) {
					seen[what[0]+" "+what[1]]++
				}
			}
		}
		for _, path := range paths {
			schemas[path].reset()
			got := schemas[path].dbRun(script, path)
			for i := range max(len(want), len(got)) {
				w, g := "(none)", "(none)"
				if i < len(want) {
					w = want[i]
				}
				if i < len(got) {
					g = got[i]
				}
				require.Equal(t, w, g, "seed %d, %s path, event %d; the model's events before it:\n%s", seed, path, i,
					strings.Join(want[max(0, i-8):i], "\n"))
			}
		}
	}
	for _, what := range diffCoverage {
		require.Positive(t, seen[what[0]+" "+what[1]], "the scripts never give %q", what)
	}
}

// diffCoverage are events the scripts must give for the test to cover
// sessions, lock-delays, max_hold and revokes: lines with both strings.
var diffCoverage = [][2]string{
	{"lock.released session_close", "reason=session_closed"}, {"lock.expired expire", "reason=session_expired"},
	{"lock.withdrawn acquire", "reason=session_closed"}, {"lock.withdrawn acquire", "reason=session_expired"},
	{"lock.rejected acquire", "code=SESSION_NOT_FOUND"}, {"lock.rejected extend", "code=SESSION_BOUND"},
	{"lock.rejected session_close", "code=SESSION_NOT_FOUND"}, {"lock.rejected session_open", "code=SESSION_EXISTS"},
	{"session.opened", ""}, {"session.closed", ""}, {"session.expired", ""},
	{"lock.rejected acquire", " delayed "}, {"state ", "delayed=true"}, {"lock.rejected extend", "code=MAX_HOLD_EXCEEDED"},
	{"lock.revoked revoke req= ", "reason=test"}, {"lock.revoked revoke req=req-", "revoked=1"}, {"lock.revoked revoke req=req-", "revoked=2"},
	{"lock.rejected revoke", "code=NOT_HELD"}, {"lock.rejected", "code=REQUEST_ID_CONFLICT"},
}

// diffStep is one step of a script: a batch of commands, or the end of a
// lease (the holder-th holder of lock by token, modulo their number), of
// the first wait of lock or of its lock-delay, followed by the expiry step.
type diffStep struct {
	cmds      []diffCmd
	endLease  string
	holder    int
	endWait   string
	endDelay  string
	expiryRun bool
	// endSession: the session's expiry passes (before the expiry step).
	endSession string
}

// diffSessions are the sessions of the script, by owner.
var diffSessions = map[string]string{"o1": "s-o1", "o2": "s-o2"}

// diffCmd is a command; guard says which fencing_token a release or extend
// gives: none, the owner's own (as its last grant said) or a wrong one.
type diffCmd struct {
	c     topics.Command
	guard int
}

var diffLocks = map[string]struct {
	limit  int
	shared bool
}{"mutex": {1, false}, "rw": {1, true}, "sem": {3, false}}

func diffScript(r *rand.Rand, steps int) []diffStep {
	locks := []string{"mutex", "rw", "sem"}
	owners := []string{"o1", "o2", "o3", "o4", "o5"}
	seq := 0
	var script []diffStep
	// fresh is a command on lock by owner: an acquire (of the lock's kind,
	// sometimes wrong), a release or an extend (with no token, the owner's
	// own or a wrong one), a revoke or a query.
	fresh := func(lock, owner string) diffCmd {
		seq++
		c := topics.Command{RequestID: fmt.Sprintf("req-%d", seq), LockName: lock, OwnerID: owner, ReplyTo: "locks.replies." + owner}
		guard := 0
		switch n := r.IntN(100); {
		case n < 45:
			c.Operation = topics.OpAcquire
			kind := diffLocks[lock]
			if kind.limit > 1 || r.IntN(2) == 1 { // limit-1 locks also without limit, as v1
				c.Limit = kind.limit
			}
			if kind.shared && r.IntN(2) == 0 {
				c.Mode = topics.ModeShared
			}
			if r.IntN(15) == 0 { // the wrong limit
				c.Limit, c.Mode = 2, ""
			}
			if r.IntN(2) == 0 {
				c.WaitTimeout = 120
			}
			if r.IntN(2) == 0 {
				c.LeaseDuration = 60
			}
			if id, ok := diffSessions[owner]; ok && r.IntN(3) == 0 {
				c.SessionID = id
			}
			// A delay that outlasts the run unless the test ends it; a
			// cap (on a lease of its own) that a few extensions reach,
			// and no renewal within the run (which would depend on the
			// clock).
			if r.IntN(6) == 0 {
				c.LockDelay = 60
			}
			if c.SessionID == "" && r.IntN(2) == 0 {
				c.MaxHold = 65
			}
		case n < 66:
			c.Operation, guard = topics.OpRelease, r.IntN(3)
		case n < 81:
			c.Operation, guard = topics.OpExtend, r.IntN(3)
			if r.IntN(2) == 0 {
				c.ExtensionDuration = 5
			}
		case n < 85:
			c.Operation, c.ReplyTo, c.Reason = topics.OpRevoke, "locks.replies.admin", "test"
			if r.IntN(2) == 0 {
				c.OwnerID = ""
			}
		default:
			c.Operation, c.OwnerID, c.ReplyTo = topics.OpQuery, "", "locks.replies.q"
		}
		return diffCmd{c: c, guard: guard}
	}
	// next is fresh, or now and then a copy of an earlier command (a
	// producer's retry), from another reply_to a third of the time.
	var issued []diffCmd
	next := func(lock, owner string) diffCmd {
		if len(issued) > 0 && r.IntN(12) == 0 {
			dc := issued[r.IntN(len(issued))]
			if r.IntN(3) == 0 {
				dc.c.ReplyTo = "locks.replies.replayer"
			}
			return dc
		}
		dc := fresh(lock, owner)
		issued = append(issued, dc)
		return dc
	}
	for range steps {
		lock := locks[r.IntN(len(locks))]
		switch n := r.IntN(100); {
		case n < 8:
			script = append(script, diffStep{endLease: lock, holder: r.IntN(3), expiryRun: true})
			continue
		case n < 12:
			script = append(script, diffStep{endWait: lock, expiryRun: true})
			continue
		case n < 14:
			script = append(script, diffStep{endSession: diffSessions[owners[r.IntN(2)]], expiryRun: true})
			continue
		case n < 17:
			// Close the session and open it again, or only open it (each
			// refused when the session is not open, or open).
			owner := owners[r.IntN(2)]
			ops := []string{topics.OpSessionClose, topics.OpSessionOpen}
			if r.IntN(3) == 0 {
				ops = ops[1:]
			}
			var step diffStep
			for _, op := range ops {
				seq++
				dc := diffCmd{c: topics.Command{RequestID: fmt.Sprintf("req-%d", seq), Operation: op,
					SessionID: diffSessions[owner], OwnerID: owner, TTL: 3600, ReplyTo: "locks.replies." + owner}}
				step.cmds, issued = append(step.cmds, dc), append(issued, dc)
			}
			script = append(script, step)
			continue
		case n < 19:
			script = append(script, diffStep{endDelay: lock, expiryRun: true})
			continue
		}
		var step diffStep
		if n := r.IntN(100); n < 15 {
			// A run of one lock's commands in one batch, by one or two
			// owners: the commands that follow another of their lock.
			lock, pair := locks[r.IntN(len(locks))], []string{owners[r.IntN(len(owners))], owners[r.IntN(len(owners))]}
			for range 2 + r.IntN(5) {
				dc := next(lock, pair[r.IntN(2)])
				if dc.guard == 1 {
					// No requester knows the token of a grant in its own
					// batch: its answer has not been sent.
					dc.guard = 0
				}
				step.cmds = append(step.cmds, dc)
			}
		} else {
			for range 1 + r.IntN(3) {
				step.cmds = append(step.cmds, next(locks[r.IntN(len(locks))], owners[r.IntN(len(owners))]))
			}
		}
		script = append(script, step)
	}
	return script
}

// diffTracker renders events, then at the end of each step the lock
// states published in it, each fencing token as its rank among the tokens
// of its lock (the common cases sent ahead take tokens before the commands
// of other locks earlier in the batch), and keeps each owner's token for
// the guards.
type diffTracker struct {
	ranks  map[string][]int64 // lock -> tokens in order of appearance
	last   map[string]int64   // lock/owner -> token of its last grant
	lines  []string
	states []topics.LockState // of the current step
	// outcomes are the requests' last answers, as the handlers store them
	// (the model answers a repeated request_id with it).
	outcomes map[string]topics.Event
}

// lastStates keeps, as the handlers publish them, one state per lock of
// the step's transaction: its last, where that one was.
func (d *diffTracker) lastStates() {
	var kept []topics.LockState
	for i, st := range d.states {
		if !slices.ContainsFunc(d.states[i+1:], func(x topics.LockState) bool { return x.LockName == st.LockName }) {
			kept = append(kept, st)
		}
	}
	d.states = kept
}

// noteStates renders the step's lock states.
func (d *diffTracker) noteStates() {
	for _, st := range d.states {
		s := fmt.Sprintf("state %s rev=%d status=%s limit=%d acq=%d waiters=%d holders=%d delayed=%v", st.LockName, st.Revision, st.Status,
			st.Limit, st.AcquisitionCount, st.WaiterCount, st.HolderCount, st.DelayUntil != nil)
		for _, h := range st.Holders {
			s += fmt.Sprintf(" %s/%s/#%d", h.OwnerID, h.Mode, d.rank(st.LockName, h.FencingToken))
		}
		d.lines = append(d.lines, s)
	}
	d.states = nil
}

func newTracker() *diffTracker {
	return &diffTracker{ranks: map[string][]int64{}, last: map[string]int64{}, outcomes: map[string]topics.Event{}}
}

func (d *diffTracker) rank(lock string, tok int64) int {
	if tok == 0 {
		return 0
	}
	if !slices.Contains(d.ranks[lock], tok) {
		d.ranks[lock] = append(d.ranks[lock], tok)
	}
	return slices.Index(d.ranks[lock], tok) + 1
}

// guarded sets the command's fencing_token as its guard says.
func (d *diffTracker) guarded(dc diffCmd) topics.Command {
	c := dc.c
	switch dc.guard {
	case 1:
		if tok, ok := d.last[c.LockName+"/"+c.OwnerID]; ok {
			c.FencingToken = &tok
		}
	case 2:
		wrong := int64(-1)
		c.FencingToken = &wrong
	}
	return c
}

func (d *diffTracker) note(ev topics.Event) {
	if ev.RequestID != "" && ev.ErrorCode != topics.CodeRequestIDConflict {
		d.outcomes[ev.RequestID] = ev
	}
	s := fmt.Sprintf("%s %s req=%s code=%s pos=%d reason=%s", ev.Type, ev.Operation, ev.RequestID, ev.ErrorCode, ev.QueuePosition, ev.Reason)
	if ev.RetryAfterSeconds != nil {
		s += " retry_after"
	}
	if strings.Contains(ev.ErrorMessage, "lock-delay") {
		s += " delayed"
	}
	if ev.RevokedCount > 0 {
		s += fmt.Sprintf(" revoked=%d", ev.RevokedCount)
	}
	if li := ev.LockInfo; li != nil {
		if ev.Type == topics.TypeAcquired {
			d.last[li.LockName+"/"+li.OwnerID] = li.FencingToken
		}
		s += fmt.Sprintf(" %s owner=%s status=%s mode=%s limit=%d token#%d acq=%d ext=%d lease=%g rev=%d",
			li.LockName, li.OwnerID, li.Status, li.Mode, li.Limit, d.rank(li.LockName, li.FencingToken), li.AcquisitionCount,
			li.ExtensionCount, li.LeaseDuration, li.Revision)
		if ev.Type == topics.TypeStatus {
			s += fmt.Sprintf(" holders=%d", li.HolderCount)
			for _, h := range li.Holders {
				s += fmt.Sprintf(" %s/%s/%s/#%d", h.OwnerID, h.Mode, h.Status, d.rank(li.LockName, h.FencingToken))
			}
		}
	}
	d.lines = append(d.lines, s)
}

// dbRun runs the script on h's schema by path: "general" (no common
// case), "ahead" (common cases sent ahead, as the worker does) or "inline".
func (h *harness) dbRun(script []diffStep, path string) []string {
	d := newTracker()
	ctx := context.Background()
	for owner, id := range diffSessions {
		_, err := h.st.Pool.Exec(ctx, `INSERT INTO sessions (id, owner_id, ttl, expires_at, source_partition)
			VALUES ($1, $2, 3600, clock_timestamp() + interval '1 hour', 0)`, id, owner)
		require.NoError(h.t, err)
	}
	for _, step := range script {
		switch {
		case step.endSession != "":
			_, err := h.st.Pool.Exec(ctx, `UPDATE sessions SET expires_at = clock_timestamp() - interval '1 millisecond' WHERE id = $1`, step.endSession)
			require.NoError(h.t, err)
		case step.endLease != "":
			var owners []string
			// A session's lease has no expiry of its own.
			rows, err := h.st.Pool.Query(ctx, `SELECT owner_id FROM lock_holders WHERE lock_name = $1 AND session_id IS NULL ORDER BY fencing_token`, step.endLease)
			require.NoError(h.t, err)
			owners, err = pgx.CollectRows(rows, pgx.RowTo[string])
			require.NoError(h.t, err)
			if len(owners) > 0 {
				_, err := h.st.Pool.Exec(ctx, `UPDATE lock_holders SET expires_at = clock_timestamp() - interval '1 millisecond'
					WHERE lock_name = $1 AND owner_id = $2`, step.endLease, owners[step.holder%len(owners)])
				require.NoError(h.t, err)
			}
		case step.endWait != "":
			h.forceWaitEnd(step.endWait)
		case step.endDelay != "":
			_, err := h.st.Pool.Exec(ctx, `UPDATE locks SET delay_until = clock_timestamp() - interval '1 millisecond'
				WHERE lock_name = $1 AND delay_until IS NOT NULL`, step.endDelay)
			require.NoError(h.t, err)
		}
		if step.expiryRun {
			_, evs := h.expireDueEvents()
			for _, ev := range evs {
				d.note(ev)
			}
			h.stepStates(d)
			continue
		}
		cmds := make([]topics.Command, len(step.cmds))
		for i, dc := range step.cmds {
			cmds[i] = d.guarded(dc)
		}
		err := h.st.InTx(ctx, func(tx pgx.Tx) error {
			b := handlers.NewBatch(tx, h.env)
			switch path {
			case "general":
				handlers.GeneralPathOnly(b)
			case "ahead":
				pb := &pgx.Batch{}
				b.QueueAtOnce(pb, cmds, nil)
				if err := tx.SendBatch(ctx, pb).Close(); err != nil {
					return err
				}
			}
			for _, c := range cmds {
				evs, err := b.Apply(ctx, c, time.Now())
				if err != nil {
					return err
				}
				for _, ev := range evs {
					d.note(ev)
				}
			}
			return b.Flush(ctx)
		})
		require.NoError(h.t, err)
		h.stepStates(d)
	}
	return d.lines
}

// stepStates notes the lock states the step published and clears the
// outbox for the next.
func (h *harness) stepStates(d *diffTracker) {
	for _, r := range h.states() {
		d.states = append(d.states, *r.State)
	}
	d.noteStates()
	h.clearOutbox()
}

// modelRun runs the script on rules.Memory, rendering the effects as the
// handlers send them.
func modelRun(script []diffStep) []string {
	d := newTracker()
	mem := map[string]*rules.Memory{}
	revs := map[string]int64{}
	for name := range diffLocks {
		mem[name] = rules.NewMemory()
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var token int64
	next := func() int64 { token++; return token }
	decide := func(name, owner string, c *topics.Command, decide func(l *rules.Lock) []rules.Effect) {
		m := mem[name]
		l := m.Lock(owner, now, next)
		effs := decide(l)
		delayed := !m.DelayUntil.IsZero()
		if err := m.Save(l, effs); err != nil {
			panic(err)
		}
		// As the handlers' apply: a lock-delay that started or ended is a
		// change too.
		changed := slices.ContainsFunc(effs, func(e rules.Effect) bool { return e.Kind != rules.Refuse }) ||
			delayed != !m.DelayUntil.IsZero()
		if changed {
			revs[name]++
		}
		for _, ev := range modelEvents(name, c, effs) {
			ev.LockInfo.Revision = revs[name]
			d.note(ev)
		}
		if changed {
			d.states = append(d.states, modelState(name, revs[name], m))
		}
	}
	firstReplyTo := map[string]string{}
	open := map[string]bool{}
	for _, id := range diffSessions {
		open[id] = true
	}
	// endSession ends session id of owner for reason, on the locks it holds
	// or waits for, in key order.
	endSession := func(id, owner, reason string) {
		delete(open, id)
		for _, name := range []string{"mutex", "rw", "sem"} {
			m := mem[name]
			if slices.ContainsFunc(m.Holders, func(h rules.Holder) bool { return h.Session == id }) ||
				slices.ContainsFunc(m.Queue, func(w rules.Waiter) bool { return w.Session == id }) {
				decide(name, owner, nil, func(l *rules.Lock) []rules.Effect { return l.EndSession(id, reason) })
			}
		}
	}
	sessionOwner := func(id string) string {
		for owner, s := range diffSessions {
			if s == id {
				return owner
			}
		}
		return ""
	}
	for _, step := range script {
		now = now.Add(time.Millisecond)
		switch {
		case step.endLease != "":
			var own []int // the leases with an expiry of their own
			for i, h := range mem[step.endLease].Holders {
				if h.Session == "" {
					own = append(own, i)
				}
			}
			if len(own) > 0 {
				mem[step.endLease].Holders[own[step.holder%len(own)]].ExpiresAt = now.Add(-time.Millisecond)
			}
		case step.endWait != "":
			if q := mem[step.endWait].Queue; len(q) > 0 {
				q[0].Deadline = now.Add(-time.Millisecond)
			}
		case step.endDelay != "":
			if m := mem[step.endDelay]; !m.DelayUntil.IsZero() {
				m.DelayUntil = now.Add(-time.Millisecond)
			}
		}
		if step.expiryRun {
			// The expiry step: sessions first, then leases, then waits and
			// lock-delays.
			if id := step.endSession; open[id] {
				endSession(id, sessionOwner(id), rules.ReasonSessionExpired)
				d.note(topics.Event{Type: topics.TypeSessionExpired, Operation: topics.OpExpire})
			}
			for _, name := range []string{"mutex", "rw", "sem"} {
				if slices.ContainsFunc(mem[name].Holders, func(h rules.Holder) bool { return !h.ExpiresAt.After(now) }) {
					decide(name, "", nil, func(l *rules.Lock) []rules.Effect { effs, _ := l.Settle(); return effs })
				}
			}
			for _, name := range []string{"mutex", "rw", "sem"} {
				m := mem[name]
				if slices.ContainsFunc(m.Queue, func(w rules.Waiter) bool { return !w.Deadline.After(now) }) ||
					!m.DelayUntil.IsZero() && !m.DelayUntil.After(now) {
					decide(name, "", nil, (*rules.Lock).Expire)
				}
			}
			d.lastStates()
			d.noteStates()
			continue
		}
		// Tokens as the requesters know them before the batch, as dbRun
		// gives them: no requester knows a grant of its own batch.
		cmds := make([]topics.Command, len(step.cmds))
		for i, dc := range step.cmds {
			cmds[i] = d.guarded(dc)
		}
		for _, c := range cmds {
			// A request_id applied before is answered with its stored
			// outcome from its own reply_to, refused from another, and
			// changes nothing.
			if prev, ok := d.outcomes[c.RequestID]; ok {
				if c.ReplyTo == firstReplyTo[c.RequestID] {
					d.note(prev)
				} else {
					d.note(topics.Event{Type: topics.TypeRejected, Operation: c.Operation, RequestID: c.RequestID, ErrorCode: topics.CodeRequestIDConflict})
				}
				continue
			}
			firstReplyTo[c.RequestID] = c.ReplyTo
			switch c.Operation {
			case topics.OpSessionClose:
				if !open[c.SessionID] {
					d.note(topics.Event{Type: topics.TypeRejected, Operation: c.Operation, RequestID: c.RequestID, ErrorCode: topics.CodeSessionNotFound})
					continue
				}
				endSession(c.SessionID, c.OwnerID, rules.ReasonSessionClosed)
				d.note(topics.Event{Type: topics.TypeSessionClosed, Operation: c.Operation, RequestID: c.RequestID})
			case topics.OpSessionOpen:
				if open[c.SessionID] {
					d.note(topics.Event{Type: topics.TypeRejected, Operation: c.Operation, RequestID: c.RequestID, ErrorCode: topics.CodeSessionExists})
					continue
				}
				open[c.SessionID] = true
				d.note(topics.Event{Type: topics.TypeSessionOpened, Operation: c.Operation, RequestID: c.RequestID})
			case topics.OpAcquire:
				r := rules.Request{Owner: c.OwnerID, Mode: rules.Exclusive, Limit: max(c.Limit, 1), Lease: c.LeaseDuration,
					Wait: c.WaitTimeout, ReplyTo: c.ReplyTo, RequestID: c.RequestID, Key: c.Key(), Session: c.SessionID,
					SessionExpires: now.Add(time.Hour), LockDelay: c.LockDelay, MaxHold: c.MaxHold}
				if c.SessionID != "" && !open[c.SessionID] {
					decide(c.LockName, c.OwnerID, &c, func(l *rules.Lock) []rules.Effect {
						return []rules.Effect{{Kind: rules.Refuse, Code: topics.CodeSessionNotFound, Info: l.Info()}}
					})
					continue
				}
				if c.Mode == topics.ModeShared {
					r.Mode = rules.Shared
				}
				if r.Lease == 0 {
					r.Lease = topics.DefaultLeaseDuration.Seconds()
				}
				decide(c.LockName, c.OwnerID, &c, func(l *rules.Lock) []rules.Effect { return l.Acquire(r) })
			case topics.OpRelease:
				decide(c.LockName, c.OwnerID, &c, func(l *rules.Lock) []rules.Effect { return l.Release(c.OwnerID, c.Key(), c.FencingToken) })
			case topics.OpExtend:
				decide(c.LockName, c.OwnerID, &c, func(l *rules.Lock) []rules.Effect {
					return l.Extend(c.OwnerID, c.Key(), c.FencingToken, c.ExtensionDuration)
				})
			case topics.OpRevoke:
				decide(c.LockName, "", &c, func(l *rules.Lock) []rules.Effect { return l.Revoke(c.OwnerID, c.Key()) })
			case topics.OpQuery:
				m := mem[c.LockName]
				l := m.Lock("", now, next)
				ev := modelEvent(topics.TypeStatus, c.Operation, c.RequestID, c.LockName, l.Info())
				ev.LockInfo.Revision = revs[c.LockName]
				ev.LockInfo.HolderCount = len(l.Holders)
				for _, h := range l.Holders {
					status := topics.StatusAcquired
					if !h.Live(now) {
						status = topics.StatusExpired
					}
					ev.LockInfo.Holders = append(ev.LockInfo.Holders, topics.Holder{OwnerID: h.Owner, Mode: string(h.Mode), Status: status, FencingToken: h.Token})
				}
				d.note(ev)
			}
		}
		d.lastStates()
		d.noteStates()
	}
	return d.lines
}

// modelEvents are the events the handlers send for effs of command c (nil:
// the expiry step), in order.
func modelEvents(lock string, c *topics.Command, effs []rules.Effect) []topics.Event {
	var evs []topics.Event
	own := func(typ string, in rules.Info) *topics.Event {
		evs = append(evs, modelEvent(typ, c.Operation, c.RequestID, lock, in))
		return &evs[len(evs)-1]
	}
	revoked, last := 0, rules.Info{}
	for _, e := range effs {
		switch e.Kind {
		case rules.Grant:
			evs = append(evs, modelEvent(topics.TypeAcquired, topics.OpAcquire, e.Holder.RequestID, lock, e.Info))
		case rules.Renew:
			own(topics.TypeAcquired, e.Info)
		case rules.Queue:
			own(topics.TypeQueued, e.Info).QueuePosition = e.Position
		case rules.Requeue:
			evs = append(evs, modelEvent(topics.TypeWithdrawn, topics.OpAcquire, e.Prev.RequestID, lock, e.Info))
			own(topics.TypeQueued, e.Info).QueuePosition = e.Position
		case rules.Withdraw:
			own(topics.TypeWithdrawn, e.Info)
			evs = append(evs, modelEvent(topics.TypeWithdrawn, topics.OpAcquire, e.Waiter.RequestID, lock, e.Info))
		case rules.Timeout:
			ev := modelEvent(topics.TypeRejected, topics.OpAcquire, e.Waiter.RequestID, lock, e.Info)
			ev.ErrorCode = topics.CodeLockTimeout
			evs = append(evs, ev)
		case rules.Expire:
			evs = append(evs, modelEvent(topics.TypeExpired, topics.OpExpire, "", lock, e.Info))
		case rules.Lose:
			typ, op := topics.TypeExpired, topics.OpExpire
			if e.Reason == rules.ReasonSessionClosed {
				typ, op = topics.TypeReleased, topics.OpSessionClose
			}
			ev := modelEvent(typ, op, "", lock, e.Info)
			ev.Reason = e.Reason
			evs = append(evs, ev)
		case rules.Drop:
			ev := modelEvent(topics.TypeWithdrawn, topics.OpAcquire, e.Waiter.RequestID, lock, e.Info)
			ev.Reason = e.Reason
			evs = append(evs, ev)
		case rules.Release:
			own(topics.TypeReleased, e.Info)
		case rules.Extend:
			own(topics.TypeExtended, e.Info)
		case rules.Revoke:
			ev := modelEvent(topics.TypeRevoked, topics.OpRevoke, "", lock, e.Info)
			ev.Reason = c.Reason
			evs = append(evs, ev)
			revoked, last = revoked+1, e.Info
		case rules.Refuse:
			ev := own(topics.TypeRejected, e.Info)
			ev.ErrorCode, ev.ErrorMessage = e.Code, e.Message
			if e.Code == topics.CodeLockHeld {
				s := e.RetryAfter.Seconds()
				ev.RetryAfterSeconds = &s
			}
		}
	}
	if revoked > 0 { // the revoker's own answer
		ev := own(topics.TypeRevoked, last)
		ev.Reason, ev.RevokedCount = c.Reason, revoked
	}
	return evs
}

func modelEvent(typ, op, requestID, lock string, in rules.Info) topics.Event {
	h := in.Holder
	li := &topics.LockInfo{LockName: lock, OwnerID: h.Owner, Status: string(in.Status), FencingToken: h.Token,
		LeaseDuration: h.Lease, AcquisitionCount: in.Acquisitions, ExtensionCount: h.Extensions, Limit: in.Limit}
	if h.Owner != "" {
		li.Mode = string(h.Mode)
	}
	return topics.Event{Type: typ, Operation: op, RequestID: requestID, LockInfo: li}
}

// modelState is the lock state the handlers publish for m at revision rev.
func modelState(name string, rev int64, m *rules.Memory) topics.LockState {
	st := topics.LockState{LockName: name, Revision: rev, Status: topics.StatusFree, Limit: m.Limit,
		HolderCount: len(m.Holders), WaiterCount: len(m.Queue), AcquisitionCount: m.Acquisitions}
	switch {
	case len(m.Holders) > 0:
		st.Status = topics.StatusAcquired
	case m.Ended != nil:
		st.Status = string(m.EndedStatus)
	}
	for _, h := range m.Holders {
		st.Holders = append(st.Holders, topics.Holder{OwnerID: h.Owner, Mode: string(h.Mode), FencingToken: h.Token})
	}
	if !m.DelayUntil.IsZero() { // every decision clears a delay that has passed
		st.DelayUntil = &topics.Time{Time: m.DelayUntil}
	}
	return st
}
