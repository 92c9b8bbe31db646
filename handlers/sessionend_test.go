package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/topics"
)

// TestSessionEndWritesOfManyLocks: a session's end settles locks of every
// kind at once, more than one pipeline's worth (MaxSweep), writing the
// leases it ends in one statement and the locks rows in one more
// (lockWrites): exclusive, shared and semaphore locks, with waiters granted
// in the same pass (a run of readers, a semaphore's free place), a
// lock-delay that a close skips and an expiry starts, a wait of the session
// dropped, and owner_metadata on the leases ended. Each lock's row, holders
// and waiters must be what its last state record says (computed from the
// decision, not read back), every lease ended must show as the row's ended
// lease, its time and partition must be those of its change, and the small
// locks must end as expected.
func TestSessionEndWritesOfManyLocks(t *testing.T) {
	for _, end := range []string{"close", "expiry"} {
		t.Run(end, func(t *testing.T) {
			h := newHarness(t)
			require.Equal(t, topics.TypeSessionOpened, h.one(h.session(topics.OpSessionOpen, "s1", "alice", ttl(3600))).Type)
			shared := func(c *topics.Command) { c.Mode = topics.ModeShared }
			limit3 := func(c *topics.Command) { c.Limit = 3 }
			delay := func(c *topics.Command) { c.LockDelay = 300 }
			meta := func(m string) func(*topics.Command) {
				return func(c *topics.Command) { c.OwnerMetadata = json.RawMessage(m) }
			}
			mustBe := func(typ string, cmds ...topics.Command) {
				t.Helper()
				for _, ev := range h.apply(cmds...) {
					if ev.RequestID != "" {
						require.Equal(t, typ, ev.Type, ev)
					}
				}
			}
			mustBe(topics.TypeAcquired,
				h.acquire("x-plain", "alice", inSession("s1"), meta(`{"k": "plain"}`)),
				h.acquire("x-wait", "alice", inSession("s1")),
				h.acquire("x-delay", "alice", inSession("s1"), delay),
				h.acquire("r-two", "carol", shared),
				h.acquire("r-two", "alice", inSession("s1"), shared),
				h.acquire("r-run", "alice", inSession("s1")),
				h.acquire("sem", "alice", inSession("s1"), limit3),
				h.acquire("sem", "bob", limit3),
				h.acquire("sem", "erin", limit3),
				h.acquire("s-wait", "bob"))
			mustBe(topics.TypeQueued,
				h.acquire("x-wait", "bob", wait(3600)),
				h.acquire("x-delay", "bob", wait(3600)),
				h.acquire("r-two", "dave", wait(3600)),
				h.acquire("r-run", "bob", shared, wait(3600)),
				h.acquire("r-run", "carol", shared, wait(3600)),
				h.acquire("r-run", "dave", wait(3600)),
				h.acquire("sem", "carol", limit3, wait(3600)),
				h.acquire("sem", "dave", limit3, wait(3600)),
				h.acquire("s-wait", "alice", inSession("s1"), wait(3600)))
			// Past one pipeline: every third with a waiter to grant.
			var many, waits []topics.Command
			for i := range handlers.MaxSweep + 3 {
				lock := fmt.Sprintf("m-%04d", i)
				many = append(many, h.acquire(lock, "alice", inSession("s1"), meta(fmt.Sprintf(`{"i": %d}`, i))))
				if i%3 == 0 {
					waits = append(waits, h.acquire(lock, "bob", wait(3600)))
				}
			}
			mustBe(topics.TypeAcquired, many...)
			mustBe(topics.TypeQueued, waits...)
			// A row's partition changes only with a grant (the grantee's).
			_, err := h.st.Pool.Exec(context.Background(), `UPDATE locks SET source_partition = 5`)
			require.NoError(t, err)
			type lease struct {
				token             int64
				acquired, expires time.Time
				meta              string
				updated           time.Time
			}
			before := map[string]lease{}
			rows, err := h.st.Pool.Query(context.Background(), `SELECT h.lock_name, h.fencing_token, h.acquired_at, s.expires_at,
				coalesce(h.owner_metadata::text, '-'), l.updated_at
				FROM lock_holders h JOIN sessions s ON s.id = h.session_id JOIN locks l USING (namespace, lock_name)`)
			require.NoError(t, err)
			var name string
			var l lease
			_, err = pgx.ForEachRow(rows, []any{&name, &l.token, &l.acquired, &l.expires, &l.meta, &l.updated}, func() error {
				before[name] = l
				return nil
			})
			require.NoError(t, err)
			require.Equal(t, 6+handlers.MaxSweep+3, len(before))
			sWaitUpdated := h.timeOf(`SELECT updated_at FROM locks WHERE lock_name = 's-wait'`)

			h.clearOutbox()
			var evs []topics.Event
			if end == "close" {
				evs = h.apply(h.session(topics.OpSessionClose, "s1", "alice"))
			} else {
				expired := h.timeOf(`UPDATE sessions SET expires_at = statement_timestamp() RETURNING expires_at`)
				h.waitPast(expired)
				for k, l := range before {
					l.expires = expired
					before[k] = l
				}
				_, evs = h.expireDueEvents()
			}
			require.Zero(t, h.scalar(`SELECT count(*) FROM lock_holders WHERE owner_id = 'alice'`))
			require.Zero(t, h.scalar(`SELECT count(*) FROM lock_waiters WHERE owner_id = 'alice'`))

			// Every lock's row, holders and waiters are what its last state
			// record says; a lease ended is the row's ended lease.
			last := map[string]*topics.LockState{}
			for _, r := range h.states() {
				last[r.State.LockName] = r.State
			}
			require.Len(t, last, len(before)+1, "a state record per lock the end changed")
			ended := 0
			for _, ev := range evs {
				if ev.LockInfo != nil && ev.LockInfo.OwnerID == "alice" && ev.RequestID == "" {
					ended++
				}
			}
			require.Equal(t, len(before), ended, "an event per lease ended")
			for lock, st := range last {
				var status string
				var limit, holders, sharedCount, waiters, partition int
				var acquisitions, revision int64
				var delayUntil *time.Time
				var updated time.Time
				var endedOwner, endedMode *string
				var endedMeta string
				var endedToken, endedExt *int64
				var endedAcquired, endedExpires *time.Time
				var endedLease *float64
				require.NoError(t, h.st.Pool.QueryRow(context.Background(), `SELECT status, lock_limit, holder_count, shared_count,
					waiter_count, acquisition_count, revision, delay_until, updated_at, source_partition, ended_owner_id, ended_mode,
					ended_fencing_token, ended_acquired_at, ended_expires_at, ended_lease_duration, coalesce(ended_owner_metadata::text, '-'),
					ended_extension_count FROM locks WHERE lock_name = $1`, lock).Scan(&status, &limit, &holders, &sharedCount,
					&waiters, &acquisitions, &revision, &delayUntil, &updated, &partition, &endedOwner, &endedMode, &endedToken,
					&endedAcquired, &endedExpires, &endedLease, &endedMeta, &endedExt))
				msg := "lock " + lock
				require.Equal(t, st.Status, status, msg)
				require.Equal(t, st.Limit, limit, msg)
				require.Equal(t, st.HolderCount, holders, msg)
				require.Equal(t, st.WaiterCount, waiters, msg)
				require.Equal(t, int(h.scalar(`SELECT count(*) FROM lock_waiters WHERE lock_name = $1`, lock)), waiters, msg)
				require.Equal(t, st.AcquisitionCount, acquisitions, msg)
				require.Equal(t, st.Revision, revision, msg)
				if st.DelayUntil == nil {
					require.Nil(t, delayUntil, msg)
				} else {
					require.NotNil(t, delayUntil, msg)
					require.True(t, st.DelayUntil.Time.Equal(*delayUntil), msg)
				}
				want := []string{}
				for _, x := range st.Holders {
					want = append(want, fmt.Sprintf("%s %s %d", x.OwnerID, x.Mode, x.FencingToken))
				}
				require.Equal(t, want, h.texts(`SELECT owner_id || ' ' || mode || ' ' || fencing_token FROM lock_holders
					WHERE lock_name = $1 ORDER BY fencing_token`, lock), msg)
				require.Equal(t, strings.Count(strings.Join(want, ","), " shared "), sharedCount, msg)
				// A grant brings the grantee's partition (the harness's 0).
				granted := h.scalar(`SELECT count(*) FROM lock_holders WHERE lock_name = $1 AND acquired_at = $2`, lock, st.ChangedAt.Time)
				require.Equal(t, map[bool]int{true: 0, false: 5}[granted > 0], partition, msg)

				was, held := before[lock]
				if !held {
					require.Equal(t, "s-wait", lock)
					require.True(t, sWaitUpdated.Equal(updated), "a dropped wait changes no lease: %s", msg)
					continue
				}
				require.True(t, st.ChangedAt.Time.Equal(updated), msg)
				got := fmt.Sprintf("%v %v %v %v %v %v %v %v", *endedOwner, *endedMode, *endedToken, endedAcquired.Equal(was.acquired),
					endedExpires.Equal(was.expires), *endedLease, endedMeta, *endedExt)
				mode := topics.ModeExclusive
				if lock == "r-two" {
					mode = topics.ModeShared
				}
				require.Equal(t, fmt.Sprintf("alice %s %d true true 30 %v 0", mode, was.token, was.meta), got, msg)
			}

			// The small locks, as expected.
			status := "released"
			if end == "expiry" {
				status = "expired"
			}
			xDelay := "x-delay acquired bob | waiting  delayed=false"
			if end == "expiry" {
				xDelay = "x-delay expired  | waiting bob delayed=true"
			}
			require.Equal(t, []string{
				"r-run acquired bob,carol | waiting dave delayed=false",
				"r-two acquired carol | waiting dave delayed=false",
				"s-wait acquired bob | waiting  delayed=false",
				"sem acquired bob,erin,carol | waiting dave delayed=false",
				xDelay,
				"x-plain " + status + "  | waiting  delayed=false",
				"x-wait acquired bob | waiting  delayed=false",
			}, h.texts(`SELECT l.lock_name || ' ' || l.status || ' ' ||
				coalesce((SELECT string_agg(owner_id, ',' ORDER BY fencing_token) FROM lock_holders h WHERE h.lock_name = l.lock_name), '') ||
				' | waiting ' || coalesce((SELECT string_agg(owner_id, ',' ORDER BY id) FROM lock_waiters w WHERE w.lock_name = l.lock_name), '') ||
				' delayed=' || (delay_until IS NOT NULL) FROM locks l WHERE lock_name NOT LIKE 'm-%' ORDER BY lock_name`))
			require.Equal(t, int64((handlers.MaxSweep+3+2)/3), h.scalar(`SELECT count(*) FROM lock_holders WHERE lock_name LIKE 'm-%'`))
			require.Zero(t, h.scalar(`SELECT count(*) FROM lock_waiters WHERE lock_name LIKE 'm-%'`))
			require.Equal(t, int64(handlers.MaxSweep+3-(handlers.MaxSweep+3+2)/3),
				h.scalar(`SELECT count(*) FROM locks WHERE lock_name LIKE 'm-%' AND status = $1 AND holder_count = 0`, status))
		})
	}
}
