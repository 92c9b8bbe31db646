package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// A partition's stored offset went back under a batch it shares with
// another partition: the token floor check reads Kafka while the batch's
// segments are pending. Kafka here never serves the lock.acquired records,
// so the check would last tokenFloorTimeout, and a revoke, which waits for
// the pending segments, with it: the revoke of the other partition ends the
// check at once (whileHeld, as backOff does), that partition is dropped,
// and the partition that went back is checked again, alone.
func TestRevokeEndsTheWentBackCheck(t *testing.T) {
	ctx := context.Background()
	c, w, st, logs := publishedToken42(t)
	var fetching atomic.Bool
	c.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		fetching.Store(true)
		return nil, errors.New("not serving"), true
	})

	p0, p1 := w.newPartition(w.hard, 0), w.newPartition(w.hard, 1)
	apply(w, seg(t, p0, 0, "a"), seg(t, p1, 0, "b"))
	_, err := st.Pool.Exec(ctx, `UPDATE consumer_offsets SET next_offset = 0 WHERE partition = 0`) // the loss
	require.NoError(t, err)

	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	p0.pending.Add(1)
	p1.pending.Add(1)
	go func() {
		defer close(done)
		w.applySegments(actx, []segment{seg(t, p0, 1, "c"), seg(t, p1, 1, "d")})
	}()
	require.Eventually(t, fetching.Load, 20*time.Second, 5*time.Millisecond, "the check reads lock.acquired")
	require.Contains(t, logs.String(), "stored offset went back")
	p1.revoke() // as revoked does, before it waits
	released := make(chan struct{})
	go func() { p1.pending.Wait(); close(released) }()
	select {
	case <-released:
	case <-time.After(tokenFloorTimeout / 2):
		t.Fatal("the revoked partition is held by the token floor check")
	}
	require.True(t, p1.dropped.Load())
	require.Contains(t, logs.String(), "a partition of the batch is being revoked")
	require.NotContains(t, logs.String(), "applying batch failed", "not a failure of the batch")

	// The check goes on for partition 0, which still went back.
	require.Eventually(t, func() bool {
		return strings.Count(logs.String(), "stored offset went back") == 2
	}, 20*time.Second, 5*time.Millisecond)
	select {
	case <-done:
		t.Fatal("the batch goes on for partition 0")
	default:
	}
	cancel() // the hard stop
	<-done
	p0.pending.Wait()
	require.EqualValues(t, 0, storedOffset(t, st, 0))
	require.EqualValues(t, 1, storedOffset(t, st, 1))
}

// publishedToken42 is an applier on a broker (made with opts too) whose
// lock.acquired topic holds one grant, of fencing token 42, logging to
// logs: a worker whose token floor check has a token to find.
func publishedToken42(t *testing.T, opts ...kfake.Opt) (c *kfake.Cluster, w *Worker, st *store.Store, logs *testlog.Buffer) {
	t.Helper()
	names := topics.DefaultNames()
	c = kafkatest.Cluster(t, append([]kfake.Opt{kfake.SeedTopics(1, names.Acquired)}, opts...)...)
	w, st = newApplierOn(t, c)
	logs = &testlog.Buffer{}
	w.log = zerolog.New(logs)
	pp, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer pp.Close()
	ev := topics.NewEvent(topics.TypeAcquired, topics.OpAcquire, "", time.Now())
	ev.LockInfo = &topics.LockInfo{LockName: "l", OwnerID: "o", Status: topics.StatusAcquired, FencingToken: 42}
	v, err := ev.Encode()
	require.NoError(t, err)
	require.NoError(t, pp.ProduceSync(context.Background(), &kgo.Record{Topic: names.Acquired, Value: v}).FirstErr())
	return c, w, st, logs
}

// withCommands is publishedToken42 whose commands topic's partition 0
// holds 250 records, and whose sequence is at its start (setval(1,
// false)), as PostgreSQL leaves it when it lost every grant: the token
// floor check, once run, moves it past 42.
func withCommands(t *testing.T) (c *kfake.Cluster, w *Worker, st *store.Store, logs *testlog.Buffer) {
	t.Helper()
	names := topics.DefaultNames()
	c, w, st, logs = publishedToken42(t, kfake.SeedTopics(1, names.Commands))
	pp, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer pp.Close()
	recs := make([]*kgo.Record, 250)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: names.Commands, Value: []byte("x")}
	}
	require.NoError(t, pp.ProduceSync(context.Background(), recs...).FirstErr())
	_, err = st.Pool.Exec(context.Background(), `SELECT setval('fencing_tokens', 1, false)`)
	require.NoError(t, err)
	return c, w, st, logs
}

