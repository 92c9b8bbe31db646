package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
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
// and limits (a mutex, a read/write lock and a semaphore of 3 at first,
// each lock's limit changing among 1..3 as its acquirers ask, with a
// wrong mode or limit now and then), among 5 owners or, in every fourth
// script, a crowd of 24..40 whose waits queue past the head page the
// handlers read at once, sessions (o1's and o2's acquires
// now and then in their session, which is closed and reopened, kept alive,
// or expires, at random, its commands now and then followed by lock
// commands in their batch), lock-delays, max_hold caps, revokes and copies of earlier
// commands (a producer's retry: answered with the stored outcome from the
// same reply_to, refused from another, in the batch of the original or a
// later one), cleanups (of one lock or "*", deleting idle rows or not),
// batched at random, and at the end extends of leases near
// the bound topics.MaxLeaseAheadSeconds past it and within it,
// through the
// general path alone, through the common cases sent ahead and through them
// inline, each on a schema of its own, and through rules.Memory; all four must
// give the same events. Leases, waits and lock-delays end only when the
// test ends them (in the database and in the model alike), then the expiry
// step runs, or now and then not: the commands that follow, a cleanup or a
// later expiry step meet the lease past its expiry, the wait past its
// deadline or (in the default scripts) the lock-delay that has passed, and
// must settle them as the expiry step would. The
// scripts run as deployed by default, and others under
// REQUIRE_FENCING_TOKEN: the holder's renewal by acquire is refused
// (modelRun) and leaves its lease as it was (harness.unrenewed); a release
// or extend without fencing_token is refused by the worker before the
// handlers, so those scripts send none (diffScript).
func TestDifferential(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		fenced   bool
		seeds    uint64
		stream   uint64 // of the seeds' generators: one whose scripts give every case required (a few are rare)
		coverage [][2]string
	}{
		{"default", false, 14, 210, diffCoverage},
		// Fewer seeds: the default runs cover the rest of the rules.
		{"REQUIRE_FENCING_TOKEN", true, 8, 12, diffFencedCoverage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.env.RequireFencingToken = tc.fenced
			diffRuns(t, h, tc.fenced, tc.seeds, tc.stream, tc.coverage)
		})
	}
}

