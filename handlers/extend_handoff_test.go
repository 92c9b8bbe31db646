package handlers_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// A holder's extend settles its lock first, as every command does: when
// the lock-delay has passed, or a waiter's deadline, since the last
// decision (before the expiry scheduler's tick), the extend hands the lock
// on in the same revision (rules.Lock.Extend: Settle, HandOff). The
// one-statement extend may not take such a lock: both paths must give the
// model's events.
func TestExtendHandsOn(t *testing.T) {
	h := newHarness(t)
	cmd := func(op, lock, owner string, mod func(*topics.Command)) diffCmd {
		c := topics.Command{RequestID: op + "-" + owner, Operation: op, LockName: lock, OwnerID: owner,
			ReplyTo: "locks.replies." + owner, Limit: diffLocks[lock].limit}
		if op != topics.OpAcquire {
			c.Limit = 0
		}
		if mod != nil {
			mod(&c)
		}
		return diffCmd{c: c}
	}
	waits := func(c *topics.Command) { c.WaitTimeout = 120 }
	shared := func(c *topics.Command) { c.Mode = topics.ModeShared }
	for _, tc := range []struct {
		name   string
		script []diffStep
		// want: lines of the extend's step, in order, each with all of its
		// strings.
		want [][]string
	}{
		{
			// A semaphore of 3: a's lease (with a lock_delay) ends and is
			// settled, setting delay_until; c queues behind the delay; the
			// delay passes; then b extends.
			name: "the lock-delay passed",
			script: []diffStep{
				{cmds: []diffCmd{
					cmd(topics.OpAcquire, "sem", "a", func(c *topics.Command) { c.LockDelay = 60 }),
					cmd(topics.OpAcquire, "sem", "b", nil)}},
				{endLease: "sem", holder: 0, expiryRun: true},
				{cmds: []diffCmd{cmd(topics.OpAcquire, "sem", "c", waits)}},
				{endDelay: "sem", cmds: []diffCmd{cmd(topics.OpExtend, "sem", "b", nil)}},
			},
			want: [][]string{
				{"lock.acquired acquire req=acquire-c ", " sem owner=c status=acquired"},
				{"lock.extended extend req=extend-b ", " sem owner=b status=acquired"},
				{"state sem ", "waiters=0 holders=2 delayed=false"},
			},
		},
		{
			// A read/write lock: r1 reads, w1 waits to write, r2 waits
			// behind it; w1's deadline passes; then r1 extends.
			name: "a waiter's deadline passed",
			script: []diffStep{
				{cmds: []diffCmd{
					cmd(topics.OpAcquire, "rw", "r1", shared),
					cmd(topics.OpAcquire, "rw", "w1", waits),
					cmd(topics.OpAcquire, "rw", "r2", func(c *topics.Command) { shared(c); waits(c) })}},
				{endWait: "rw", cmds: []diffCmd{cmd(topics.OpExtend, "rw", "r1", nil)}},
			},
			want: [][]string{
				{"lock.rejected acquire req=acquire-w1 code=LOCK_TIMEOUT"},
				{"lock.acquired acquire req=acquire-r2 ", " rw owner=r2 status=acquired mode=shared"},
				{"lock.extended extend req=extend-r1 ", " rw owner=r1 status=acquired"},
				{"state rw ", "waiters=0 holders=2"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := modelRun(tc.script, false, map[string]int{})
			// The model's lines of the last step: after the last line of
			// the step before it.
			before := modelRun(tc.script[:len(tc.script)-1], false, map[string]int{})
			last := want[len(before):]
			require.Len(t, last, len(tc.want), "the model's events of the extend's step:\n%s", strings.Join(last, "\n"))
			for i, parts := range tc.want {
				for _, p := range parts {
					require.Contains(t, last[i], p, "the model's events of the extend's step:\n%s", strings.Join(last, "\n"))
				}
			}
			for _, path := range []string{"general", "ahead", "inline"} {
				t.Run(path, func(t *testing.T) {
					h.t = t
					h.reset()
					got := h.dbRun(tc.script, path)
					require.Equal(t, strings.Join(want, "\n"), strings.Join(got, "\n"))
				})
			}
		})
	}
}