// tokenOf is the fencing token lock holds.
func tokenOf(t *testing.T, st *store.Store, lock string) (token int64) {
	t.Helper()
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT fencing_token FROM lock_holders WHERE lock_name = $1`, lock).Scan(&token))
	return token
}

// A partition is assigned whose stored offset is below the group's offset
// committed to Kafka, or gone while Kafka has one: the worker marks an
// offset for commit only once PostgreSQL committed what it covers, so
// PostgreSQL lost transactions (a restore, a failover this replica did not
// run across: it was withdrawn, or stopped, or another replica had the
// partition). Its first batch compares with the committed offset, checks
// the fencing tokens before it grants, and restarts from the stored
// offset, whose grants are above the token published. A committed offset
// at or below the stored one (Kafka's commits lag), or none, changes
// nothing.
func TestFirstBatchComparesWithTheGroupsCommittedOffset(t *testing.T) {
	for name, c := range map[string]struct {
		stored    int64 // -1: no row
		committed kgo.Offset
		back      bool
	}{
		"stored below the committed offset": {stored: 150, committed: kgo.NewOffset().At(200), back: true},
		"nothing stored, one committed":     {stored: -1, committed: kgo.NewOffset().At(200), back: true},
		"the committed offset behind":       {stored: 200, committed: kgo.NewOffset().At(150)},
		"nothing committed":                 {stored: 200, committed: kgo.NewOffset().AtStart()}, // as kgo gives it
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			_, w, st, logs := withCommands(t)
			names := topics.DefaultNames()
			if c.stored >= 0 {
				_, err := st.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('lockworker', $1, 0, $2)`,
					names.Commands, c.stored)
				require.NoError(t, err)
			}
			p := own(w, 0)
			_, err := w.resumeFromStore(ctx, map[string]map[int32]kgo.Offset{names.Commands: {0: c.committed}}) // as kgo calls it
			require.NoError(t, err)

			from := max(c.stored, 0) // where the client fetches from
			apply(w, seg(t, p, from, "l"))
			if !c.back {
				require.NoError(t, p.ctx.Err())
				require.NotContains(t, logs.String(), "went back")
				require.EqualValues(t, 1, tokenOf(t, st, "l"))
				return
			}
			require.Contains(t, logs.String(), "stored offset went back")
			require.Contains(t, logs.String(), `"expected_offset":200`)
			again := restarted(t, w, p)
			require.Equal(t, from, again.seek.Load().Next, "fetched again from the stored offset")
			apply(w, seg(t, again, from, "l"))
			require.Greater(t, tokenOf(t, st, "l"), int64(42), "granted above the token published")
		})
	}
}

// A partition's first batch after it resumed finds its stored offset below
// where it resumed, or gone (another replica's check of a recreated
// commands topic deleted every partition's row meanwhile, or moved it back
// after Kafka lost records): the records polled from where it resumed,
// maybe the deleted topic's, are not applied, which would move the offset
// past records never applied; the partition goes back to the stored
// offset, as a later batch would. Found further on (another replica
// applied more), or with nothing stored when it resumed (a new group), the
// first batch applies from there as before.
func TestFirstBatchFindsTheOffsetBelowWhereItResumed(t *testing.T) {
	const resumedAt = 200
	for name, c := range map[string]struct {
		resumed bool   // a row was stored when the partition resumed
		restart bool   // it resumed from a restart (seekStored), not an assignment
		again   bool   // it resumed again after the change, finding nothing stored
		after   string // what happens to the row before the first batch
		back    bool   // the partition goes back to the stored offset
		next    int64  // the stored offset after (0: none)
	}{
		"gone":                {resumed: true, after: `DELETE FROM consumer_offsets WHERE partition = 0`, back: true},
		"gone, resumed again": {resumed: true, again: true, after: `DELETE FROM consumer_offsets WHERE partition = 0`, next: 251},
		"gone, restarted":     {resumed: true, restart: true, after: `DELETE FROM consumer_offsets WHERE partition = 0`, back: true},
		"moved back":          {resumed: true, after: `UPDATE consumer_offsets SET next_offset = 150 WHERE partition = 0`, back: true, next: 150},
		"moved on":            {resumed: true, after: `UPDATE consumer_offsets SET next_offset = 220 WHERE partition = 0`, next: 251},
		"as it resumed":       {resumed: true, next: 251},
		"nothing resumed":     {next: 251},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			_, w, st, logs := publishedToken42(t)
			names := topics.DefaultNames()
			if c.resumed {
				_, err := st.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('lockworker', $1, 0, $2)`,
					names.Commands, resumedAt)
				require.NoError(t, err)
			}
			p := own(w, 0)
			stored, err := st.Offsets(ctx, "lockworker", names.Commands)
			require.NoError(t, err)
			if c.restart {
				require.NoError(t, w.seekStored(ctx, p)) // as a restarted partition does
			} else {
				w.knowResumed(map[int32]kgo.Offset{0: kgo.NewOffset()}, stored, nil) // as resumeFromStore does
			}
			if c.after != "" {
				_, err = st.Pool.Exec(ctx, c.after)
				require.NoError(t, err)
			}
			if c.again { // as a second resumeFromStore of the partition, after this replica forgot the offsets
				w.knowResumed(map[int32]kgo.Offset{0: kgo.NewOffset()}, map[int32]store.Position{}, nil)
			}

			locks := make([]string, 51) // offsets 200..250
			for i := range locks {
				locks[i] = fmt.Sprintf("l-%d", resumedAt+i)
			}
			apply(w, seg(t, p, resumedAt, locks...))
			var rows, applied int
			require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&rows))
			require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM locks`).Scan(&applied))
			require.EqualValues(t, c.next, storedOffset(t, st, 0))
			if !c.back {
				require.NoError(t, p.ctx.Err())
				require.NotZero(t, rows)
				require.NotZero(t, applied)
				require.NotContains(t, logs.String(), "went back")
				return
			}
			require.Zero(t, rows, "nothing written")
			require.Zero(t, applied, "nothing applied")
			again := restarted(t, w, p)
			require.Equal(t, &store.Position{Next: c.next, Epoch: -1}, again.seek.Load(), "fetched again from the stored offset")
			require.Contains(t, logs.String(), `"expected_offset":200`)
			require.Contains(t, logs.String(), "partition offset went back: restarting")
		})
	}
}

