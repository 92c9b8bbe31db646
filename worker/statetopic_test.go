package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/topics"
)

// stateIn waits up to 10 s for a state of key in partition part of the
// lock state topic, read from its start, and returns the newest read by
// then (nil: none).
func stateIn(t *testing.T, e *e2e.Env, key string, part int32) *topics.LockState {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{e.Names.State: {part: kgo.NewOffset().AtStart()}}))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got *topics.LockState
	for ctx.Err() == nil && got == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if string(r.Key) == key && r.Value != nil {
				st, err := topics.DecodeLockState(r.Value)
				require.NoError(t, err)
				got = &st
			}
		})
	}
	return got
}

// A worker that finds at its start that partitions were added to the lock
// state topic, or that it was deleted and created again, publishes every
// lock's state again: a quiet held lock's state is then in the partition
// its key hashes to now (before, it was in its old partition only, or
// nowhere, and readers saw the lock free). A start that finds no change
// publishes nothing again.
func TestStateTopicChangedRepublishes(t *testing.T) {
	e := e2e.New(t)
	ctx := context.Background()
	w := e.StartWorker(e2e.WorkerOpts{Name: "first"}) // creates the topics
	adm := kadm.NewClient(e.Producer())
	details, err := adm.ListTopics(ctx, e.Names.State)
	require.NoError(t, err)
	n := len(details[e.Names.State].Partitions)
	grown := n + 3
	lock := ""
	for i := 0; lock == ""; i++ {
		if k := fmt.Sprintf("quiet-%d", i); kafkatest.KeyPartition(k, n) != kafkatest.KeyPartition(k, grown) {
			lock = k
		}
	}
	reply := "locks.replies.statetopic"
	watch := e.Watch(reply)
	cl := e.Producer()

	_, err = w.W.PublishFirstStates(ctx) // records the topic
	require.NoError(t, err)
	e.Send(cl, cmd("acquire", "take", lock, "o", reply, func(c *topics.Command) { c.LeaseDuration = 3600 }))
	watch.WaitEvent(t, "the lock taken", e2e.ByRequest(reply, "take", topics.TypeAcquired))
	st := stateIn(t, e, lock, kafkatest.KeyPartition(lock, n))
	require.NotNil(t, st)
	require.Equal(t, topics.StatusAcquired, st.Status)
	rev := st.Revision
	w.Stop()

	resp, err := adm.UpdatePartitions(ctx, grown, e.Names.State)
	require.NoError(t, err)
	require.NoError(t, resp.Error())
	w = e.StartWorker(e2e.WorkerOpts{Name: "second"})
	_, err = w.W.PublishFirstStates(ctx)
	require.NoError(t, err)
	st = stateIn(t, e, lock, kafkatest.KeyPartition(lock, grown))
	require.NotNil(t, st, "the held lock's state in its new partition")
	require.Equal(t, topics.StatusAcquired, st.Status)
	require.Equal(t, rev, st.Revision, "the same revision")
	require.Equal(t, "o", st.Holders[0].OwnerID)
	w.Stop()

	_, err = adm.DeleteTopics(ctx, e.Names.State)
	require.NoError(t, err)
	_, err = adm.CreateTopic(ctx, int32(grown), 1, nil, e.Names.State)
	require.NoError(t, err)
	w = e.StartWorker(e2e.WorkerOpts{Name: "third"})
	_, err = w.W.PublishFirstStates(ctx)
	require.NoError(t, err)
	st = stateIn(t, e, lock, kafkatest.KeyPartition(lock, grown))
	require.NotNil(t, st, "the held lock's state in the topic created again")
	require.Equal(t, rev, st.Revision)
	w.Stop()

	other := "other-" + lock
	w = e.StartWorker(e2e.WorkerOpts{Name: "fourth"})
	_, err = w.W.PublishFirstStates(ctx)
	require.NoError(t, err)
	e.Send(cl, cmd("acquire", "mark", other, "o", reply)) // after any republish, on the same relay
	watch.WaitEvent(t, "the other lock taken", e2e.ByRequest(reply, "mark", topics.TypeAcquired))
	require.NotNil(t, stateIn(t, e, other, kafkatest.KeyPartition(other, grown)))
	require.Equal(t, 1, countStates(t, e, lock, kafkatest.KeyPartition(lock, grown)), "no change found: nothing published again")
}

// countStates counts the records of key in partition part of the lock
// state topic.
func countStates(t *testing.T, e *e2e.Env, key string, part int32) int {
	t.Helper()
	adm := kadm.NewClient(e.Producer())
	ends, err := adm.ListEndOffsets(context.Background(), e.Names.State)
	require.NoError(t, err)
	end, _ := ends.Lookup(e.Names.State, part)
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{e.Names.State: {part: kgo.NewOffset().AtStart()}}))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	count, next := 0, int64(0)
	for next < end.Offset && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			next = r.Offset + 1
			if string(r.Key) == key {
				count++
			}
		})
	}
	return count
}
