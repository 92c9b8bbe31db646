package client_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/topics"
)

// watchHeld starts c's watch of lock with the cluster's first Fetch held,
// so that a test can move the topic under a watch that has not caught up.
// It returns once that Fetch is held, with the watch's context (ending
// after d), its channel and the Fetch's release.
func watchHeld(t *testing.T, cluster *kfake.Cluster, c *client.Client, lock string, d time.Duration, opts ...client.WatchOption) (context.Context, <-chan client.LockRevision, func()) {
	t.Helper()
	held, release := kafkatest.HoldFirst(cluster, kmsg.Fetch)
	t.Cleanup(release)
	ctx, cancel := context.WithTimeout(ctxT(t), d)
	t.Cleanup(cancel)
	ch, err := c.Watch(ctx, lock, opts...)
	require.NoError(t, err)
	<-held
	return ctx, ch, release
}

// transactional is a producer to the lock state topic that writes in
// transactions, as another producer may (a mirror with exactly-once, a
// stream processor): each record to its Partition, each transaction's end
// a control record (its commit or abort marker) in the partitions it
// wrote to.
func transactional(t *testing.T, cluster *kfake.Cluster) *kgo.Client {
	t.Helper()
	kc, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.DefaultProduceTopic(topics.DefaultNames().State),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID(uniq("state-mirror")))
	require.NoError(t, err)
	t.Cleanup(kc.Close)
	return kc
}

// inTransaction writes recs in one transaction of kc, which commits or
// aborts.
func inTransaction(t *testing.T, kc *kgo.Client, commit kgo.TransactionEndTry, recs ...*kgo.Record) {
	t.Helper()
	ctx := ctxT(t)
	require.NoError(t, kc.BeginTransaction())
	require.NoError(t, kc.ProduceSync(ctx, recs...).FirstErr())
	require.NoError(t, kc.EndTransaction(ctx, commit))
}

// A lock whose partition ends with a transaction's commit marker, which is
// no state: Watch reads the partition to its end all the same and delivers
// the state before it, and Locks returns the table, not waiting for a
// state at the marker's offset.
func TestStateTopicEndingWithACommitMarker(t *testing.T) {
	lock := "committed"
	cluster, _ := kafkatest.StateTopic(t, 1)
	inTransaction(t, transactional(t, cluster), kgo.TryCommit, in(kafkatest.StateRecord(t, lock, 4), 1))
	c, err := client.New(ctxT(t), client.Config{Brokers: cluster.ListenAddrs(), ReadOnly: true, RequestTimeout: 3 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })

	t.Run("Locks", func(t *testing.T) {
		table, err := c.Locks(context.Background())
		require.NoError(t, err)
		require.Len(t, table, 1)
		require.EqualValues(t, 4, table[0].Revision)
	})
	t.Run("Watch", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctxT(t), 5*time.Second)
		defer cancel()
		ch, err := c.Watch(ctx, lock)
		require.NoError(t, err)
		require.EqualValues(t, 4, next(t, ch).Revision)
	})
}

// A state written in a transaction that aborted is no state of the lock:
// Locks and Watch skip it, and Watch delivers the next committed one.
// Neither waits for a transaction still open: its states are not read
// until it commits.
func TestStateTopicAbortedAndOpenTransactions(t *testing.T) {
	lock := "aborted"
	cluster, produce := kafkatest.StateTopic(t, 1, in(kafkatest.StateRecord(t, lock, 4), 1))
	inTransaction(t, transactional(t, cluster), kgo.TryAbort, in(kafkatest.StateRecord(t, lock, 9), 1))
	open := transactional(t, cluster)
	require.NoError(t, open.BeginTransaction())
	require.NoError(t, open.ProduceSync(ctxT(t), in(kafkatest.StateRecord(t, lock, 10), 1)).FirstErr())
	c, err := client.New(ctxT(t), client.Config{Brokers: cluster.ListenAddrs(), ReadOnly: true, RequestTimeout: 3 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })

	table, err := c.Locks(context.Background())
	require.NoError(t, err)
	require.Len(t, table, 1)
	require.EqualValues(t, 4, table[0].Revision, "9 aborted, 10 not committed yet")

	ctx, cancel := context.WithTimeout(ctxT(t), 5*time.Second)
	defer cancel()
	ch, err := c.Watch(ctx, lock)
	require.NoError(t, err)
	require.EqualValues(t, 4, next(t, ch).Revision)
	require.NoError(t, open.EndTransaction(ctxT(t), kgo.TryAbort))
	produce(in(kafkatest.StateRecord(t, lock, 5), 1))
	require.EqualValues(t, 5, next(t, ch).Revision, "10 aborted")
}