// Kafka alone lost records of a partition (an unclean leader election): its
// log ends at 250, below the stored offset, while the group's offset
// committed to Kafka, which lags PostgreSQL's, is between the two.
// PostgreSQL lost nothing (its sequence, at 100, is above the token
// published, 42). The replica assigned the partition moves the stored
// offset back to the log's end itself; Kafka's commit, above where it
// moved it but not above what it read, is no sign of a PostgreSQL loss:
// the partition resumes from 250, and neither its first batch nor a loss
// the client reports before it finds the offset gone back (no "went back"
// error, no check, no restart). So too when the move was made by an earlier
// attempt of the resume, retried after a transient failure. A commit above
// the stored offset as read still is such a sign.
func TestOwnMoveBackAtResumeIsNotTakenForALoss(t *testing.T) {
	for name, c := range map[string]struct {
		stored    int64
		retried   bool // the log's starts fail once, after the move back
		lossFirst bool // the client reports a loss before the first batch
		back      bool
	}{
		"moved back":                         {stored: 300},
		"moved back, then the check retried": {stored: 300, retried: true},
		"moved back, then a loss reported":   {stored: 300, lossFirst: true},
		"PostgreSQL lost transactions too":   {stored: 270, back: true},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			names := topics.DefaultNames()
			cl, w, st, logs := withCommands(t) // the log: offsets 0..249
			_, err := st.Pool.Exec(ctx, `SELECT setval('fencing_tokens', 100)`)
			require.NoError(t, err)
			_, err = st.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('lockworker', $1, 0, $2)`,
				names.Commands, c.stored)
			require.NoError(t, err)
			if c.retried {
				cl.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.ListOffsets}, Err: kerr.LeaderNotAvailable, When: func(req kmsg.Request) bool {
					for _, t := range req.(*kmsg.ListOffsetsRequest).Topics {
						for _, p := range t.Partitions {
							if p.Timestamp == -2 { // the log's start, listed after the move back
								return true
							}
						}
					}
					return false
				}})
			}
			p := own(w, 0)
			offsets, err := w.resumeFromStore(ctx, map[string]map[int32]kgo.Offset{names.Commands: {0: kgo.NewOffset().At(280)}}) // as kgo calls it
			require.NoError(t, err)
			require.EqualValues(t, 250, offsets[names.Commands][0].EpochOffset().Offset)
			require.Equal(t, 1, strings.Count(logs.String(), "the commands topic lost records this group applied"), logs.String())
			if c.retried {
				require.Contains(t, logs.String(), "reading or checking the stored offsets of the assigned partitions failed")
			}
			if c.lossFirst {
				p.pending.Add(1)
				w.lostRecords(segment{p: p, lost: &kgo.ErrDataLoss{Partition: 0}})
				require.Equal(t, &store.Position{Next: 250, Epoch: -1}, p.seek.Load(), "fetched from the stored offset")
			}

			apply(w, seg(t, p, 250, "l"))
			if !c.back {
				require.NotContains(t, logs.String(), "went back")
				require.NoError(t, p.ctx.Err(), "not restarted")
				require.EqualValues(t, 251, storedOffset(t, st, 0))
				require.EqualValues(t, 101, tokenOf(t, st, "l"), "no check raised the sequence")
				return
			}
			require.Contains(t, logs.String(), "stored offset went back")
			require.Contains(t, logs.String(), `"expected_offset":280`)
			again := restarted(t, w, p)
			require.EqualValues(t, 250, again.seek.Load().Next, "fetched again from the stored offset")
		})
	}
}
