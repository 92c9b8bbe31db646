package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/topics"
)

// movedKeys returns count lock names whose partition among from
// partitions is not the one among to.
func movedKeys(t *testing.T, count, from, to int) []string {
	t.Helper()
	var out []string
	for i := 0; len(out) < count; i++ {
		k := fmt.Sprintf("moved-%d", i)
		if kafkatest.KeyPartition(k, from) != kafkatest.KeyPartition(k, to) {
			out = append(out, k)
		}
	}
	return out
}

// readOnly is a read-only client of cluster.
func readOnly(t *testing.T, cluster *kfake.Cluster) *client.Client {
	t.Helper()
	c, err := client.New(ctxT(t), client.Config{Brokers: cluster.ListenAddrs(), ReadOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// in places rec in its key's partition among n.
func in(rec *kgo.Record, n int) *kgo.Record {
	rec.Partition = kafkatest.KeyPartition(string(rec.Key), n)
	return rec
}

// addPartitions grows the lock state topic to n partitions and returns
// a produce of records to their Partition that knows them.
func addPartitions(t *testing.T, cluster *kfake.Cluster, n int) (produce func(...*kgo.Record)) {
	t.Helper()
	state := topics.DefaultNames().State
	adm, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	require.NoError(t, err)
	defer adm.Close()
	resp, err := kadm.NewClient(adm).UpdatePartitions(context.Background(), n, state)
	require.NoError(t, err)
	require.NoError(t, resp.Error())
	kc, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.DefaultProduceTopic(state),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	t.Cleanup(kc.Close)
	return func(recs ...*kgo.Record) {
		t.Helper()
		require.NoError(t, kc.ProduceSync(context.Background(), recs...).FirstErr())
	}
}

// After partitions were added to the lock state topic, a lock's states
// before lie in its old partition, its newer ones in the partition its key
// hashes to now: Locks takes a key's records from the latter only, so a
// stale state does not bring back a lock deleted since (its tombstone
// compacted away, or read before it), nor hide its newer revision.
func TestLocksIgnoresStatesOutsideTheKeysPartition(t *testing.T) {
	keys := movedKeys(t, 3, 2, 4)
	deleted, changed, quiet := keys[0], keys[1], keys[2]
	cluster, _ := kafkatest.StateTopic(t, 2,
		in(kafkatest.StateRecord(t, deleted, 3), 2),
		in(kafkatest.StateRecord(t, changed, 4), 2),
		in(kafkatest.StateRecord(t, quiet, 2), 2),
	)
	produce := addPartitions(t, cluster, 4)
	c := readOnly(t, cluster) // its metadata of the topic is not cached from before
	produce(
		// deleted: no record left in its new partition (its tombstone
		// compacted away).
		in(kafkatest.StateRecord(t, changed, 1), 4), // deleted and taken again
		in(kafkatest.StateRecord(t, quiet, 2), 4),   // the worker's republish
	)
	table, err := c.Locks(ctxT(t))
	require.NoError(t, err)
	got := map[string]int64{}
	for _, lr := range table {
		got[lr.Name] = lr.Revision
	}
	require.Equal(t, map[string]int64{changed: 1, quiet: 2}, got)
}

// A watch started before partitions were added to the lock state topic
// moves to the partition its key hashes to now and reads it from its
// start: it delivers the lock's states written there since (newer than
// the last it delivered), and no longer those of its old partition.
func TestWatchMovesToTheKeysNewPartition(t *testing.T) {
	client.SetPartitionCheck(t, 50*time.Millisecond)
	ctx := ctxT(t)
	lock := movedKeys(t, 1, 2, 4)[0]
	cluster, _ := kafkatest.StateTopic(t, 2, in(kafkatest.StateRecord(t, lock, 1), 2))
	c := readOnly(t, cluster)
	ch, err := c.Watch(ctx, lock)
	require.NoError(t, err)
	require.EqualValues(t, 1, next(t, ch).Revision)

	produce := addPartitions(t, cluster, 4)
	produce(in(kafkatest.StateRecord(t, lock, 2), 4), in(kafkatest.StateRecord(t, lock, 1), 4)) // a copy of 1 republished
	require.EqualValues(t, 2, next(t, ch).Revision, "read in the key's new partition")
	produce(in(kafkatest.StateRecord(t, lock, 9), 2), in(kafkatest.StateRecord(t, lock, 3), 4))
	require.EqualValues(t, 3, next(t, ch).Revision, "the old partition's record is not delivered")
}

// A watch whose first fetch reads past the listed end (another lock's
// record written meanwhile to the key's partition) sends the current state
// from within that poll, and still looks up the partition count from then
// on: it moves to the key's new partition once partitions were added.
func TestWatchCaughtUpInItsFirstFetchFollowsMoves(t *testing.T) {
	client.SetPartitionCheck(t, 50*time.Millisecond)
	ctx := ctxT(t)
	lock := movedKeys(t, 1, 2, 4)[0]
	other := ""
	for i := 0; other == ""; i++ {
		if k := fmt.Sprintf("other-%d", i); kafkatest.KeyPartition(k, 2) == kafkatest.KeyPartition(lock, 2) {
			other = k
		}
	}
	cluster, produce := kafkatest.StateTopic(t, 2, in(kafkatest.StateRecord(t, lock, 1), 2))
	// The watch's first fetch waits until the other lock's record is
	// written after the listed end, and so returns both.
	held, release := kafkatest.HoldFirst(cluster, kmsg.Fetch)
	c := readOnly(t, cluster)
	ch, err := c.Watch(ctx, lock)
	require.NoError(t, err)
	<-held
	produce(in(kafkatest.StateRecord(t, other, 1), 2))
	release()
	require.EqualValues(t, 1, next(t, ch).Revision)

	produce = addPartitions(t, cluster, 4)
	produce(in(kafkatest.StateRecord(t, lock, 2), 4))
	require.EqualValues(t, 2, next(t, ch).Revision, "read in the key's new partition")
}

// A watch running while the lock state topic is deleted and created again
// (as docs/design.md advises after two additions of partitions in a row)
// reads the new topic: kgo's reader, which fetches the topic by its ID and
// never adopts a new one, is refused the old one until the watch drops it
// and adds the key's partition of the new one. The worker's republish at
// its next start (the revision delivered already) is not delivered again;
// the lock's next change is.
func TestWatchFollowsTheStateTopicCreatedAgain(t *testing.T) {
	client.SetPartitionCheck(t, 50*time.Millisecond)
	ctx := ctxT(t)
	e := e2e.New(t)
	w := e.StartWorker(e2e.WorkerOpts{Name: "first"}) // creates the topics
	_, err := w.W.PublishFirstStates(ctx)             // records the state topic
	require.NoError(t, err)
	c, err := client.New(ctx, client.Config{Brokers: e.Brokers, Requester: uniq("recreated-state")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	lock := uniq("recreated-state")
	l, err := c.TryAcquire(ctx, lock, client.WithoutKeepAlive(), client.WithLease(time.Minute))
	require.NoError(t, err)
	ch, err := c.Watch(ctx, lock)
	require.NoError(t, err)
	lr := next(t, ch)
	if lr.Revision == 0 {
		// The grant's answer can come before the relay has published its
		// state record: the watch starts with no state, then reads it.
		lr = next(t, ch)
	}
	require.EqualValues(t, 1, lr.Revision)
	require.Equal(t, client.StatusAcquired, lr.Status)

	w = recreateTopic(ctx, t, e, w, e.Names.State)
	_, err = w.W.PublishFirstStates(ctx) // finds the topic created again: republishes revision 1
	require.NoError(t, err)

	require.NoError(t, l.Release(ctx))
	lr = next(t, ch)
	require.EqualValues(t, 2, lr.Revision, "the release, read in the new topic; the republish of revision 1 not delivered again")
	require.Equal(t, client.StatusReleased, lr.Status)
}