// diffRuns runs the scripts of seeds 1..seeds through the three paths, on
// h's schema and two fresh ones with h's Env, and through the model, and
// checks that the scripts gave each event of coverage.
func diffRuns(t *testing.T, h *harness, fenced bool, seeds, stream uint64, coverage [][2]string) {
	const steps = 80
	paths := []string{"general", "ahead", "inline"}
	schemas := map[string]*harness{"general": h, "ahead": h.fresh(), "inline": h.fresh()}
	seen, cases := map[string]int{}, map[string]int{}
	for seed := uint64(1); seed <= seeds; seed++ {
		r := rand.New(rand.NewPCG(seed, stream))
		owners := 5
		if seed%4 == 0 {
			owners = 24 + r.IntN(17)
		}
		script := diffScript(r, steps, fenced, owners)
		want := modelRun(script, fenced, cases)
		for _, line := range want {
			for _, what := range coverage {
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
	for _, what := range coverage {
		require.Positive(t, seen[what[0]+" "+what[1]], "the scripts never give %q", what)
	}
	if fenced {
		for _, kind := range diffRenewals {
			require.Positive(t, cases[kind], "the scripts never give the acquire by a holder: %s", kind)
		}
		return
	}
	for _, kind := range append(append(append(diffSessionCases, diffDelayCases...), diffDepthCases...), diffCapCase) {
		require.Positive(t, cases[kind], "the scripts never give: %s", kind)
	}
}

// diffCoverage are events the scripts must give for the test to cover
// sessions, lock-delays, max_hold, revokes and the bound of an extend
// (INVALID_REQUEST): lines with both strings.
var diffCoverage = [][2]string{
	{"lock.released session_close", "reason=session_closed"}, {"lock.expired expire", "reason=session_expired"},
	{"lock.withdrawn acquire", "reason=session_closed"}, {"lock.withdrawn acquire", "reason=session_expired"},
	{"lock.rejected acquire", "code=SESSION_NOT_FOUND"}, {"lock.rejected extend", "code=SESSION_BOUND"},
	{"lock.rejected session_close", "code=SESSION_NOT_FOUND"}, {"lock.rejected session_open", "code=SESSION_EXISTS"},
	{"session.kept_alive", ""}, {"lock.rejected session_keepalive", "code=SESSION_NOT_FOUND"},
	{"session.opened", ""}, {"session.closed", ""}, {"session.expired", ""},
	{"session.closed", "leases=1"}, {"session.expired", "leases=1"}, {"session.expired", "waits=1"},
	{"lock.rejected acquire", " delayed "}, {"state ", "delayed=true"}, {"lock.rejected extend", "code=MAX_HOLD_EXCEEDED"},
	{"lock.revoked revoke req= ", "reason=test"}, {"lock.revoked revoke req=req-", "revoked=1"}, {"lock.revoked revoke req=req-", "revoked=2"},
	{"lock.rejected revoke", "code=NOT_HELD"}, {"lock.rejected", "code=REQUEST_ID_CONFLICT"},
	{"lock.rejected extend", "code=INVALID_REQUEST"},
}

// diffFencedCoverage are the events the scripts under REQUIRE_FENCING_TOKEN
// must give: refused renewals, releases and extends by the token, wrong
// tokens refused, releases without a token that withdraw a wait or are
// refused for a lease, and an extend past its bound.
var diffFencedCoverage = [][2]string{
	{"lock.rejected acquire", "code=INVALID_REQUEST"}, {"lock.released release", ""}, {"lock.extended extend", ""},
	{"lock.withdrawn release", ""}, {"lock.rejected release", "code=INVALID_REQUEST"},
	{"lock.rejected release", "code=TOKEN_MISMATCH"}, {"lock.rejected extend", "code=TOKEN_MISMATCH"},
	{"lock.expired expire", "reason=session_expired"}, {"lock.revoked revoke req=req-", "revoked=1"},
	{"lock.rejected", "code=REQUEST_ID_CONFLICT"}, {"lock.rejected extend", "code=INVALID_REQUEST"},
}

// diffRenewals are the kinds of renewal the model refuses under
// REQUIRE_FENCING_TOKEN, which the scripts must each give (see modelRun),
// and the acquire of an owner whose lease has ended unsettled (by time, or
// with its session past its expiry), granted anew.
// diffSessionCases are the cases of sessions past their expiry that the
// default scripts must give.
var diffSessionCases = []string{
	"sessions ending together: one waits where another holds",
	"a hand-off withdraws the wait of a session past its expiry",
	"acquire ends a lease of a session past its expiry",
	"revoke ends a lease of a session past its expiry",
}

// diffDelayCases are the commands meeting a lock-delay that has passed,
// before the expiry step, that the default scripts must give: the first
// goes the common cases' way when nothing else keeps it off them.
var diffDelayCases = []string{
	"a holder's release or extend, or a join, meets a lock-delay that has passed",
	"an acquire refused for its session meets a lock-delay that has passed",
}

// diffCapCase is an extension to its max_hold itself that the default
// scripts must give: 60 s and 5.002 s to a cap of 65.002 s, which only
// conversions of seconds that agree with make_interval's (rounding
// 65.002e6 up from just below) grant on every path.
const diffCapCase = "an extension to its max_hold itself"

// diffDepthCases are what the default scripts must give (see modelRun's
// decide): commands meeting leases and waits that ran out, unsettled;
// hand-offs and the owners' own waits past the head page the handlers read
// at once (the model reads whole queues); limits changing, refused where
// the lock is held or waited for, taken where it is not; expiry steps and
// cleanups settling several locks, in the sweep's order; idle rows deleted.
var diffDepthCases = []string{
	"a command meets a lease past its expiry",
	"a command meets a wait past its deadline",
	"a command leaves a wait past its deadline unanswered",
	"a hand-off grants a waiter past the head page",
	"a waiter past the head page leaves or asks again",
	"LIMIT_MISMATCH where the lock is held",
	"LIMIT_MISMATCH where nobody holds the lock and live waiters wait",
	"a lock nobody holds or waits for takes a new limit",
	"an expiry step or cleanup settles leases of several locks",
	"a cleanup ends a lease past its expiry",
	"a cleanup deletes an idle lock",
}

var diffRenewals = []string{"plain", "session lease", "with session_id", "other mode", "other limit", "max_hold", "ended lease",
	"lapsed session lease"}

// diffStep is one step of a script: a batch of commands, or the end of a
// lease (the holder-th holder of lock by token, modulo their number), of
// the first live wait of lock or of its lock-delay, followed by the expiry
// step (expiryRun), by the batch (see endOwner; a lock-delay's end may be
// followed by the batch too) or by nothing (the steps that follow meet
// it).
type diffStep struct {
	cmds     []diffCmd
	endLease string
	holder   int
	// endOwner: the lease of lock endLease to end is this owner's, if it
	// holds one of its own, and the batch follows.
	endOwner  string
	endWait   string
	endDelay  string
	expiryRun bool
	// endSessions: the sessions' expiry passes (before the expiry step,
	// which ends them together).
	endSessions []string
	// lapse: the session's expiry passes, and the steps that follow meet
	// it past its expiry until an expiry step ends it (or its close or
	// open does): acquires in it are refused, and hand-offs withdraw its
	// waits.
	lapse string
	// farLease: the lease of this lock of farOwner, when it has an expiry
	// of its own and no max_hold, runs until an hour short of
	// topics.MaxLeaseAheadSeconds past now (as extends would have made
	// it), and the batch follows.
	farLease, farOwner string
}

// diffMetadata are the owner_metadata the scripts' acquires send ("":
// none), each with what jsonb stores and every event shows: keys in
// jsonb's order, a repeated key's last value, numbers as numeric writes
// them out; a null, which a Go caller may pass with spaces, is none.
var diffMetadata = []struct{ sent, stored string }{
	{"", ""},
	{" null ", ""},
	{`{"host":"web-3"}`, `{"host": "web-3"}`},
	{`{"b":1, "a":2e0, "a":3}`, `{"a": 3, "b": 1}`},
	{`{"zz":[1.50,1e2,-0.0,1.0e1],  "y":{"k":"\u0041\/"}}`, `{"y": {"k": "A/"}, "zz": [1.50, 100, 0.0, 10]}`},
}

// storedMetadata is what jsonb stores of sent, one of diffMetadata's.
func storedMetadata(sent []byte) []byte {
	i := slices.IndexFunc(diffMetadata, func(m struct{ sent, stored string }) bool { return m.sent == string(sent) })
	if i < 0 {
		panic(fmt.Sprintf("owner_metadata %s is not one of diffMetadata's", sent))
	}
	if diffMetadata[i].stored == "" {
		return nil
	}
	return []byte(diffMetadata[i].stored)
}

// compacted is owner_metadata as the wire carries it (encoding/json
// compacts a RawMessage): the handlers' events hold jsonb's text, stored
// outcomes read back the wire's.
func compacted(m []byte) string {
	var b bytes.Buffer
	if err := json.Compact(&b, m); err != nil {
		return "invalid:" + string(m)
	}
	return b.String()
}

// diffSessions are the sessions of the script, by owner.
var diffSessions = map[string]string{"o1": "s-o1", "o2": "s-o2"}

// diffCmd is a command; guard says which fencing_token a release or extend
// gives: none (0), the owner's own (1, as its last grant said) or a wrong
// one (2).
type diffCmd struct {
	c     topics.Command
	guard int
}

// diffLocks are the scripts' locks as their acquirers first ask for them
// (their limits change as the scripts go: see diffScript); shared: most of
// those acquirers read. diffLockNames are them in key order (the expiry
// step's).
var diffLocks = map[string]struct {
	limit  int
	shared bool
}{"mutex": {1, false}, "rw": {1, true}, "sem": {3, false}}

var diffLockNames = []string{"mutex", "rw", "sem"}

// diffScript is a script of steps. fenced: for a run under
// REQUIRE_FENCING_TOKEN, whose worker refuses an extend without
// fencing_token before the handlers see it (worker/admit.go, tested by
// worker.TestRequireFencingToken): such scripts hold only commands that pass
// it, each extend with a token (see diffTracker.guarded), as a requester
// sends them; a release may come without one (it only withdraws a wait).
// Its owners are o1..o5, and more up to crowd: those wait in crowds (see
// below).
func diffScript(r *rand.Rand, steps int, fenced bool, crowd int) []diffStep {
	locks := diffLockNames
	owners := []string{"o1", "o2", "o3", "o4", "o5"}
	for len(owners) < crowd {
		owners = append(owners, fmt.Sprintf("o%d", len(owners)+1))
	}
	// anyone is an owner for a command drawn at random: with a crowd, half
	// the time one of the first five, so that holders still release and
	// extend as often as they wait.
	anyone := func() string {
		if r.IntN(2) == 0 {
			return owners[r.IntN(5)]
		}
		return owners[r.IntN(len(owners))]
	}
	// limits are the locks' limits as their acquirers ask for them, each
	// changing now and then from diffLocks' (a lock nobody holds or waits
	// for takes the new limit; else LIMIT_MISMATCH).
	limits := map[string]int{}
	for name, kind := range diffLocks {
		limits[name] = kind.limit
	}
	seq := 0
	var script []diffStep
	acquirer := map[string]string{} // lock -> owner of its last acquire
	// fresh is a command on lock by owner: an acquire (of the lock's kind,
	// sometimes wrong), a release or an extend (with no token, the owner's
	// own or a wrong one), a revoke, a cleanup or a query.
	fresh := func(lock, owner string) diffCmd {
		seq++
		c := topics.Command{RequestID: fmt.Sprintf("req-%d", seq), LockName: lock, OwnerID: owner, ReplyTo: "locks.replies." + owner}
		guard := 0
		switch n := r.IntN(100); {
		case n < 45:
			c.Operation = topics.OpAcquire
			acquirer[lock] = owner
			if r.IntN(30) == 0 {
				limits[lock] = 1 + r.IntN(3)
			}
			limit := limits[lock]
			if r.IntN(15) == 0 { // another limit, likely wrong
				limit = 1 + r.IntN(3)
			}
			if limit > 1 || r.IntN(2) == 1 { // limit 1 also without limit, as v1
				c.Limit = limit
			}
			// A shared mode asks for limit 1.
			if limit == 1 && (diffLocks[lock].shared && r.IntN(2) == 0 || r.IntN(6) == 0) {
				c.Mode = topics.ModeShared
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
			// one of 60 s to the cap itself (see diffCapCase),
			// and no renewal within the run (which would depend on the
			// clock).
			if r.IntN(6) == 0 {
				c.LockDelay = 60
			}
			if c.SessionID == "" && r.IntN(2) == 0 {
				c.MaxHold = 65.002
			}
			// By the request's number, so that the scripts draw as they did.
			if md := diffMetadata[seq%len(diffMetadata)].sent; md != "" {
				c.OwnerMetadata = json.RawMessage(md)
			}
		case n < 66:
			c.Operation, guard = topics.OpRelease, r.IntN(3)
		case n < 81:
			c.Operation, guard = topics.OpExtend, r.IntN(3)
			if r.IntN(2) == 0 {
				c.ExtensionDuration = 5.002
			}
		case n < 85:
			c.Operation, c.ReplyTo, c.Reason = topics.OpRevoke, "locks.replies.admin", "test"
			if r.IntN(2) == 0 {
				c.OwnerID = ""
			}
		case n < 89:
			// max_age_seconds 0 deletes every idle row of its scope; the
			// default hour none here.
			c.Operation, c.OwnerID, c.ReplyTo = topics.OpCleanup, "", "locks.replies.janitor"
			if r.IntN(2) == 0 {
				c.LockName = topics.CleanupAll
			}
			if r.IntN(3) > 0 {
				c.MaxAgeSeconds = new(float64)
			}
		default:
			c.Operation, c.OwnerID, c.ReplyTo = topics.OpQuery, "", "locks.replies.q"
		}
		if fenced && guard == 0 && c.Operation == topics.OpExtend {
			guard = 1 // admission would refuse it without a token
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
	// planned is a command a step sets up on purpose, where fresh draws
	// one: an acquire of the lock's limit as it stands, a release or extend with its
	// owner's token (as REQUIRE_FENCING_TOKEN asks), changed by mod.
	planned := func(op, lock, owner string, mod func(*topics.Command)) diffCmd {
		seq++
		c := topics.Command{RequestID: fmt.Sprintf("req-%d", seq), Operation: op, LockName: lock, OwnerID: owner,
			ReplyTo: "locks.replies." + owner}
		if op == topics.OpAcquire {
			c.Limit = limits[lock]
		}
		if mod != nil {
			mod(&c)
		}
		dc := diffCmd{c: c}
		if op == topics.OpRelease || op == topics.OpExtend {
			dc.guard = 1
		}
		issued = append(issued, dc)
		return dc
	}
	// shared makes an acquire of lock one that may hold beside others, for
	// a minute: a reader of a lock of limit 1, else a semaphore's holder.
	shared := func(lock string) func(*topics.Command) {
		return func(c *topics.Command) {
			c.LeaseDuration = 60
			if c.Limit == 1 {
				c.Mode = topics.ModeShared
			}
		}
	}
	// exclusive is a lock of limit 1, where one holds and others wait, if
	// the scripts ask for one, else lock.
	exclusive := func(lock string) string {
		for _, i := range r.Perm(len(locks)) {
			if limits[locks[i]] == 1 {
				return locks[i]
			}
		}
		return lock
	}
	// besides is a command on lock, held by other beside others: its
	// release, its extend, or another owner's joining.
	besides := func(lock, other string) diffCmd {
		switch r.IntN(3) {
		case 0:
			return planned(topics.OpRelease, lock, other, nil)
		case 1:
			return planned(topics.OpExtend, lock, other, nil)
		default:
			return planned(topics.OpAcquire, lock, owners[2+r.IntN(3)], shared(lock))
		}
	}
	for range steps {
		lock := locks[r.IntN(len(locks))]
		switch n := r.IntN(100); {
		case n < 8 && fenced && r.IntN(2) == 0:
			// Under REQUIRE_FENCING_TOKEN, half the time: an owner's lease
			// ends, without the expiry step, and the owner acquires the
			// lock again, which settles it first: a new grant, not a
			// renewal. The owner that asked for the lock last, likely to
			// hold it.
			owner, ok := acquirer[lock]
			if !ok {
				continue
			}
			dc := fresh(lock, owner)
			for dc.c.Operation != topics.OpAcquire {
				dc = fresh(lock, owner)
			}
			issued = append(issued, dc)
			script = append(script, diffStep{endLease: lock, endOwner: owner, cmds: []diffCmd{dc}})
			continue
		case n < 12:
			// A lease ends (or the first live wait of the lock), then the
			// expiry step runs, or not: commands of the lock in the same
			// batch, or the steps that follow, meet it unsettled, as
			// commands before the scheduler's tick do, until a command of
			// its lock, a cleanup or a later expiry step settles it (a due
			// wait only a hand-off or the expiry step answers); waits so
			// end one after another at the head of a queue. Or another
			// lock's lease ends too, later, and the expiry step or a
			// cleanup of every lock settles both, in the order they ended.
			step := diffStep{endLease: lock, holder: r.IntN(3)}
			if n >= 8 {
				step = diffStep{endWait: lock}
			}
			switch r.IntN(5) {
			case 0:
				step.cmds = []diffCmd{next(lock, anyone())}
			case 1: // the steps that follow meet it
			case 2:
				if n >= 8 {
					step.expiryRun = true
					break
				}
				other := diffStep{endLease: locks[r.IntN(len(locks))], holder: r.IntN(3), expiryRun: r.IntN(2) == 0}
				if !other.expiryRun {
					other.cmds = []diffCmd{planned(topics.OpCleanup, topics.CleanupAll, "", func(c *topics.Command) {
						c.ReplyTo = "locks.replies.janitor"
						if r.IntN(2) == 0 {
							c.MaxAgeSeconds = new(float64)
						}
					})}
				}
				script = append(script, step)
				step = other
			default:
				step.expiryRun = true
			}
			script = append(script, step)
			continue
		case n < 15 && r.IntN(2) == 0:
			// After the session waits for a lock that o3 holds, and o3
			// releases it past the session's expiry.
			owner, variant := owners[r.IntN(2)], r.IntN(3)
			if variant == 0 {
				lock = exclusive(lock)
				script = append(script, diffStep{cmds: []diffCmd{
					planned(topics.OpAcquire, lock, "o3", func(c *topics.Command) { c.LeaseDuration = 60 }),
					planned(topics.OpAcquire, lock, owner, func(c *topics.Command) {
						c.LeaseDuration, c.SessionID, c.WaitTimeout = 60, diffSessions[owner], 120
					})}})
				script = append(script, diffStep{lapse: diffSessions[owner]}, diffStep{cmds: []diffCmd{planned(topics.OpRelease, lock, "o3", nil)}})
				continue
			}
			// Or the session holds the lock (asked for a step before), and
			// past its expiry the owner asks again without it, or an
			// admin revokes its lease: either ends that lease first, as
			// the session's end will. Or only the lapse.
			if variant == 1 {
				script = append(script, diffStep{cmds: []diffCmd{planned(topics.OpAcquire, lock, owner, func(c *topics.Command) {
					c.SessionID = diffSessions[owner]
				})}}, diffStep{lapse: diffSessions[owner]})
				after := planned(topics.OpAcquire, lock, owner, func(c *topics.Command) { c.LeaseDuration = 60 })
				if r.IntN(2) == 0 {
					after = planned(topics.OpRevoke, lock, owner, func(c *topics.Command) { c.ReplyTo, c.Reason = "locks.replies.admin", "test" })
				}
				script = append(script, diffStep{cmds: []diffCmd{after}})
				continue
			}
			script = append(script, diffStep{lapse: diffSessions[owner]})
			continue
		case n < 15:
			ids := []string{diffSessions[owners[r.IntN(2)]]}
			if r.IntN(2) == 0 {
				// Both together, most often after both asked for one lock
				// in their sessions (refused when one is closed): one
				// holds where the other waits.
				ids = []string{diffSessions["o1"], diffSessions["o2"]}
				if r.IntN(3) > 0 {
					lock = exclusive(lock)
					var step diffStep
					for _, owner := range owners[:2] {
						step.cmds = append(step.cmds, planned(topics.OpAcquire, lock, owner, func(c *topics.Command) {
							c.WaitTimeout, c.SessionID = 120, diffSessions[owner]
						}))
					}
					script = append(script, step)
				}
			}
			script = append(script, diffStep{endSessions: ids, expiryRun: true})
			continue
		case n < 18:
			// Close the session and open it again, only open it, or keep
			// it alive (each refused when the session is not open, or
			// open; past its expiry, each ends it first); half the time
			// with commands of locks after them in the batch, which must
			// not go ahead of the session's end: most often, after the
			// session and another owner took the read/write lock shared or
			// the semaphore, that owner's release or extend, or a third
			// one's acquire.
			owner := owners[r.IntN(2)]
			ops := []string{topics.OpSessionClose, topics.OpSessionOpen}
			switch r.IntN(4) {
			case 0:
				ops = ops[1:]
			case 1:
				ops = []string{topics.OpSessionKeepAlive}
			}
			var step diffStep
			for _, op := range ops {
				seq++
				dc := diffCmd{c: topics.Command{RequestID: fmt.Sprintf("req-%d", seq), Operation: op,
					SessionID: diffSessions[owner], OwnerID: owner, TTL: 3600, ReplyTo: "locks.replies." + owner}}
				step.cmds, issued = append(step.cmds, dc), append(issued, dc)
			}
			switch r.IntN(4) {
			case 0:
				for range 1 + r.IntN(4) {
					step.cmds = append(step.cmds, next(locks[r.IntN(len(locks))], anyone()))
				}
			case 1, 2:
				lock, other := []string{"rw", "sem"}[r.IntN(2)], owners[2+r.IntN(3)]
				share := shared(lock)
				script = append(script, diffStep{cmds: []diffCmd{
					planned(topics.OpAcquire, lock, owner, func(c *topics.Command) { share(c); c.SessionID = diffSessions[owner] }),
					planned(topics.OpAcquire, lock, other, share)}})
				step.cmds = append(step.cmds, besides(lock, other))
			}
			script = append(script, step)
			continue
		case n < 20 && !fenced && r.IntN(2) == 0:
			// A lock-delay passes and commands meet it before the expiry
			// step, which then finds nothing to do: most often, after a
			// holder's lease with a lock_delay was revoked where another
			// holds beside it, that one's release or extend, or a reader
			// (or semaphore holder) joining, which the common cases'
			// statements apply, clearing the delay in their change as the
			// general path does; now and then an acquire in an unknown
			// session before or after it, refused, which settles the lock
			// first as any command on it does.
			var step diffStep
			if r.IntN(3) > 0 {
				lock = []string{"rw", "sem"}[r.IntN(2)]
				first, other := owners[2], owners[3+r.IntN(2)] // o3, and o4 or o5: no sessions
				share := shared(lock)
				script = append(script,
					diffStep{cmds: []diffCmd{
						planned(topics.OpAcquire, lock, first, func(c *topics.Command) { share(c); c.LockDelay = 60 }),
						planned(topics.OpAcquire, lock, other, share)}},
					diffStep{cmds: []diffCmd{planned(topics.OpRevoke, lock, first, func(c *topics.Command) {
						c.ReplyTo, c.Reason = "locks.replies.admin", "test"
					})}})
				step.cmds = append(step.cmds, besides(lock, other))
			} else {
				step.cmds = append(step.cmds, next(lock, anyone()))
			}
			if r.IntN(3) == 0 {
				unknown := planned(topics.OpAcquire, lock, anyone(), func(c *topics.Command) { c.SessionID = "s-unknown" })
				if r.IntN(2) == 0 {
					step.cmds = append([]diffCmd{unknown}, step.cmds...)
				} else {
					step.cmds = append(step.cmds, unknown)
				}
			}
			if r.IntN(2) == 0 {
				step.cmds = append(step.cmds, next(lock, anyone()))
			}
			step.endDelay = lock
			script = append(script, step)
			continue
		case n < 20:
			script = append(script, diffStep{endDelay: lock, expiryRun: true})
			continue
		case n < 26 && len(owners) > 5:
			// A crowd of owners beyond the first five asks for the lock,
			// waiting, in one batch: its queue passes the head page the
			// handlers read at once (limit + 16 live waiters, then more),
			// where a hand-off, a withdrawal or a requeue reads on. Readers
			// half the time where the limit is 1, behind a writer (holding
			// or waiting), and an admin then revokes every holder twice:
			// the writer gets the lock, then hands it to them all at once.
			// Else, half the time, the admin revokes once.
			share := limits[lock] == 1 && r.IntN(2) == 0
			crowd := r.Perm(len(owners) - 5)
			var step diffStep
			if share { // the writer: one of the crowd's owners that does not read
				step.cmds = append(step.cmds, planned(topics.OpAcquire, lock, owners[5+crowd[len(crowd)-1]], func(c *topics.Command) {
					c.LeaseDuration, c.WaitTimeout = 60, 120
				}))
			}
			size := 8 + r.IntN(len(owners)-13)
			if share { // past the page
				size = 18 + r.IntN(len(owners)-23)
			}
			for _, i := range crowd[:size] {
				step.cmds = append(step.cmds, planned(topics.OpAcquire, lock, owners[5+i], func(c *topics.Command) {
					c.LeaseDuration, c.WaitTimeout = 60, 120
					if share {
						c.Mode = topics.ModeShared
					}
				}))
			}
			script = append(script, step)
			revokes := r.IntN(2)
			if share {
				revokes = 2
			}
			for range revokes {
				script = append(script, diffStep{cmds: []diffCmd{planned(topics.OpRevoke, lock, "", func(c *topics.Command) {
					c.ReplyTo, c.Reason = "locks.replies.admin", "test"
				})}})
			}
			continue
		}
		var step diffStep
		if n := r.IntN(100); n < 15 {
			// A run of one lock's commands in one batch, by one or two
			// owners: the commands that follow another of their lock.
			lock, pair := locks[r.IntN(len(locks))], []string{anyone(), anyone()}
			for range 2 + r.IntN(5) {
				dc := next(lock, pair[r.IntN(2)])
				if dc.guard == 1 && !fenced {
					// No requester knows the token of a grant in its own
					// batch: its answer has not been sent. (Under
					// REQUIRE_FENCING_TOKEN it sends the last it knows,
					// from before the batch, which guarded gives.)
					dc.guard = 0
				}
				step.cmds = append(step.cmds, dc)
			}
		} else {
			for range 1 + r.IntN(3) {
				step.cmds = append(step.cmds, next(locks[r.IntN(len(locks))], anyone()))
			}
		}
		script = append(script, step)
	}
	// Last, so that no later command depends on how far the database's
	// clock moved meanwhile: the lease of the last acquirer of each lock
	// is moved near the bound, then extended past it (refused, the lease
	// as it was) and within it; each extend the first command of its
	// lock in its batch, so that the common cases' statements meet both.
	for _, lock := range locks {
		owner, ok := acquirer[lock]
		if !ok {
			continue
		}
		script = append(script,
			diffStep{farLease: lock, farOwner: owner, cmds: []diffCmd{
				planned(topics.OpExtend, lock, owner, func(c *topics.Command) { c.ExtensionDuration = topics.MaxLeaseSeconds })}},
			diffStep{cmds: []diffCmd{planned(topics.OpExtend, lock, owner, func(c *topics.Command) { c.ExtensionDuration = 60 })}})
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
	states []diffState // of the current step
	// outcomes are the requests' last answers, as the handlers store them
	// (the model answers a repeated request_id with it).
	outcomes map[string]topics.Event
	// fenced: the run is under REQUIRE_FENCING_TOKEN (see guarded).
	fenced bool
}

// diffState is a record of the lock state topic: a lock's state, or (st
// nil) a tombstone, when cleanup deleted its row.
type diffState struct {
	key string
	st  *topics.LockState
}

// lastStates keeps, as the handlers publish them (Batch.queueState), the
// records of the step's transaction that the next record of their lock
// does not supersede, where they were: a state is superseded by any, a
// tombstone by a tombstone (a lock deleted, then created again, publishes
// both).
func (d *diffTracker) lastStates() {
	var kept []diffState
	for i, x := range d.states {
		j := slices.IndexFunc(d.states[i+1:], func(y diffState) bool { return y.key == x.key })
		if j < 0 || x.st == nil && d.states[i+1+j].st != nil {
			kept = append(kept, x)
		}
	}
	d.states = kept
}

// noteStates renders the step's lock state records. The tombstones of a
// cleanup come in the order its statement deleted the rows, the
// database's: by key here.
func (d *diffTracker) noteStates() {
	for i := 0; i < len(d.states); i++ {
		j := i
		for j < len(d.states) && d.states[j].st == nil {
			j++
		}
		slices.SortFunc(d.states[i:j], func(a, b diffState) int { return strings.Compare(a.key, b.key) })
		i = j
	}
	for _, x := range d.states {
		st := x.st
		if st == nil {
			d.lines = append(d.lines, "tombstone "+x.key)
			continue
		}
		s := fmt.Sprintf("state %s rev=%d status=%s limit=%d acq=%d waiters=%d holders=%d delayed=%v", st.LockName, st.Revision, st.Status,
			st.Limit, st.AcquisitionCount, st.WaiterCount, st.HolderCount, st.DelayUntil != nil)
		for _, h := range st.Holders {
			s += fmt.Sprintf(" %s/%s/#%d%s", h.OwnerID, h.Mode, d.rank(st.LockName, h.FencingToken), compacted(h.OwnerMetadata))
		}
		d.lines = append(d.lines, s)
	}
	d.states = nil
}

func newTracker(fenced bool) *diffTracker {
	return &diffTracker{ranks: map[string][]int64{}, last: map[string]int64{}, outcomes: map[string]topics.Event{}, fenced: fenced}
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

// guarded sets the command's fencing_token as its guard says. Under
// REQUIRE_FENCING_TOKEN an owner that was never granted the lock sends a
// wrong one: without one the worker would refuse an extend before the
// handlers (see diffScript).
func (d *diffTracker) guarded(dc diffCmd) topics.Command {
	c := dc.c
	tok, known := d.last[c.LockName+"/"+c.OwnerID]
	switch {
	case dc.guard == 1 && known:
		c.FencingToken = &tok
	case dc.guard == 2, dc.guard == 1 && d.fenced:
		wrong := int64(-1)
		c.FencingToken = &wrong
	}
	if d.fenced && c.FencingToken == nil && c.Operation == topics.OpExtend {
		panic(fmt.Sprintf("%s %s without fencing_token under REQUIRE_FENCING_TOKEN", c.Operation, c.RequestID))
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
	if ev.CleanedCount != nil {
		// The order of the names deleted is the database's.
		s += fmt.Sprintf(" cleaned=%d %v more=%v", *ev.CleanedCount, slices.Sorted(slices.Values(ev.CleanedLockNames)), ev.More)
	}
	if si := ev.SessionInfo; si != nil && (ev.Type == topics.TypeSessionClosed || ev.Type == topics.TypeSessionExpired) {
		s += fmt.Sprintf(" session=%s leases=%d waits=%d", si.SessionID, si.Leases, si.Waits)
	}
	if li := ev.LockInfo; li != nil {
		if ev.Type == topics.TypeAcquired {
			d.last[li.LockName+"/"+li.OwnerID] = li.FencingToken
		}
		s += fmt.Sprintf(" %s owner=%s status=%s mode=%s limit=%d token#%d acq=%d ext=%d lease=%g rev=%d",
			li.LockName, li.OwnerID, li.Status, li.Mode, li.Limit, d.rank(li.LockName, li.FencingToken), li.AcquisitionCount,
			li.ExtensionCount, li.LeaseDuration, li.Revision)
		if len(li.OwnerMetadata) > 0 {
			s += " meta=" + compacted(li.OwnerMetadata)
		}
		if ev.Type == topics.TypeStatus {
			s += fmt.Sprintf(" holders=%d", li.HolderCount)
			for _, h := range li.Holders {
				s += fmt.Sprintf(" %s/%s/%s/#%d%s", h.OwnerID, h.Mode, h.Status, d.rank(li.LockName, h.FencingToken), compacted(h.OwnerMetadata))
			}
		}
	}
	d.lines = append(d.lines, s)
}

// dbRun runs the script on h's schema by path: "general" (no common
// case), "ahead" (common cases sent ahead, as the worker does) or "inline".
// Under REQUIRE_FENCING_TOKEN it also checks each batch against its
// leases (see unrenewed).
func (h *harness) dbRun(script []diffStep, path string) []string {
	d := newTracker(h.env.RequireFencingToken)
	ctx := context.Background()
	for owner, id := range diffSessions {
		_, err := h.st.Pool.Exec(ctx, `INSERT INTO sessions (id, owner_id, ttl, expires_at, source_partition)
			VALUES ($1, $2, 3600, clock_timestamp() + interval '1 hour', 0)`, id, owner)
		require.NoError(h.t, err)
	}
	lapses := 0
	for _, step := range script {
		switch {
		case step.lapse != "":
			// Long past, in the order of the lapses: the scheduler ends
			// sessions by expiry, these before those of endSessions. A
			// session that lapsed already keeps its place, as in the model.
			lapses++
			_, err := h.st.Pool.Exec(ctx, `UPDATE sessions SET expires_at = timestamptz '2000-01-01Z' + make_interval(secs => $2)
				WHERE id = $1 AND expires_at > clock_timestamp()`, step.lapse, lapses)
			require.NoError(h.t, err)
		case len(step.endSessions) > 0:
			// In the step's order: the scheduler ends them by expiry. One
			// time for the statement (clock_timestamp() moves from row to
			// row, by more than the steps apart on a busy machine). A
			// session that lapsed keeps its expiry, the earliest (the model
			// ends lapsed sessions first).
			_, err := h.st.Pool.Exec(ctx, `UPDATE sessions SET expires_at = statement_timestamp() - interval '1 millisecond' * (10 - array_position($1, id))
				WHERE id = ANY($1) AND expires_at > statement_timestamp()`, step.endSessions)
			require.NoError(h.t, err)
		case step.endLease != "":
			var owners []string
			// A session's lease has no expiry of its own.
			rows, err := h.st.Pool.Query(ctx, `SELECT owner_id FROM lock_holders WHERE lock_name = $1 AND session_id IS NULL
				AND ($2 = '' OR owner_id = $2) ORDER BY fencing_token`, step.endLease, step.endOwner)
			require.NoError(h.t, err)
			owners, err = pgx.CollectRows(rows, pgx.RowTo[string])
			require.NoError(h.t, err)
			if len(owners) > 0 {
				_, err := h.st.Pool.Exec(ctx, `UPDATE lock_holders SET expires_at = clock_timestamp() - interval '1 millisecond'
					WHERE lock_name = $1 AND owner_id = $2`, step.endLease, owners[step.holder%len(owners)])
				require.NoError(h.t, err)
			}
		case step.endWait != "":
			_, err := h.st.Pool.Exec(ctx, `UPDATE lock_waiters SET deadline = clock_timestamp() - interval '1 millisecond'
				WHERE id = (SELECT min(id) FROM lock_waiters WHERE lock_name = $1 AND deadline > clock_timestamp())`, step.endWait)
			require.NoError(h.t, err)
		case step.farLease != "":
			_, err := h.st.Pool.Exec(ctx, `UPDATE lock_holders SET expires_at = clock_timestamp() + make_interval(secs => $3) - interval '1 hour'
				WHERE lock_name = $1 AND owner_id = $2 AND session_id IS NULL AND max_hold = 0`, step.farLease, step.farOwner, topics.MaxLeaseAheadSeconds)
			require.NoError(h.t, err)
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
		var before map[int64]diffLease
		if d.fenced {
			before = h.leases()
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
		if d.fenced {
			h.unrenewed(before, cmds)
		}
		h.stepStates(d)
	}
	return d.lines
}

// diffLease is what a renewal changes of a lease (and an extend its
// expiry), as its lock_holders row has it.
type diffLease struct {
	owner, expires, replyTo, session string
	extensions                       int
}

// leases are the leases of the locks, by fencing token.
func (h *harness) leases() map[int64]diffLease {
	rows, err := h.st.Pool.Query(context.Background(), `SELECT fencing_token, owner_id, coalesce(expires_at::text, '-'),
		coalesce(reply_to, '-'), coalesce(session_id, '-'), extension_count FROM lock_holders`)
	require.NoError(h.t, err)
	leases := map[int64]diffLease{}
	var tok int64
	var l diffLease
	_, err = pgx.ForEachRow(rows, []any{&tok, &l.owner, &l.expires, &l.replyTo, &l.session, &l.extensions}, func() error {
		leases[tok] = l
		return nil
	})
	require.NoError(h.t, err)
	return leases
}

// unrenewed checks that the batch cmds, under REQUIRE_FENCING_TOKEN,
// renewed no lease in force before it (before: leases()), in the database
// itself, beyond the events the model checks: a lease that is still there
// keeps its reply_to and its session (or none), and its expiry unless
// extended. An acquire by its holder cannot keep it, only an extend with
// its token.
func (h *harness) unrenewed(before map[int64]diffLease, cmds []topics.Command) {
	var batch []string
	for _, c := range cmds {
		batch = append(batch, fmt.Sprintf("%s %s %s/%s session=%q", c.RequestID, c.Operation, c.LockName, c.OwnerID, c.SessionID))
	}
	for tok, now := range h.leases() {
		was, ok := before[tok]
		if !ok {
			continue
		}
		msg := fmt.Sprintf("lease (token %d) of %s after the batch %v", tok, was.owner, batch)
		require.Equal(h.t, was.replyTo, now.replyTo, msg)
		require.Equal(h.t, was.session, now.session, msg)
		if now.extensions == was.extensions {
			require.Equal(h.t, was.expires, now.expires, msg)
		}
	}
}

// stepStates notes the lock states the step published and clears the
// outbox for the next.
func (h *harness) stepStates(d *diffTracker) {
	for _, r := range h.states() {
		d.states = append(d.states, diffState{key: r.Key, st: r.State})
	}
	d.noteStates()
	h.clearOutbox()
}

// modelRun runs the script on rules.Memory, rendering the effects as the
// handlers send them; fenced: under REQUIRE_FENCING_TOKEN, counting the
// renewals it refuses in cases by kind (diffRenewals), and the sessions'
// cases it meets (diffSessionCases) and diffDepthCases.
func modelRun(script []diffStep, fenced bool, cases map[string]int) []string {
	d := newTracker(fenced)
	mem := map[string]*rules.Memory{}
	revs := map[string]int64{}
	for name := range diffLocks {
		mem[name] = rules.NewMemory()
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var token int64
	next := func() int64 { token++; return token }
	var lapsed []string // sessions past their expiry, not yet ended, in order
	decide := func(name, owner string, c *topics.Command, decide func(l *rules.Lock) []rules.Effect) {
		m := mem[name]
		l := m.Lock(owner, now, next)
		passed := c != nil && !m.DelayUntil.IsZero() && !m.DelayUntil.After(now)
		held := len(m.Holders) > 0
		// What the decision meets, for diffDepthCases: the live waiters in
		// order, of which the handlers read the first limit + 16 at once
		// (the model reads them all), and ended leases and waits.
		limit := m.Limit
		var live []int64
		for _, w := range m.Queue {
			if w.Deadline.After(now) {
				live = append(live, w.ID)
			}
		}
		pastPage := func(id int64) bool { return slices.Index(live, id) >= limit+16 }
		due := func(w rules.Waiter) bool { return !w.Deadline.After(now) }
		if c != nil && slices.ContainsFunc(m.Holders, func(h rules.Holder) bool { return h.Session == "" && !h.ExpiresAt.After(now) }) {
			cases["a command meets a lease past its expiry"]++
		}
		if c != nil && slices.ContainsFunc(m.Queue, due) {
			cases["a command meets a wait past its deadline"]++
		}
		effs := decide(l)
		for _, e := range effs {
			limitMismatch := e.Kind == rules.Refuse && e.Code == rules.CodeLimitMismatch
			switch {
			case e.Kind == rules.Grant && e.Waiter.ID != 0 && pastPage(e.Waiter.ID):
				cases["a hand-off grants a waiter past the head page"]++
			case (e.Kind == rules.Withdraw || e.Kind == rules.Requeue) && pastPage(e.Waiter.ID):
				cases["a waiter past the head page leaves or asks again"]++
			case limitMismatch && e.Info.Holders > 0:
				cases["LIMIT_MISMATCH where the lock is held"]++
			case limitMismatch && len(live) > 0:
				cases["LIMIT_MISMATCH where nobody holds the lock and live waiters wait"]++
			case e.Kind == rules.Grant && e.Waiter.ID == 0 && e.Info.Holders == 1 && e.Info.Limit != limit:
				cases["a lock nobody holds or waits for takes a new limit"]++
			}
		}
		if passed && held && len(effs) > 0 {
			switch e := effs[0]; {
			case e.Kind == rules.Release, e.Kind == rules.Extend, e.Kind == rules.Grant && e.Waiter.ID == 0:
				cases["a holder's release or extend, or a join, meets a lock-delay that has passed"]++
			}
		}
		if slices.ContainsFunc(effs, func(e rules.Effect) bool { return e.Kind == rules.Drop && slices.Contains(lapsed, e.Waiter.Session) }) {
			cases["a hand-off withdraws the wait of a session past its expiry"]++
		}
		if c != nil && slices.ContainsFunc(effs, func(e rules.Effect) bool { return e.Kind == rules.Lose }) {
			cases[c.Operation+" ends a lease of a session past its expiry"]++
		}
		delayed := !m.DelayUntil.IsZero()
		if err := m.Save(l, effs); err != nil {
			panic(err)
		}
		if c != nil && slices.ContainsFunc(m.Queue, due) {
			cases["a command leaves a wait past its deadline unanswered"]++
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
			st := modelState(name, revs[name], m)
			d.states = append(d.states, diffState{key: name, st: &st})
		}
	}
	firstReplyTo := map[string]string{}
	open := map[string]bool{}
	for _, id := range diffSessions {
		open[id] = true
	}
	// endSessions ends the sessions ids together for reason, on the locks
	// they hold or wait for, in key order, and returns each one's counts.
	endSessions := func(ids []string, reason string) []*topics.SessionInfo {
		infos := make([]*topics.SessionInfo, len(ids))
		for i, id := range ids {
			delete(open, id)
			lapsed = slices.DeleteFunc(lapsed, func(l string) bool { return l == id })
			infos[i] = &topics.SessionInfo{SessionID: id}
		}
		in := func(id string) bool { return slices.Contains(ids, id) }
		for _, name := range diffLockNames {
			m := mem[name]
			if slices.ContainsFunc(m.Holders, func(h rules.Holder) bool { return in(h.Session) }) ||
				slices.ContainsFunc(m.Queue, func(w rules.Waiter) bool { return in(w.Session) }) {
				decide(name, "", nil, func(l *rules.Lock) []rules.Effect {
					effs := l.EndSessions(ids, m.SessionWaits(ids...), reason)
					var dropped, lost []string
					for _, e := range effs {
						switch {
						case e.Kind == rules.Lose:
							infos[slices.Index(ids, e.Holder.Session)].Leases++
							lost = append(lost, e.Holder.Session)
						case e.Kind == rules.Drop && in(e.Waiter.Session):
							infos[slices.Index(ids, e.Waiter.Session)].Waits++
							dropped = append(dropped, e.Waiter.Session)
						}
					}
					if slices.ContainsFunc(dropped, func(id string) bool { return len(lost) > 0 && !slices.Contains(lost, id) }) {
						cases["sessions ending together: one waits where another holds"]++
					}
					return effs
				})
			}
		}
		return infos
	}
	// settle settles the locks of names with leases past their own expiry
	// (a session's has none) in the sweep's order, the oldest such expiry
	// first, and returns them.
	settle := func(names []string) []string {
		oldest := map[string]time.Time{}
		var due []string
		for _, name := range names {
			for _, h := range mem[name].Holders {
				if t, ok := oldest[name]; h.Session == "" && !h.ExpiresAt.After(now) && (!ok || h.ExpiresAt.Before(t)) {
					oldest[name] = h.ExpiresAt
				}
			}
			if _, ok := oldest[name]; ok {
				due = append(due, name)
			}
		}
		slices.SortStableFunc(due, func(a, b string) int { return oldest[a].Compare(oldest[b]) })
		if len(due) > 1 {
			cases["an expiry step or cleanup settles leases of several locks"]++
		}
		for _, name := range due {
			decide(name, "", nil, func(l *rules.Lock) []rules.Effect { effs, _ := l.Settle(); return effs })
		}
		return due
	}
	for _, step := range script {
		now = now.Add(time.Millisecond)
		switch {
		case step.endLease != "":
			var own []int // the leases with an expiry of their own
			for i, h := range mem[step.endLease].Holders {
				if h.Session == "" && (step.endOwner == "" || h.Owner == step.endOwner) {
					own = append(own, i)
				}
			}
			if len(own) > 0 {
				mem[step.endLease].Holders[own[step.holder%len(own)]].ExpiresAt = now.Add(-time.Millisecond)
			}
		case step.endWait != "":
			q := mem[step.endWait].Queue
			if i := slices.IndexFunc(q, func(w rules.Waiter) bool { return w.Deadline.After(now) }); i >= 0 {
				q[i].Deadline = now.Add(-time.Millisecond)
			}
		case step.farLease != "":
			for i, h := range mem[step.farLease].Holders {
				if h.Owner == step.farOwner && h.Session == "" && h.MaxHold == 0 {
					mem[step.farLease].Holders[i].ExpiresAt = now.Add(topics.MaxLeaseAheadSeconds*time.Second - time.Hour)
				}
			}
		case step.endDelay != "":
			if m := mem[step.endDelay]; !m.DelayUntil.IsZero() {
				m.DelayUntil = now.Add(-time.Millisecond)
			}
		case step.lapse != "" && open[step.lapse]:
			delete(open, step.lapse)
			lapsed = append(lapsed, step.lapse)
			// Its waits and leases show the expiry passed, as the
			// handlers read it from the session's row.
			for _, m := range mem {
				for i := range m.Queue {
					if m.Queue[i].Session == step.lapse {
						m.Queue[i].SessionExpires = now.Add(-time.Millisecond)
					}
				}
				for i := range m.Holders {
					if m.Holders[i].Session == step.lapse {
						m.Holders[i].ExpiresAt = now.Add(-time.Millisecond)
					}
				}
			}
		}
		if step.expiryRun {
			// The expiry step: sessions first, then leases, then waits and
			// lock-delays.
			due := append(slices.Clone(lapsed), slices.DeleteFunc(slices.Clone(step.endSessions), func(id string) bool { return !open[id] })...)
			if len(due) > 0 {
				for _, in := range endSessions(due, rules.ReasonSessionExpired) {
					d.note(topics.Event{Type: topics.TypeSessionExpired, Operation: topics.OpExpire, SessionInfo: in})
				}
			}
			settle(diffLockNames)
			for _, name := range diffLockNames {
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
			// Each command reads the database's time anew, later than the
			// one before it in the batch: a renewal in the batch of its
			// grant moves the lease's expiry, as an extend to its max_hold
			// then finds. (Far less than the steps' millisecond apart.)
			now = now.Add(time.Microsecond)
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
			case topics.OpSessionClose, topics.OpSessionKeepAlive:
				if slices.Contains(lapsed, c.SessionID) { // ended as expired, then refused
					in := endSessions([]string{c.SessionID}, rules.ReasonSessionExpired)[0]
					d.note(topics.Event{Type: topics.TypeSessionExpired, Operation: topics.OpExpire, SessionInfo: in})
				}
				if !open[c.SessionID] {
					d.note(topics.Event{Type: topics.TypeRejected, Operation: c.Operation, RequestID: c.RequestID, ErrorCode: topics.CodeSessionNotFound})
					continue
				}
				if c.Operation == topics.OpSessionKeepAlive {
					d.note(topics.Event{Type: topics.TypeSessionKeptAlive, Operation: c.Operation, RequestID: c.RequestID})
					continue
				}
				in := endSessions([]string{c.SessionID}, rules.ReasonSessionClosed)[0]
				d.note(topics.Event{Type: topics.TypeSessionClosed, Operation: c.Operation, RequestID: c.RequestID, SessionInfo: in})
			case topics.OpSessionOpen:
				if slices.Contains(lapsed, c.SessionID) { // ended as expired, then opened again
					in := endSessions([]string{c.SessionID}, rules.ReasonSessionExpired)[0]
					d.note(topics.Event{Type: topics.TypeSessionExpired, Operation: topics.OpExpire, SessionInfo: in})
				}
				if open[c.SessionID] {
					d.note(topics.Event{Type: topics.TypeRejected, Operation: c.Operation, RequestID: c.RequestID, ErrorCode: topics.CodeSessionExists})
					continue
				}
				open[c.SessionID] = true
				d.note(topics.Event{Type: topics.TypeSessionOpened, Operation: c.Operation, RequestID: c.RequestID})
			case topics.OpAcquire:
				r := rules.Request{Owner: c.OwnerID, Mode: rules.Exclusive, Limit: max(c.Limit, 1), Lease: c.LeaseDuration,
					Wait: c.WaitTimeout, ReplyTo: c.ReplyTo, RequestID: c.RequestID, Key: c.Key(), Session: c.SessionID,
					SessionExpires: now.Add(time.Hour), LockDelay: c.LockDelay, MaxHold: c.MaxHold, Metadata: storedMetadata(c.OwnerMetadata)}
				if c.SessionID != "" && !open[c.SessionID] {
					if m := mem[c.LockName]; !m.DelayUntil.IsZero() && !m.DelayUntil.After(now) {
						cases["an acquire refused for its session meets a lock-delay that has passed"]++
					}
					// Refused for its session, after settling the lock,
					// as any command on the lock.
					decide(c.LockName, c.OwnerID, &c, func(l *rules.Lock) []rules.Effect {
						effs, _ := l.Settle()
						return append(effs, rules.Effect{Kind: rules.Refuse, Code: topics.CodeSessionNotFound, Info: l.Info()})
					})
					continue
				}
				if c.Mode == topics.ModeShared {
					r.Mode = rules.Shared
				}
				if r.Lease == 0 {
					r.Lease = topics.DefaultLeaseDuration.Seconds()
				}
				decide(c.LockName, c.OwnerID, &c, func(l *rules.Lock) []rules.Effect {
					// Under REQUIRE_FENCING_TOKEN, as docs/design.md has it
					// (Semantics, Acquire; Events): the holder's acquire of
					// its lease, a renewal, is INVALID_REQUEST and the lease
					// stays as it was (its expiry, reply_to and session: see
					// harness.unrenewed); the lock is settled first, as for
					// any command. Decided here, not by
					// rules.Request.TokenOnly, so that the rules' refusal is
					// checked against the contract too. The contract does
					// not say which refusal comes first when the renewal
					// would be refused anyway (the other mode, limit, a
					// max_hold): the code answers INVALID_REQUEST, and so
					// does the model.
					if !fenced {
						return l.Acquire(r)
					}
					// A lease of a session past its expiry is not in force:
					// the acquire ends it (docs/design.md, Sessions) and is a
					// new one, settling the lock and handing it on once,
					// after that lease has ended, as the session's end would.
					// Settling neither ends such a lease nor grants one.
					mine := func(h rules.Holder) bool { return h.Owner == c.OwnerID }
					if i := slices.IndexFunc(l.Holders, mine); i >= 0 && l.Holders[i].Session != "" && !l.Holders[i].ExpiresAt.After(now) {
						cases["lapsed session lease"]++
						return l.Acquire(r)
					}
					// Its lease in force after settling: the settling may
					// end it, or hand the owner the lock it waited for (then
					// this acquire renews that grant).
					ended := slices.ContainsFunc(l.Holders, mine)
					effs, _ := l.Settle()
					i := slices.IndexFunc(l.Holders, mine)
					if i < 0 {
						if ended {
							cases["ended lease"]++
						}
						return append(effs, l.Acquire(r)...) // its own settling finds nothing more
					}
					h := l.Holders[i]
					for kind, is := range map[string]bool{"plain": h.Session == "" && r.Session == "" && h.Mode == r.Mode && r.Limit == l.Limit,
						"session lease": h.Session != "", "with session_id": r.Session != "", "other mode": h.Mode != r.Mode,
						"other limit": r.Limit != l.Limit, "max_hold": h.MaxHold > 0} {
						if is {
							cases[kind]++
						}
					}
					return append(effs, rules.Effect{Kind: rules.Refuse, Code: topics.CodeInvalidRequest, Info: l.Info()})
				})
			case topics.OpRelease:
				decide(c.LockName, c.OwnerID, &c, func(l *rules.Lock) []rules.Effect {
					return l.Release(c.OwnerID, c.Key(), c.FencingToken, fenced && c.FencingToken == nil)
				})
			case topics.OpExtend:
				decide(c.LockName, c.OwnerID, &c, func(l *rules.Lock) []rules.Effect {
					effs := l.Extend(c.OwnerID, c.Key(), c.FencingToken, c.ExtensionDuration)
					if e := effs[len(effs)-1]; e.Kind == rules.Extend && e.Holder.ExpiresAt.Equal(e.Holder.AcquiredAt.Add(65002*time.Millisecond)) {
						cases[diffCapCase]++
					}
					return effs
				})
			case topics.OpRevoke:
				decide(c.LockName, "", &c, func(l *rules.Lock) []rules.Effect { return l.Revoke(c.OwnerID, c.Key()) })
			case topics.OpCleanup:
				// rules.Memory has no cleanup: it is a settling of the
				// locks with leases past their expiry (Lock.Settle, as the
				// handlers' sweep), then, with max_age_seconds 0, the
				// deletion of the rows that nobody holds or waits for, not
				// in a lock-delay (a passed one is none), whose leases
				// ended: a lock never acquired, as NewMemory, with a
				// tombstone; the fencing tokens go on.
				scope := diffLockNames
				if c.LockName != topics.CleanupAll {
					scope = []string{c.LockName}
				}
				cleaned := settle(scope)
				if len(cleaned) > 0 {
					cases["a cleanup ends a lease past its expiry"]++
				}
				for _, name := range scope {
					m := mem[name]
					if c.MaxAgeSeconds == nil || m.Ended == nil || len(m.Holders) > 0 || len(m.Queue) > 0 || m.DelayUntil.After(now) {
						continue
					}
					cases["a cleanup deletes an idle lock"]++
					mem[name], revs[name] = rules.NewMemory(), 0
					d.states = append(d.states, diffState{key: name})
					if !slices.Contains(cleaned, name) {
						cleaned = append(cleaned, name)
					}
				}
				n := len(cleaned)
				d.note(topics.Event{Type: topics.TypeCleaned, Operation: c.Operation, RequestID: c.RequestID, CleanedCount: &n,
					CleanedLockNames: cleaned})
			case topics.OpQuery:
				m := mem[c.LockName]
				l := m.Lock("", now, next)
				ev := modelEvent(topics.TypeStatus, c.Operation, c.RequestID, c.LockName, l.ReadInfo())
				ev.LockInfo.Revision = revs[c.LockName]
				ev.LockInfo.HolderCount = len(l.Holders)
				for _, h := range l.Holders {
					status := topics.StatusAcquired
					if !h.Lasts(now) {
						status = topics.StatusExpired
					}
					ev.LockInfo.Holders = append(ev.LockInfo.Holders, topics.Holder{OwnerID: h.Owner, Mode: string(h.Mode), Status: status, FencingToken: h.Token,
						OwnerMetadata: h.Metadata})
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
		LeaseDuration: h.Lease, AcquisitionCount: in.Acquisitions, ExtensionCount: h.Extensions, Limit: in.Limit, OwnerMetadata: h.Metadata}
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
	for _, h := range m.Holders[:min(len(m.Holders), topics.MaxStateHolders)] { // a crowd's readers: the first ones
		st.Holders = append(st.Holders, topics.Holder{OwnerID: h.Owner, Mode: string(h.Mode), FencingToken: h.Token, OwnerMetadata: h.Metadata})
	}
	if !m.DelayUntil.IsZero() { // every decision clears a delay that has passed
		st.DelayUntil = &topics.Time{Time: m.DelayUntil}
	}
	return st
}