// The lock state topic deleted and created again while a watch is still
// reading it up to its listed end (its first fetch held): the watch
// notices the new topic, reads it from its start, and delivers what it
// holds: the workers' republish, or, while it holds nothing yet, the lock
// as the watch read it (nothing: free, revision 0), and the republish
// after.
func TestWatchFollowsTheStateTopicCreatedAgainBeforeCaughtUp(t *testing.T) {
	client.SetPartitionCheck(t, 50*time.Millisecond)
	for _, republished := range []bool{true, false} {
		t.Run(map[bool]string{true: "republished", false: "empty"}[republished], func(t *testing.T) {
			lock := "recreated-early"
			state := topics.DefaultNames().State
			cluster, _ := kafkatest.StateTopic(t, 1, in(kafkatest.StateRecord(t, lock, 3), 1))
			ctx, ch, release := watchHeld(t, cluster, readOnly(t, cluster), lock, 10*time.Second)

			kc, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.DefaultProduceTopic(state))
			require.NoError(t, err)
			defer kc.Close()
			adm := kadm.NewClient(kc)
			_, err = adm.DeleteTopics(ctx, state)
			require.NoError(t, err)
			created, err := adm.CreateTopic(ctx, 1, 1, nil, state)
			require.NoError(t, err)
			require.NoError(t, created.Err)
			republish := func() { require.NoError(t, kc.ProduceSync(ctx, kafkatest.StateRecord(t, lock, 3)).FirstErr()) }
			if republished {
				republish()
			}
			release()

			lr := next(t, ch)
			if lr.Revision == 0 {
				// Listed before the republish: the state it read, none.
				require.Equal(t, client.StatusFree, lr.Status)
				if !republished {
					republish()
				}
				lr = next(t, ch)
			}
			require.EqualValues(t, 3, lr.Revision)
		})
	}
}

// Partitions added while a watch is still reading the key's old partition
// up to its listed end (its first fetch held): the watch moves to the
// key's new partition, lists its end (the one it listed is the old
// one's, which it no longer reads) and delivers the lock as read there.
func TestWatchMovesToTheKeysNewPartitionBeforeCaughtUp(t *testing.T) {
	client.SetPartitionCheck(t, 50*time.Millisecond)
	lock := movedKeys(t, 1, 2, 4)[0]
	cluster, _ := kafkatest.StateTopic(t, 2, in(kafkatest.StateRecord(t, lock, 1), 2))
	ctx, ch, release := watchHeld(t, cluster, readOnly(t, cluster), lock, 10*time.Second)
	listed := make(chan struct{}, 1)
	cluster.ControlKey(int16(kmsg.ListOffsets), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		select {
		case listed <- struct{}{}:
		default:
		}
		return nil, nil, false
	})
	produce := addPartitions(t, cluster, 4)
	produce(in(kafkatest.StateRecord(t, lock, 2), 4))
	select {
	case <-listed: // the watch moved, and lists the new partition's end
	case <-ctx.Done():
		t.Fatal("the watch listed no end after partitions were added")
	}
	release()
	require.EqualValues(t, 2, next(t, ch).Revision, "read in the key's new partition, up to its end")
}

