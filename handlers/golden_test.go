package handlers_test

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// TestV1Golden replays seeded random sequences of v1 commands (acquires
// without mode or limit, releases, extends, queries, cleanups, resends,
// leases and waits ended by the expiry step), batched at random, and
// compares every event and route with testdata/v1_golden.txt, recorded with
// the lock model of v1 (one holder fused into the locks row). Whatever the
// lock model becomes, commands without its new fields must behave exactly
// as they did. go test -run TestV1Golden -update ./handlers rewrites the
// file: only ever on purpose, saying why in the commit.
func TestV1Golden(t *testing.T) {
	const seeds, steps = 16, 90
	h := newHarness(t)
	var out strings.Builder
	for seed := uint64(1); seed <= seeds; seed++ {
		fmt.Fprintf(&out, "# seed %d\n", seed)
		for _, line := range goldenRun(h.fresh(), rand.New(rand.NewPCG(seed, 42)), steps) {
			out.WriteString(line + "\n")
		}
	}
	path := filepath.Join("testdata", "v1_golden.txt")
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(out.String()), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run with -update to record it")
	require.Equal(t, string(want), out.String())
}

// goldenRun runs one random sequence and returns its trace.
func goldenRun(h *harness, r *rand.Rand, steps int) []string {
	locks, owners := []string{"a", "b", "c"}, []string{"o1", "o2", "o3", "o4"}
	pick := func(xs []string) string { return xs[r.IntN(len(xs))] }
	tokens := map[string]int64{} // lock/owner -> token of its last grant
	var sent []topics.Command
	var trace []string
	var evs []topics.Event
	note := func(got []topics.Event) {
		evs = append(evs, got...)
		for _, ev := range got {
			if ev.Type == topics.TypeAcquired && ev.LockInfo != nil {
				tokens[ev.LockInfo.LockName+"/"+ev.LockInfo.OwnerID] = ev.LockInfo.FencingToken
			}
		}
		for _, rec := range h.outbox() {
			trace = append(trace, "  -> "+rec.Topic+" "+rec.Event.Type+" "+rec.Event.RequestID)
		}
		h.clearOutbox()
	}
	guard := func(c *topics.Command) {
		switch r.IntN(3) {
		case 1:
			if tok, ok := tokens[c.LockName+"/"+c.OwnerID]; ok {
				c.FencingToken = &tok
			}
		case 2:
			wrong := int64(999999999)
			c.FencingToken = &wrong
		}
	}
	command := func() topics.Command {
		lock, owner := pick(locks), pick(owners)
		switch n := r.IntN(100); {
		case n < 38:
			var mods []func(*topics.Command)
			if r.IntN(2) == 0 {
				mods = append(mods, wait(120))
			}
			if r.IntN(2) == 0 {
				mods = append(mods, lease(60))
			}
			return h.acquire(lock, owner, mods...)
		case n < 63:
			c := h.release(lock, owner)
			guard(&c)
			return c
		case n < 75:
			c := h.extend(lock, owner)
			if r.IntN(2) == 0 {
				c.ExtensionDuration = 5
			}
			guard(&c)
			return c
		case n < 85:
			return h.query(lock)
		case n < 89:
			name := lock
			if r.IntN(2) == 0 {
				name = topics.CleanupAll
			}
			return h.cleanup(name, func(c *topics.Command) { zero := 0.0; c.MaxAgeSeconds = &zero })
		default:
			if len(sent) == 0 {
				return h.query(lock)
			}
			return sent[r.IntN(len(sent))] // a resend
		}
	}
	for step := 0; step < steps; {
		switch n := r.IntN(100); {
		case n < 10: // a holder's lease ends
			lock := pick(locks)
			trace = append(trace, "expire lease of "+lock)
			h.forceLeaseEnd(lock)
			_, got := h.expireDueEvents()
			note(got)
			step++
		case n < 14: // the first waiter's wait ends
			lock := pick(locks)
			trace = append(trace, "end wait on "+lock)
			h.forceWaitEnd(lock)
			_, got := h.expireDueEvents()
			note(got)
			step++
		default:
			group := make([]topics.Command, 1+r.IntN(4))
			for i := range group {
				group[i] = command()
				sent = append(sent, group[i])
				trace = append(trace, fmt.Sprintf("%s %s %s/%s %s token=%v wait=%g lease=%g ext=%g", group[i].RequestID, group[i].Operation,
					group[i].Namespace, group[i].LockName, group[i].OwnerID, group[i].FencingToken != nil, group[i].WaitTimeout,
					group[i].LeaseDuration, group[i].ExtensionDuration))
			}
			if r.IntN(2) == 0 {
				note(h.apply(group...))
			} else {
				note(h.applyInline(group...))
			}
			step += len(group)
		}
	}
	// The events, with tokens as their rank among the tokens handed out.
	var toks []int64
	for _, ev := range evs {
		if li := ev.LockInfo; li != nil && li.FencingToken != 0 && !slices.Contains(toks, li.FencingToken) {
			toks = append(toks, li.FencingToken)
		}
	}
	slices.Sort(toks)
	trace = append(trace, "events:")
	for _, ev := range evs {
		s := fmt.Sprintf("  %s %s req=%s code=%s pos=%d", ev.Type, ev.Operation, ev.RequestID, ev.ErrorCode, ev.QueuePosition)
		if li := ev.LockInfo; li != nil {
			s += fmt.Sprintf(" lock=%s/%s owner=%s status=%s token#%d acq=%d ext=%d lease=%g meta=%s",
				li.Namespace, li.LockName, li.OwnerID, li.Status, slices.Index(toks, li.FencingToken)+1, li.AcquisitionCount,
				li.ExtensionCount, li.LeaseDuration, li.OwnerMetadata)
		}
		if ev.CleanedCount != nil {
			s += fmt.Sprintf(" cleaned=%d %v", *ev.CleanedCount, ev.CleanedLockNames)
		}
		if ev.RetryAfterSeconds != nil {
			s += " retry_after"
		}
		trace = append(trace, s)
	}
	return trace
}

// forceLeaseEnd makes the leases of lock, if any (one: v1 commands), end
// now by database time.
func (h *harness) forceLeaseEnd(lock string) {
	_, err := h.st.Pool.Exec(h.t.Context(), `UPDATE lock_holders SET expires_at = clock_timestamp() - interval '1 millisecond'
		WHERE namespace = '' AND lock_name = $1`, lock)
	require.NoError(h.t, err)
}

// forceWaitEnd makes the wait of the first waiter of lock, if any, end now.
func (h *harness) forceWaitEnd(lock string) {
	_, err := h.st.Pool.Exec(h.t.Context(), `UPDATE lock_waiters SET deadline = clock_timestamp() - interval '1 millisecond'
		WHERE id = (SELECT min(id) FROM lock_waiters WHERE namespace = '' AND lock_name = $1)`, lock)
	require.NoError(h.t, err)
}
