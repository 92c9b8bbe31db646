package worker_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/topics"
)

// TestHoldersUnderWorkerCrash: owners take turns on a semaphore of 3 and on
// a read/write lock (acquires that wait, short leases, releases) while one
// of two workers dies abruptly. Replayed from lock_events, the history
// never has 4 semaphore holders, nor a writer beside anyone, and every
// request is answered.
func TestHoldersUnderWorkerCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	e := e2e.New(t)
	opts := func(name string) e2e.WorkerOpts {
		return e2e.WorkerOpts{Name: name, SessionTimeout: 1500 * time.Millisecond, Static: true, Appliers: 2}
	}
	w1 := e.StartWorker(opts("w1"))
	e.StartWorker(opts("w2"))
	reply := "locks.replies.holders"
	watch := e.Watch(reply)

	r := rand.New(rand.NewPCG(14, 3))
	const owners, rounds = 12, 15
	next := make([]int, owners) // each owner's next step: even acquire, odd release
	var cmds []topics.Command
	for len(cmds) < owners*rounds*2 {
		o := r.IntN(owners)
		if next[o] == rounds*2 {
			continue
		}
		owner, step := fmt.Sprintf("o%d", o), next[o]
		next[o]++
		for _, lock := range []string{"sem", "rw"} {
			id := fmt.Sprintf("%s-%s-%d", lock, owner, step)
			c := topics.Command{RequestID: id, Operation: topics.OpRelease, LockName: lock, OwnerID: owner, ReplyTo: reply}
			if step%2 == 0 {
				c.Operation, c.LeaseDuration, c.WaitTimeout = topics.OpAcquire, 0.5+r.Float64(), 30
				if lock == "sem" {
					c.Limit = 3
				} else if o%3 != 0 {
					c.Mode = topics.ModeShared // two readers in three owners
				}
			}
			cmds = append(cmds, c)
		}
	}
	p := e.Producer()
	for i := 0; i < len(cmds); i += 60 {
		e.Send(p, cmds[i:min(i+60, len(cmds))]...)
		if i == len(cmds)/2/60*60 {
			w1.Kill()
		}
	}
	want := map[string]bool{}
	for _, c := range cmds {
		want[c.RequestID] = true
	}
	watch.WaitFor(t, 3*time.Minute, "an answer to every request", func(rs []e2e.Received) bool {
		seen := map[string]bool{}
		for _, r := range rs {
			if want[r.Event.RequestID] && r.Event.Type != topics.TypeQueued {
				seen[r.Event.RequestID] = true
			}
		}
		return len(seen) == len(want)
	})

	rows, err := e.Store.Pool.Query(context.Background(), `SELECT lock_name, type, owner_id FROM lock_events ORDER BY occurred_at, id`)
	require.NoError(t, err)
	type event struct{ Lock, Type, Owner string }
	history, err := pgx.CollectRows(rows, pgx.RowToStructByPos[event])
	require.NoError(t, err)
	holders := map[string]map[string]bool{"sem": {}, "rw": {}}
	writers := map[string]bool{}
	for o := range owners {
		if o%3 == 0 {
			writers[fmt.Sprintf("o%d", o)] = true
		}
	}
	most := 0
	for i, ev := range history {
		hs := holders[ev.Lock]
		switch ev.Type {
		case topics.TypeAcquired:
			require.False(t, hs[ev.Owner], "event %d: %s holds %s twice", i, ev.Owner, ev.Lock)
			hs[ev.Owner] = true
		case topics.TypeReleased, topics.TypeExpired:
			require.True(t, hs[ev.Owner], "event %d: %s ends a lease of %s it does not hold", i, ev.Owner, ev.Lock)
			delete(hs, ev.Owner)
		}
		if ev.Lock == "sem" {
			require.LessOrEqual(t, len(hs), 3, "event %d: more than 3 hold the semaphore", i)
			most = max(most, len(hs))
			continue
		}
		for h := range hs {
			require.False(t, writers[h] && len(hs) > 1, "event %d: writer %s holds rw beside %v", i, h, hs)
		}
	}
	require.Equal(t, 3, most, "the semaphore was full at times")
}