// Partitions added while a watch is still reading the key's old partition
// up to its listed end (its first fetch held), and the new partitions
// without a leader yet when the watch lists the end of the key's new one:
// the others' failures do not matter to it, and its own is retried, told
// to OnFetchError once it lasted the grace. The first state the watch
// delivers is the lock as read up to that end, not what it read so far
// (nothing: free, revision 0) followed by the real state as a change.
func TestWatchMovedBeforeCaughtUpRetriesListingTheKeysPartitionOnly(t *testing.T) {
	client.SetPartitionCheck(t, 50*time.Millisecond)
	client.SetFetchErrorGrace(t, 300*time.Millisecond)
	state := topics.DefaultNames().State
	lock := movedKeys(t, 1, 2, 4)[0]
	p := kafkatest.KeyPartition(lock, 4)
	cluster, _ := kafkatest.StateTopic(t, 2, in(kafkatest.StateRecord(t, lock, 1), 2))
	told := make(toldErrors, 10)
	ctx, ch, release := watchHeld(t, cluster, readOnly(t, cluster), lock, 10*time.Second, told.opt())
	noLeader := func(parts ...int32) *kfake.FaultHandle {
		return cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.ListOffsets}, Topic: state, Partitions: parts,
			Err: kerr.LeaderNotAvailable, Count: -1})
	}
	others := noLeader(slices.DeleteFunc([]int32{0, 1, 2, 3}, func(q int32) bool { return q == p })...)
	defer others.Remove()
	own := noLeader(p)
	defer own.Remove()
	produce := addPartitions(t, cluster, 4)
	produce(in(kafkatest.StateRecord(t, lock, 2), 4))
	require.Eventually(t, func() bool { return own.Hits() > 0 }, 5*time.Second, 10*time.Millisecond,
		"the watch moved to the key's new partition")
	release()

	select {
	case lr := <-ch:
		t.Fatalf("delivered revision %d (%s) while the end of partition %d could not be listed", lr.Revision, lr.Status, p)
	case err := <-told:
		require.ErrorIs(t, err, client.ErrUnreachable)
		require.ErrorIs(t, err, kerr.LeaderNotAvailable)
	case <-ctx.Done():
		t.Fatal("nothing delivered nor told")
	}
	own.Remove()
	require.EqualValues(t, 2, next(t, ch).Revision, "read in the key's new partition, up to its end")
	require.NoError(t, told.next(t), "its end listed")
}

// Locks joins the error of a record batch it skipped unread to an
// *UnreadableStateError: a caller that keeps the table when none of its
// namespace's locks is left out (ExampleClient_Locks) still has to tell the
// skipped batch, whose locks are unknown, maybe its own.
func TestLocksJoinsASkippedBatchToUnreadableLocks(t *testing.T) {
	cluster, c, _ := stateTopic(t, kafkatest.StateRecord(t, "job", 1), unreadable("other/x"))
	kafkatest.Corrupt(t, cluster, topics.DefaultNames().State, 0, "job")
	table, err := c.Locks(ctxT(t))
	var ue *client.UnreadableStateError
	require.ErrorAs(t, err, &ue)
	require.False(t, ue.AffectsNamespace("mine"))
	require.ErrorIs(t, err, kgo.ErrMaxDecompress)
	require.Len(t, table, 1)
}

// TestWatchReadsWhileRetryingTheListingOfItsNewPartition: while the end of
// the key's new partition cannot be listed (a move before the watch caught
// up), the watch still reads that partition's records between the
// listing's tries, so the state delivered first is the partition's, not
// the one read before the move (free, revision 0) once the listing gives
// up: kgo hands no buffered records to a poll whose context has ended.
func TestWatchReadsWhileRetryingTheListingOfItsNewPartition(t *testing.T) {
	client.SetPartitionCheck(t, 50*time.Millisecond)
	state := topics.DefaultNames().State
	lock := movedKeys(t, 1, 2, 4)[0]
	p := kafkatest.KeyPartition(lock, 4)
	cluster, _ := kafkatest.StateTopic(t, 2, in(kafkatest.StateRecord(t, lock, 1), 2))
	c, err := client.New(ctxT(t), client.Config{Brokers: cluster.ListenAddrs(), ReadOnly: true, RequestTimeout: 3 * time.Second})
	require.NoError(t, err)
	defer c.Close()
	ctx, ch, release := watchHeld(t, cluster, c, lock, 20*time.Second)
	// Only the watch's own listing of the end (timestamp -1) fails; the
	// consumer's listing of the start (AtStart: -2), and its fetches, work.
	own := cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.ListOffsets}, Topic: state, Partitions: []int32{p},
		Err: kerr.LeaderNotAvailable, Count: -1, When: func(req kmsg.Request) bool {
			for _, tp := range req.(*kmsg.ListOffsetsRequest).Topics {
				for _, pp := range tp.Partitions {
					if pp.Partition == p && pp.Timestamp == -1 {
						return true
					}
				}
			}
			return false
		}})
	defer own.Remove()
	produce := addPartitions(t, cluster, 4)
	produce(in(kafkatest.StateRecord(t, lock, 2), 4))
	require.Eventually(t, func() bool { return own.Hits() > 0 }, 5*time.Second, 10*time.Millisecond)
	release()
	select {
	case lr := <-ch:
		t.Logf("first delivered: revision %d (%s); listing attempts %d", lr.Revision, lr.Status, own.Hits())
		require.EqualValues(t, 2, lr.Revision, "the record of the new partition, fetchable all along, was not read while the listing was pending")
	case <-ctx.Done():
		t.Fatal("never delivered")
	}
}
