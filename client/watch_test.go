package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/topics"
)

// next receives the next revision Watch delivers.
func next(t *testing.T, ch <-chan client.LockRevision) client.LockRevision {
	t.Helper()
	select {
	case lr, ok := <-ch:
		require.True(t, ok, "watch ended")
		return lr
	case <-time.After(20 * time.Second):
		t.Fatal("no revision within 20 s")
	}
	return client.LockRevision{}
}

func owners(lr client.LockRevision) []string {
	var out []string
	for _, h := range lr.Holders {
		out = append(out, h.Owner)
	}
	return out
}

// Watch delivers the lock as it is, then every change once, in revision
// order, across a hand-off; a watch started later starts from the
// current state, read back from the lock state topic; Locks lists it.
func TestWatch(t *testing.T) {
	ctx := ctxT(t)
	c := newClient(t, "watcher")
	lock := uniq("watched")

	ch, err := c.Watch(ctx, lock)
	require.NoError(t, err)
	first := next(t, ch)
	require.Equal(t, int64(0), first.Revision, "a lock never used has no state yet")
	require.Equal(t, client.StatusFree, first.Status)
	require.Equal(t, lock, first.Name)
	require.Equal(t, topics.LockState{V: topics.Version, LockName: lock, Status: topics.StatusFree, Limit: 1, Holders: []topics.Holder{}},
		first.Record, "a free lock's record, for those who pass it on as JSON")

	a, err := c.TryAcquire(ctx, lock, client.WithOwner("a"), client.WithoutKeepAlive(), client.WithLease(time.Minute))
	require.NoError(t, err)
	require.Equal(t, int64(1), a.Info().Revision)
	queued := make(chan int, 1)
	granted := make(chan *client.Lease, 1)
	go func() {
		l, err := c.Acquire(ctx, lock, client.WithOwner("b"), client.WithoutKeepAlive(), client.WithLease(time.Minute),
			client.OnQueued(func(p int) { queued <- p }))
		if err == nil {
			granted <- l
		}
	}()
	<-queued
	require.NoError(t, a.Release(ctx))
	b := <-granted
	require.Equal(t, int64(3), b.Info().Revision, "the release and the grant it caused are one change")
	require.NoError(t, b.Release(ctx))

	type view struct {
		Rev     int64
		Status  client.Status
		Holders []string
		Waiters int
		Op      string
	}
	var got []view
	for range 4 {
		lr := next(t, ch)
		got = append(got, view{lr.Revision, lr.Status, owners(lr), lr.Waiters, lr.Operation})
	}
	require.Equal(t, []view{
		{1, client.StatusAcquired, []string{"a"}, 0, "acquire"},
		{2, client.StatusAcquired, []string{"a"}, 1, "acquire"},
		{3, client.StatusAcquired, []string{"b"}, 0, "release"},
		{4, client.StatusReleased, nil, 0, "release"},
	}, got)

	later, err := c.Watch(ctx, lock)
	require.NoError(t, err)
	now := next(t, later)
	require.Equal(t, int64(4), now.Revision, "a new watch starts from the state the topic holds")
	require.Equal(t, client.StatusReleased, now.Status)

	table, err := c.Locks(ctx)
	require.NoError(t, err)
	var found *client.LockRevision
	for i := range table {
		if table[i].Name == lock {
			found = &table[i]
		}
	}
	require.NotNil(t, found, "Locks lists the lock")
	require.Equal(t, int64(4), found.Revision)

	_, err = c.Watch(ctx, "")
	require.ErrorIs(t, err, client.ErrInvalidRequest)

	// The watch ends with its context.
	wctx, cancel := context.WithCancel(ctx)
	ended, err := c.Watch(wctx, lock)
	require.NoError(t, err)
	next(t, ended)
	cancel()
	for range ended {
	}
}

// Two locks may share a key on the lock state topic (lock "b" in namespace
// n, lock "n/b" in the default one): Watch delivers only its own lock's
// changes, and Locks lists both.
func TestWatchLocksSharingAKey(t *testing.T) {
	ctx := ctxT(t)
	n := uniq("shared-key")
	inNS := newClient(t, "keys-ns", func(c *client.Config) { c.Namespace = n })
	plain := newClient(t, "keys-plain")
	ch, err := plain.Watch(ctx, n+"/b")
	require.NoError(t, err)
	require.Equal(t, int64(0), next(t, ch).Revision)

	x, err := inNS.TryAcquire(ctx, "b", client.WithOwner("x"), client.WithoutKeepAlive(), client.WithLease(time.Minute))
	require.NoError(t, err)
	y, err := plain.TryAcquire(ctx, n+"/b", client.WithOwner("y"), client.WithoutKeepAlive(), client.WithLease(time.Minute))
	require.NoError(t, err)
	lr := next(t, ch)
	require.Equal(t, []string{"y"}, owners(lr), "not the other lock's holder")
	require.Equal(t, n+"/b", lr.Name)

	table, err := plain.Locks(ctx)
	require.NoError(t, err)
	var got []string
	for _, l := range table {
		if l.Namespace == n || l.Name == n+"/b" {
			got = append(got, l.Namespace+" "+l.Name+" "+owners(l)[0])
		}
	}
	require.Equal(t, []string{" " + n + "/b y", n + " b x"}, got)
	require.NoError(t, x.Release(ctx))
	require.NoError(t, y.Release(ctx))
}

// A read-only client watches a lock and lists the table without a reply
// topic: it asks Kafka nothing about one (a requester that may read the
// state topic only can use it), and every command fails with ErrReadOnly,
// even one that is invalid too, without a record produced.
func TestReadOnly(t *testing.T) {
	ctx := ctxT(t)
	requester := uniq("read-only")
	replies := env.Cluster.Fault(kfake.Fault{Topic: topics.DefaultNames().ReplyTopic(requester), Count: -1, Observe: true})
	t.Cleanup(replies.Remove)
	var produced producedCount
	kc, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...), kgo.WithHooks(&produced))
	require.NoError(t, err)
	t.Cleanup(kc.Close)
	r := newClient(t, requester, func(cfg *client.Config) { cfg.ReadOnly, cfg.Client = true, kc })
	require.Empty(t, r.ReplyTopic(), "it has none")
	lock := uniq("read-only")
	ch, err := r.Watch(ctx, lock)
	require.NoError(t, err)
	require.Equal(t, client.StatusFree, next(t, ch).Status)
	leaders, err := client.NewElection(r, lock).Observe(ctx)
	require.NoError(t, err)

	w := newClient(t, uniq("writer"))
	l, err := w.TryAcquire(ctx, lock, client.WithLease(time.Minute))
	require.NoError(t, err)
	require.Equal(t, client.StatusAcquired, next(t, ch).Status)
	require.Equal(t, l.Token, (<-leaders).Token, "Observe")
	require.NoError(t, l.Release(ctx))
	require.Equal(t, client.StatusReleased, next(t, ch).Status)
	table, err := r.Locks(ctx)
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(table, func(lr client.LockRevision) bool { return lr.Name == lock }), "Locks lists the lock")

	election := client.NewElection(r, lock)
	for what, op := range map[string]func() error{
		"TryAcquire": func() error { _, err := r.TryAcquire(ctx, lock); return err },
		"WithLock": func() error {
			return client.WithLock(ctx, r, lock, func(context.Context, *client.Lease) error { return nil })
		},
		"Query":   func() error { _, err := r.Query(ctx, lock); return err },
		"Cleanup": func() error { _, err := r.Cleanup(ctx, lock, 0); return err },
		"Revoke":  func() error { _, err := r.Revoke(ctx, lock, "someone", "test"); return err },
		"NewSession over the contract's ttl": func() error {
			_, err := r.NewSession(ctx, 2*time.Hour)
			return err
		},
		"Do of an unknown operation": func() error {
			_, err := r.Do(ctx, topics.Command{Operation: "nonsense", LockName: lock})
			return err
		},
		"Campaign": func() error { _, err := election.Campaign(ctx, "v"); return err },
		"Leader":   func() error { _, err := election.Leader(ctx); return err },
	} {
		require.ErrorIs(t, op(), client.ErrReadOnly, what)
	}
	require.Zero(t, produced.n.Load(), "records produced")
	require.Zero(t, replies.Hits(), "requests about the reply topic")
	require.NoError(t, r.Close())
	for range ch { // the watch ends with the client
	}
}

// producedCount counts the records a kgo client was asked to produce.
type producedCount struct{ n atomic.Int64 }

func (p *producedCount) OnProduceRecordBuffered(*kgo.Record) { p.n.Add(1) }

// stateTopic is a broker whose lock state topic (one partition) holds
// recs, and a read-only client of it; produce adds records.
func stateTopic(t *testing.T, recs ...*kgo.Record) (cluster *kfake.Cluster, c *client.Client, produce func(...*kgo.Record)) {
	t.Helper()
	return statePartitions(t, 1, recs...)
}

// statePartitions is stateTopic with n partitions; a record goes to its
// Partition.
func statePartitions(t *testing.T, n int32, recs ...*kgo.Record) (cluster *kfake.Cluster, c *client.Client, produce func(...*kgo.Record)) {
	t.Helper()
	cluster, produce = kafkatest.StateTopic(t, n, recs...)
	c, err := client.New(ctxT(t), client.Config{Brokers: cluster.ListenAddrs(), ReadOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return cluster, c, produce
}

// unreadable is a record of key that no lock state decodes from: here a
// renamed field, as a format this client does not read would have.
func unreadable(key string) *kgo.Record {
	return &kgo.Record{Key: []byte(key), Value: []byte(`{"name": "` + key + `", "revision": 9}`)}
}

// A record of the lock state topic that cannot be decoded does not fail
// Locks: the locks of its key are left out (not shown as their older
// state) unless a readable record of the key follows, and Locks returns
// the table of the rest with an *UnreadableStateError counting them.
func TestLocksLeavesOutUnreadableLocks(t *testing.T) {
	ctx := ctxT(t)
	_, c, _ := stateTopic(t,
		kafkatest.StateRecord(t, "gone", 1), unreadable("gone"), // its newest state cannot be read
		kafkatest.StateRecord(t, "job", 1),
		unreadable("back"), kafkatest.StateRecord(t, "back", 2), // read again since
	)
	table, err := c.Locks(ctx)
	var ue *client.UnreadableStateError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, 1, ue.Keys)
	require.Equal(t, 2, ue.Records)
	require.ErrorContains(t, ue.First, `key "gone"`)
	require.ErrorContains(t, err, "left out")
	var names []string
	for _, lr := range table {
		names = append(names, lr.Name)
	}
	require.Equal(t, []string{"back", "job"}, names, "gone is left out, not shown at revision 1")

	require.Len(t, ue.Locks, 1)
	require.Equal(t, client.UnreadableLock{Key: "gone", Known: true, Name: "gone", Err: ue.First}, ue.Locks[0])
	require.True(t, ue.AffectsNamespace(""))
	require.False(t, ue.AffectsNamespace("other"))

	_, clean, _ := stateTopic(t, kafkatest.StateRecord(t, "job", 1))
	table, err = clean.Locks(ctx)
	require.NoError(t, err)
	require.Len(t, table, 1)
}

// Locks tells which locks it left out: by the record's namespace and
// lock_name when they make its key, else by the key alone. A readable
// record of another lock of the same key does not make up for one.
func TestLocksNamesUnreadableLocks(t *testing.T) {
	nsRecord := func(ns, name string, rev int64) *kgo.Record {
		b, err := topics.LockState{Namespace: ns, LockName: name, Revision: rev, Status: topics.StatusReleased, Limit: 1}.Encode()
		require.NoError(t, err)
		return &kgo.Record{Key: []byte(topics.LockKey(ns, name)), Value: b}
	}
	_, c, _ := stateTopic(t,
		nsRecord("a", "b", 1),
		&kgo.Record{Key: []byte("a/b"), Value: []byte(`{"namespace": "a", "lock_name": "b", "revision": "two"}`)},
		nsRecord("", "a/b", 1), // another lock of key "a/b"
		unreadable("x/y"),      // which lock of "x/y" it is, the key does not say
	)
	table, err := c.Locks(ctxT(t))
	var ue *client.UnreadableStateError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, 2, ue.Keys)
	require.Len(t, ue.Locks, 2)
	require.Equal(t, client.UnreadableLock{Key: "a/b", Known: true, Namespace: "a", Name: "b", Err: ue.Locks[0].Err}, ue.Locks[0])
	require.Equal(t, "x/y", ue.Locks[1].Key)
	require.False(t, ue.Locks[1].Known)
	require.True(t, ue.AffectsNamespace("a"))
	require.True(t, ue.AffectsNamespace("x"))
	require.True(t, ue.AffectsNamespace(""), `"x/y" may be a lock of the default namespace`)
	require.False(t, ue.AffectsNamespace("other"))
	require.ErrorContains(t, err, `"a/b", "x/y"`)
	require.Len(t, table, 1)
	require.Equal(t, "a/b", table[0].Name)
	require.Empty(t, table[0].Namespace)
}

// A state whose namespace and lock_name do not make its record's key (no
// worker writes one; another producer could) is no state of that lock:
// Locks does not show it, not even after the lock's tombstone, and leaves
// the key's lock out as for any record it cannot read; Watch of the key's
// lock tells it unknown.
func TestStateOfAnotherKeyIsUnreadable(t *testing.T) {
	ctx := ctxT(t)
	b, err := topics.LockState{LockName: "b", Revision: 5, Status: topics.StatusAcquired, Limit: 1}.Encode()
	require.NoError(t, err)
	_, c, _ := stateTopic(t,
		kafkatest.StateRecord(t, "a", 1), kafkatest.StateRecord(t, "b", 1), &kgo.Record{Key: []byte("b")}, // b deleted
		&kgo.Record{Key: []byte("a"), Value: b})
	table, err := c.Locks(ctx)
	var ue *client.UnreadableStateError
	require.ErrorAs(t, err, &ue, "the table: %v", table)
	require.Empty(t, table, "b is deleted, and a's newest record is no state of a")
	require.Len(t, ue.Locks, 1)
	require.Equal(t, client.UnreadableLock{Key: "a", Known: true, Name: "a", Err: ue.First}, ue.Locks[0])
	require.ErrorContains(t, ue.First, `record of key "a" at partition 0, offset 3: decoding lock state: a state of lock "b", not of its key`)

	ch, err := c.Watch(ctx, "a")
	require.NoError(t, err)
	require.EqualError(t, next(t, ch).Unreadable, ue.First.Error())
}

// Watch delivers a lock whose newest record cannot be decoded as unknown
// (Unreadable), once, not as its last readable state, until a newer
// readable revision comes; a copy of an older one does not count.
func TestWatchUnreadable(t *testing.T) {
	ctx := ctxT(t)
	_, c, produce := stateTopic(t, kafkatest.StateRecord(t, "job", 1), unreadable("job"))
	ch, err := c.Watch(ctx, "job")
	require.NoError(t, err)
	lr := next(t, ch)
	require.ErrorContains(t, lr.Unreadable, `key "job"`, "the newest state is unknown, not revision 1")
	require.Equal(t, "job", lr.Name)
	require.Zero(t, lr.Revision)

	produce(unreadable("job"), kafkatest.StateRecord(t, "job", 1), kafkatest.StateRecord(t, "job", 2))
	lr = next(t, ch)
	require.NoError(t, lr.Unreadable, "said once; revision 1 again is a copy")
	require.Equal(t, int64(2), lr.Revision)

	produce(unreadable("job"))
	require.Error(t, next(t, ch).Unreadable)
	produce(kafkatest.StateRecord(t, "job", 3))
	require.Equal(t, int64(3), next(t, ch).Revision)

	// A tombstone ends an unknown state too, even after one already read
	// (as Locks takes it).
	tombstone := &kgo.Record{Key: []byte("job")}
	produce(tombstone)
	require.True(t, next(t, ch).Deleted)
	produce(unreadable("job"))
	require.Error(t, next(t, ch).Unreadable)
	produce(tombstone)
	lr = next(t, ch)
	require.True(t, lr.Deleted, "the lock deleted, not still unknown")
	require.NoError(t, lr.Unreadable)
}

// at is the time s seconds into 2026, a changed_at for stateAt.
func at(s int) time.Time {
	return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(s) * time.Second)
}

// onlyLock is the one lock Locks reads from a state topic of recs.
func onlyLock(t *testing.T, recs ...*kgo.Record) client.LockRevision {
	t.Helper()
	_, c, _ := stateTopic(t, recs...)
	table, err := c.Locks(ctxT(t))
	require.NoError(t, err)
	require.Len(t, table, 1)
	return table[0]
}

// stateAt is a record of the lock state topic: lock, released, at rev,
// changed at at by operation op.
func stateAt(t *testing.T, lock string, rev int64, op string, at time.Time) *kgo.Record {
	t.Helper()
	b, err := topics.LockState{LockName: lock, Revision: rev, Status: topics.StatusReleased, Limit: 1, Operation: op,
		ChangedAt: topics.NewTime(at)}.Encode()
	require.NoError(t, err)
	return &kgo.Record{Key: []byte(lock), Value: b}
}

// A watch that missed the tombstone between two lives of its lock
// (compacted away while its receiver lagged: here never written) takes
// the new life's records, whose revisions start over, by their later
// changed_at; copies of the old life's, an older revision landing late
// and a worker's republish (its changed_at later, its revision not) are
// still dropped.
func TestWatchTellsANewLifeFromACopy(t *testing.T) {
	ctx := ctxT(t)
	_, c, produce := stateTopic(t, stateAt(t, "job", 40, "release", at(40)))
	ch, err := c.Watch(ctx, "job")
	require.NoError(t, err)
	require.EqualValues(t, 40, next(t, ch).Revision)

	produce(
		stateAt(t, "job", 40, "release", at(40)),   // a copy
		stateAt(t, "job", 39, "acquire", at(39)),   // an older revision, late
		stateAt(t, "job", 40, "republish", at(50)), // a worker's republish
		stateAt(t, "job", 1, "acquire", at(100)),   // the new life
	)
	lr := next(t, ch)
	require.EqualValues(t, 1, lr.Revision, "the new life's first revision")
	require.Equal(t, at(100), lr.ChangedAt)
	produce(
		stateAt(t, "job", 1, "acquire", at(100)), // a copy
		stateAt(t, "job", 1, "republish", at(150)),
		stateAt(t, "job", 2, "release", at(200)),
	)
	require.EqualValues(t, 2, next(t, ch).Revision, "the new life's next change")
}

// The relay publishes at least once: a lock's last record and its
// tombstone published again after them are copies of the life the
// tombstone ended, not the lock's state again (naming an old holder as
// the current one); the new life's first record, its changed_at later
// than the ended life's, is taken.
func TestWatchDropsCopiesAfterATombstone(t *testing.T) {
	ctx := ctxT(t)
	_, c, produce := stateTopic(t, stateAt(t, "job", 4, "acquire", at(4)))
	ch, err := c.Watch(ctx, "job")
	require.NoError(t, err)
	require.EqualValues(t, 4, next(t, ch).Revision)

	tombstone := &kgo.Record{Key: []byte("job")}
	produce(
		stateAt(t, "job", 5, "acquire", at(5)), tombstone,
		stateAt(t, "job", 5, "acquire", at(5)), tombstone, // published again
		stateAt(t, "job", 1, "acquire", at(100)), // the new life
	)
	require.EqualValues(t, 5, next(t, ch).Revision)
	require.True(t, next(t, ch).Deleted)
	lr := next(t, ch)
	require.False(t, lr.Deleted)
	require.EqualValues(t, 1, lr.Revision, "the new life's first revision, not the deleted life's again")
	require.Equal(t, at(100), lr.ChangedAt)
}

// After a tombstone, Watch tells the copies of the life it ended by their
// revision and changed_at, not by PostgreSQL's clock: the new life's first
// record, stamped before the ended life's last change (that clock stepped
// back, or a failover to a standby whose clock is behind), is the lock's
// state at once, and copies of the ended life's records, before it or
// after it at higher revisions, are dropped.
func TestWatchTakesANewLifeStampedEarlierAfterATombstone(t *testing.T) {
	tombstone := &kgo.Record{Key: []byte("job")}
	ended := []*kgo.Record{stateAt(t, "job", 4, "acquire", at(4)), stateAt(t, "job", 5, "release", at(5))}

	t.Run("live", func(t *testing.T) {
		_, c, produce := stateTopic(t, ended...)
		ch, err := c.Watch(ctxT(t), "job")
		require.NoError(t, err)
		require.EqualValues(t, 5, next(t, ch).Revision)
		produce(tombstone, stateAt(t, "job", 5, "release", at(5)), tombstone, // published again
			stateAt(t, "job", 1, "acquire", at(3)),                                         // the new life
			stateAt(t, "job", 4, "acquire", at(4)), stateAt(t, "job", 5, "release", at(5)), // published again
			stateAt(t, "job", 2, "release", at(6)))
		require.True(t, next(t, ch).Deleted)
		lr := next(t, ch)
		require.EqualValues(t, 1, lr.Revision, "the new life's first revision, stamped before the ended life's last")
		require.Equal(t, at(3), lr.ChangedAt)
		lr = next(t, ch)
		require.EqualValues(t, 2, lr.Revision, "the new life's next change, not the ended life's copies")
		require.Equal(t, at(6), lr.ChangedAt)
	})
	t.Run("started after", func(t *testing.T) {
		_, c, _ := stateTopic(t, append(slices.Clone(ended), tombstone, stateAt(t, "job", 1, "acquire", at(3)))...)
		ch, err := c.Watch(ctxT(t), "job")
		require.NoError(t, err)
		lr := next(t, ch)
		require.False(t, lr.Deleted, "the lock is held")
		require.EqualValues(t, 1, lr.Revision)
		require.Equal(t, at(3), lr.ChangedAt)
	})
}

// Locks takes a lock's new life by Watch's rule: a lower revision with a
// later changed_at replaces the one taken, here after a record of the old
// life landed late, past the new life's first; copies, an older revision
// landing late and a worker's republish do not.
func TestLocksTellsANewLifeFromACopy(t *testing.T) {
	lock := onlyLock(t,
		stateAt(t, "job", 40, "release", at(40)),
		stateAt(t, "job", 1, "acquire", at(100)),   // the new life
		stateAt(t, "job", 40, "release", at(40)),   // the old life's, late
		stateAt(t, "job", 2, "release", at(200)),   // the new life's next change
		stateAt(t, "job", 2, "release", at(200)),   // a copy
		stateAt(t, "job", 1, "acquire", at(100)),   // an older revision, late
		stateAt(t, "job", 2, "republish", at(250)), // a worker's republish
	)
	require.EqualValues(t, 2, lock.Revision, "the new life's")
	require.Equal(t, at(200), lock.ChangedAt)
}

// Locks takes a lock's new life after its tombstone by Watch's rule, its
// first record stamped before the ended life's last change (PostgreSQL's
// clock stepped back) too, and drops the ended life's copies that follow
// it at higher revisions.
func TestLocksTakesANewLifeStampedEarlierAfterATombstone(t *testing.T) {
	lock := onlyLock(t,
		stateAt(t, "job", 4, "acquire", at(4)), stateAt(t, "job", 5, "release", at(5)), &kgo.Record{Key: []byte("job")},
		stateAt(t, "job", 1, "acquire", at(3)),                                         // the new life
		stateAt(t, "job", 4, "acquire", at(4)), stateAt(t, "job", 5, "release", at(5)), // published again
	)
	require.EqualValues(t, 1, lock.Revision, "the new life's")
	require.Equal(t, at(3), lock.ChangedAt)
}

// Locks reads the topic from brokers it reached. When they stop answering
// fetches, it fails with ErrUnreachable, as its setup would, with the fetch
// errors and ctx's error. When they answer but the read outlasts ctx's
// deadline, that is the caller's deadline, not an unreachable Kafka: ctx's
// error and its cause. A ctx without a deadline gets RequestTimeout without
// a record read, then ErrUnreachable, rather than waiting forever.
func TestLocksCutOff(t *testing.T) {
	t.Run("fetches fail", func(t *testing.T) {
		cluster, c, _ := stateTopic(t, kafkatest.StateRecord(t, "job", 1))
		cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Err: kerr.NotLeaderForPartition, Count: -1})
		short, cancel := context.WithTimeout(ctxT(t), time.Second)
		defer cancel()
		_, err := c.Locks(short)
		require.ErrorIs(t, err, client.ErrUnreachable)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, kerr.NotLeaderForPartition)
	})
	t.Run("slow brokers", func(t *testing.T) {
		cluster, c, _ := stateTopic(t, kafkatest.StateRecord(t, "job", 1))
		held, release := kafkatest.HoldFirst(cluster, kmsg.Fetch)
		defer release()
		tooLong := errors.New("the table took too long")
		short, cancel := context.WithDeadlineCause(ctxT(t), time.Now().Add(time.Second), tooLong)
		defer cancel()
		_, err := c.Locks(short)
		<-held
		require.NotErrorIs(t, err, client.ErrUnreachable)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, tooLong, "the deadline's cause")
	})
	t.Run("no deadline", func(t *testing.T) {
		cluster, _, _ := stateTopic(t, kafkatest.StateRecord(t, "job", 1))
		c, err := client.New(ctxT(t), client.Config{Brokers: cluster.ListenAddrs(), ReadOnly: true, RequestTimeout: time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Err: kerr.NotLeaderForPartition, Count: -1})
		start := time.Now()
		_, err = c.Locks(context.Background())
		require.ErrorIs(t, err, client.ErrUnreachable)
		require.ErrorContains(t, err, "no record of")
		require.ErrorIs(t, err, kerr.NotLeaderForPartition)
		require.Less(t, time.Since(start), 10*time.Second)
	})
	t.Run("one partition fails while another gets writes", func(t *testing.T) {
		// Records of a partition read to its end are no progress, and
		// do not hide the errors of the partition still to be read.
		on := func(p int32, r *kgo.Record) *kgo.Record { r.Partition = p; return r }
		cluster, _, produce := statePartitions(t, 2, on(0, kafkatest.StateRecord(t, "a", 1)), on(1, kafkatest.StateRecord(t, "b", 1)))
		c, err := client.New(ctxT(t), client.Config{Brokers: cluster.ListenAddrs(), ReadOnly: true, RequestTimeout: time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Partitions: []int32{1}, Err: kerr.NotLeaderForPartition, Count: -1})
		writes, stop := context.WithCancel(ctxT(t))
		done := make(chan struct{})
		defer func() { stop(); <-done }()
		go func() {
			defer close(done)
			for rev := int64(2); writes.Err() == nil; rev++ {
				produce(on(0, kafkatest.StateRecord(t, "a", rev)))
				time.Sleep(20 * time.Millisecond)
			}
		}()
		start := time.Now()
		_, err = c.Locks(context.Background())
		require.ErrorIs(t, err, client.ErrUnreachable, "without a deadline")
		require.ErrorIs(t, err, kerr.NotLeaderForPartition)
		require.Less(t, time.Since(start), 10*time.Second)

		short, cancel := context.WithTimeout(ctxT(t), 2*time.Second)
		defer cancel()
		_, err = c.Locks(short)
		require.ErrorIs(t, err, client.ErrUnreachable, "with a deadline")
		require.ErrorIs(t, err, kerr.NotLeaderForPartition)
	})
	t.Run("brokers gone", func(t *testing.T) {
		cluster, _, _ := stateTopic(t, kafkatest.StateRecord(t, "job", 1))
		c, err := client.New(ctxT(t), client.Config{Brokers: cluster.ListenAddrs(), ReadOnly: true, RequestTimeout: time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		held, release := kafkatest.HoldFirst(cluster, kmsg.Fetch)
		defer release()
		go func() { <-held; cluster.Close() }()
		start := time.Now()
		_, err = c.Locks(context.Background())
		require.ErrorIs(t, err, client.ErrUnreachable)
		require.ErrorContains(t, err, "request to broker", "the failed fetch")
		require.Less(t, time.Since(start), 10*time.Second)
	})
}

// An older revision of a lock read after a newer one (published again by
// the relay, or by a replica overlapping a failover) does not replace it in
// Locks's table, nor brings back a lock an unreadable record left out, or
// one a tombstone removed (the relay published its last record again,
// read before the tombstone's copy); a new life after a tombstone starts
// the lock afresh.
func TestLocksKeepsTheNewestRevision(t *testing.T) {
	_, c, _ := stateTopic(t,
		kafkatest.StateRecord(t, "job", 4), kafkatest.StateRecord(t, "job", 5), kafkatest.StateRecord(t, "job", 4),
		stateAt(t, "again", 7, "release", at(7)), &kgo.Record{Key: []byte("again")},
		stateAt(t, "again", 7, "release", at(7)), stateAt(t, "again", 1, "acquire", at(100)),
		stateAt(t, "gone", 5, "release", at(5)), &kgo.Record{Key: []byte("gone")}, stateAt(t, "gone", 5, "release", at(5)),
		kafkatest.StateRecord(t, "newer", 5), unreadable("newer"), kafkatest.StateRecord(t, "newer", 5),
	)
	table, err := c.Locks(ctxT(t))
	var ue *client.UnreadableStateError
	require.ErrorAs(t, err, &ue)
	require.Len(t, ue.Locks, 1)
	require.Equal(t, "newer", ue.Locks[0].Name, "left out, not shown at the revision read again")
	require.Len(t, table, 2, "not the lock removed")
	require.Equal(t, "again", table[0].Name)
	require.EqualValues(t, 1, table[0].Revision)
	require.Equal(t, "job", table[1].Name)
	require.EqualValues(t, 5, table[1].Revision)
}

// Locks and Watch refused by Kafka (no Describe ACL on the lock state
// topic) fail at once with ErrForbidden, as New does for its reply topic,
// not as unreachable.
func TestLocksForbidden(t *testing.T) {
	cluster, c, _ := stateTopic(t, kafkatest.StateRecord(t, "job", 1))
	cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.ListOffsets}, Topic: topics.DefaultNames().State,
		Err: kerr.TopicAuthorizationFailed, Count: -1})
	start := time.Now()
	_, err := c.Locks(ctxT(t))
	require.ErrorIs(t, err, client.ErrForbidden)
	require.NotErrorIs(t, err, client.ErrUnreachable)
	require.ErrorContains(t, err, "TOPIC_AUTHORIZATION_FAILED")
	_, err = c.Watch(ctxT(t), "job")
	require.ErrorIs(t, err, client.ErrForbidden)
	require.Less(t, time.Since(start), 5*time.Second, "at once")
}

// toldErrors collects what OnFetchError tells.
type toldErrors chan error

func (c toldErrors) opt() client.WatchOption {
	return client.OnFetchError(func(err error) { c <- err })
}

// next receives the next error told.
func (c toldErrors) next(t *testing.T) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("nothing told within 20 s")
	}
	return nil
}

// refuseFetches has cluster answer the Fetch requests with
// TOPIC_AUTHORIZATION_FAILED for the partition (as without the Read ACL),
// count of them (-1: until Remove).
func refuseFetches(cluster *kfake.Cluster, count int) *kfake.FaultHandle {
	return cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Err: kerr.TopicAuthorizationFailed, Count: count})
}

// Fetches Kafka refuses while a watch follows its lock are told to
// OnFetchError once the refusal lasted the grace, once while it lasts
// though kgo retries them all along, then nil once two fetches in a row
// succeed again, without a new record of the partition.
func TestWatchTellsOfFetchErrors(t *testing.T) {
	const grace = time.Second
	client.SetFetchErrorGrace(t, grace)
	ctx := ctxT(t)
	cluster, c, produce := stateTopic(t, kafkatest.StateRecord(t, "job", 1))
	told := make(toldErrors, 100)
	ch, err := c.Watch(ctx, "job", told.opt())
	require.NoError(t, err)
	require.Equal(t, int64(1), next(t, ch).Revision)

	refused, start := refuseFetches(cluster, -1), time.Now()
	defer refused.Remove()
	err = told.next(t)
	require.GreaterOrEqual(t, time.Since(start), grace, "told after the grace")
	require.ErrorIs(t, err, client.ErrForbidden)
	require.ErrorIs(t, err, kerr.TopicAuthorizationFailed)
	require.ErrorContains(t, err, `reading partition 0 of "`+topics.DefaultNames().State+`"`)
	hits := refused.Hits()
	require.Eventually(t, func() bool { return refused.Hits() >= hits+5 }, 20*time.Second, 10*time.Millisecond, "kgo retries")
	require.Empty(t, told, "told once while it lasts")

	refused.Remove()
	require.NoError(t, told.next(t), "reading works again, without a record")
	require.Empty(t, ch, "no revision meanwhile")
	produce(kafkatest.StateRecord(t, "job", 2))
	require.Equal(t, int64(2), next(t, ch).Revision)
	require.Empty(t, told)
}

// A refusal over before the grace is not told: a leader's move or an
// election gives such short failures.
func TestWatchDoesNotTellShortFetchErrors(t *testing.T) {
	const grace = 5 * time.Second
	client.SetFetchErrorGrace(t, grace)
	ctx := ctxT(t)
	cluster, c, produce := stateTopic(t, kafkatest.StateRecord(t, "job", 1))
	told := make(toldErrors, 100)
	ch, err := c.Watch(ctx, "job", told.opt())
	require.NoError(t, err)
	require.Equal(t, int64(1), next(t, ch).Revision)

	refused, start := refuseFetches(cluster, 3), time.Now()
	require.Eventually(t, func() bool { return refused.Hits() >= 3 }, 20*time.Second, 10*time.Millisecond)
	produce(kafkatest.StateRecord(t, "job", 2))
	require.Equal(t, int64(2), next(t, ch).Revision, "read again")
	require.Less(t, time.Since(start), grace, "the refusal was shorter than the grace")
	require.Empty(t, told, "not told")
}

// Brokers that stop answering while a watch follows its lock are told to
// OnFetchError once, wrapping ErrUnreachable, however often kgo dials
// them again (each failed dial a new error text).
func TestWatchTellsOfUnreachableBrokers(t *testing.T) {
	client.SetFetchErrorGrace(t, time.Second)
	ctx := ctxT(t)
	cluster, _ := kafkatest.StateTopic(t, 1, kafkatest.StateRecord(t, "job", 1))
	var failedDials atomic.Int64
	c, err := client.New(ctx, client.Config{Brokers: cluster.ListenAddrs(), ReadOnly: true, KafkaOpts: []kgo.Opt{countFailedDials(&failedDials)}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	told := make(toldErrors, 100)
	ch, err := c.Watch(ctx, "job", told.opt())
	require.NoError(t, err)
	require.Equal(t, int64(1), next(t, ch).Revision)
	require.Empty(t, told, "nothing failed")

	cluster.Close()
	err = told.next(t)
	require.ErrorIs(t, err, client.ErrUnreachable)
	require.ErrorContains(t, err, `reading partition 0 of "`+topics.DefaultNames().State+`"`)
	dials := failedDials.Load()
	require.Eventually(t, func() bool { return failedDials.Load() >= dials+5 }, 20*time.Second, 10*time.Millisecond, "kgo dials again")
	require.Empty(t, told, "told once while it lasts")
}

// Observe passes OnFetchError on to its watch: a refusal from its start is
// told, then nil when the record is read.
func TestObserveTellsOfFetchErrors(t *testing.T) {
	client.SetFetchErrorGrace(t, 500*time.Millisecond)
	cluster, c, _ := stateTopic(t, kafkatest.StateRecord(t, "job", 1))
	refused := refuseFetches(cluster, -1)
	defer refused.Remove()
	told := make(toldErrors, 100)
	ch, err := client.NewElection(c, "job").Observe(ctxT(t), told.opt())
	require.NoError(t, err)
	require.ErrorIs(t, told.next(t), client.ErrForbidden)
	refused.Remove()
	require.NoError(t, told.next(t))
	require.Empty(t, ch, "job's record is no leader's")
}

// A partition's move to another leader is not told: kgo drops the Fetch
// in flight (context.Canceled) and gets NOT_LEADER_OR_FOLLOWER or
// FENCED_LEADER_EPOCH until it reloads the metadata, and the new leader
// answers well before the grace.
func TestWatchDoesNotTellLeaderMoves(t *testing.T) {
	const grace = time.Second
	client.SetFetchErrorGrace(t, grace)
	ctx := ctxT(t)
	state := topics.DefaultNames().State
	cluster := kafkatest.Cluster(t, kfake.NumBrokers(3), kfake.SeedTopics(1, state))
	c, err := client.New(ctx, client.Config{Brokers: cluster.ListenAddrs(), ReadOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	told := make(toldErrors, 100)
	ch, err := c.Watch(ctx, "job", told.opt())
	require.NoError(t, err)
	require.Equal(t, int64(0), next(t, ch).Revision)
	for range 2 {
		to := (cluster.LeaderFor(state, 0) + 1) % 3
		served := cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Nodes: []int32{to}, Observe: true, Count: -1})
		moved := time.Now()
		require.NoError(t, cluster.MoveTopicPartition(state, 0, to))
		// Until the grace passed twice, the new leader answering.
		require.Eventually(t, func() bool { return served.Hits() >= 5 && time.Since(moved) > 2*grace },
			20*time.Second, 10*time.Millisecond, "the new leader answers")
		served.Remove()
	}
	require.Empty(t, told, "not told")
}

// Dead seeds among live ones are not told: while the partition's leader
// is not known yet a failed dial begins a streak, which the fetches that
// follow end before the grace, on a partition without records too; once
// it is known, a failed dial to a seed kgo asks for metadata is none. (The
// grace must outlast kgo's backoff between the seeds it tries: 250 ms,
// then doubling, jittered.) The reader's first dial goes to a random seed,
// so that the dead seeds are dialed during the watch for sure its metadata
// is refreshed every 100 ms: kgo sends one request in two to the next
// seed.
func TestWatchDoesNotTellDeadSeeds(t *testing.T) {
	const grace = 3 * time.Second
	client.SetFetchErrorGrace(t, grace)
	ctx := ctxT(t)
	cluster, _ := kafkatest.StateTopic(t, 1)
	var seeds []string
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		seeds = append(seeds, l.Addr().String())
		require.NoError(t, l.Close()) // refuses connections from now on
	}
	var failedDials atomic.Int64
	c, err := client.New(ctx, client.Config{Brokers: append(seeds, cluster.ListenAddrs()...), ReadOnly: true, KafkaOpts: []kgo.Opt{
		kgo.MetadataMinAge(100 * time.Millisecond), kgo.MetadataMaxAge(100 * time.Millisecond), countFailedDials(&failedDials),
	}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	served := cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Observe: true, Count: -1})
	defer served.Remove()
	told := make(toldErrors, 100)
	start := time.Now()
	ch, err := c.Watch(ctx, "job", told.opt())
	require.NoError(t, err)
	dials := failedDials.Load()
	require.Equal(t, int64(0), next(t, ch).Revision)
	require.Eventually(t, func() bool { return served.Hits() >= 5 && time.Since(start) > 2*grace },
		20*time.Second, 10*time.Millisecond, "fetches answered past the grace")
	require.Greater(t, failedDials.Load(), dials, "dead seeds dialed during the watch")
	require.Empty(t, told, "not told")
}

// countFailedDials is a kgo dialer that counts in n the dials that fail.
func countFailedDials(n *atomic.Int64) kgo.Opt {
	var dialer net.Dialer
	return kgo.Dialer(func(ctx context.Context, network, host string) (net.Conn, error) {
		conn, err := dialer.DialContext(ctx, network, host)
		if err != nil {
			n.Add(1)
		}
		return conn, err
	})
}

// A record batch of the lock state topic that decompresses past the
// readers' bound (8 MiB by default) is skipped unread: a watch reads on
// past it, and tells OnFetchError at once, then nil once reading works
// again; Locks returns the table without the states in it, with an error
// saying so. (Without the bound it is inflated, here to an unreadable
// record.)
func TestStateBatchTooLargeIsSkipped(t *testing.T) {
	ctx := ctxT(t)
	cluster, c, produce := stateTopic(t, kafkatest.StateRecord(t, "job", 1))
	told := make(toldErrors, 100)
	ch, err := c.Watch(ctx, "job", told.opt())
	require.NoError(t, err)
	require.EqualValues(t, 1, next(t, ch).Revision)

	state := topics.DefaultNames().State
	bomb := kafkatest.Bomb(t, cluster, state, 0, "job", 8<<20+1)
	produce(kafkatest.StateRecord(t, "job", 2))
	lr := next(t, ch)
	require.NoError(t, lr.Unreadable, "the batch is not inflated")
	require.EqualValues(t, 2, lr.Revision, "the revision after it")
	err = told.next(t)
	require.ErrorIs(t, err, kgo.ErrMaxDecompress)
	require.ErrorContains(t, err, fmt.Sprintf("offsets %d..%d of partition 0 of %q", bomb, bomb, state))
	require.NoError(t, told.next(t), "reading works again")

	table, err := c.Locks(ctx)
	require.ErrorIs(t, err, kgo.ErrMaxDecompress)
	require.ErrorContains(t, err, "1 record batch(es) skipped")
	require.Len(t, table, 1)
	require.EqualValues(t, 2, table[0].Revision)

	// A bomb last in the partition does not hold Locks back.
	kafkatest.Bomb(t, cluster, state, 0, "job", 8<<20+1)
	_, err = c.Locks(ctx)
	require.ErrorContains(t, err, "2 record batch(es) skipped")
}

// Record batches of the lock state topic past the readers' bound in a row
// are skipped one after the other: a batch skipped is progress, as a
// record is, so no pause follows it as one follows a poll of fetch errors
// only (100 ms doubling to 1 s, 3.5 s for six), and a watch delivers the
// revision after them at once.
func TestStateBatchesTooLargeInARowDoNotPause(t *testing.T) {
	const batches = 6
	ctx := ctxT(t)
	cluster, produce := kafkatest.StateTopic(t, 1, kafkatest.StateRecord(t, "job", 1))
	c, err := client.New(ctx, client.Config{Brokers: cluster.ListenAddrs(), ReadOnly: true,
		KafkaOpts: []kgo.Opt{kgo.MaxDecompressBatchBytes(16 << 10)}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	ch, err := c.Watch(ctx, "job")
	require.NoError(t, err)
	require.EqualValues(t, 1, next(t, ch).Revision)

	for range batches {
		kafkatest.Bomb(t, cluster, topics.DefaultNames().State, 0, "job", 20<<10)
	}
	start := time.Now()
	produce(kafkatest.StateRecord(t, "job", 2))
	require.EqualValues(t, 2, next(t, ch).Revision, "the revision after the batches")
	require.Less(t, time.Since(start), 500*time.Millisecond, "%d batches skipped in a row", batches)
}

// A worker's republish of revision 5 (dropped: the watch has revision 5)
// is never taken, so its identity is not kept: a copy of it the relay
// publishes again after the lock's tombstone passes for the lock's new
// life.
func TestWatchDropsARepublishCopyAfterATombstone(t *testing.T) {
	tombstone := &kgo.Record{Key: []byte("job")}
	_, c, produce := stateTopic(t, stateAt(t, "job", 5, "release", at(5)))
	ch, err := c.Watch(ctxT(t), "job")
	require.NoError(t, err)
	require.EqualValues(t, 5, next(t, ch).Revision)
	produce(
		stateAt(t, "job", 5, "republish", at(7)), // dropped: revision 5 delivered
		tombstone,
		stateAt(t, "job", 5, "republish", at(7)), tombstone, // published again
		stateAt(t, "job", 1, "acquire", at(100)), // the new life
	)
	require.True(t, next(t, ch).Deleted)
	lr := next(t, ch)
	require.False(t, lr.Deleted, "got a second Deleted")
	require.EqualValues(t, 1, lr.Revision, "got %d (%s) after the tombstone", lr.Revision, lr.Operation)
}

// The same for an older revision landing late (dropped), published again
// after the tombstone.
func TestWatchDropsALateOlderCopyAfterATombstone(t *testing.T) {
	tombstone := &kgo.Record{Key: []byte("job")}
	_, c, produce := stateTopic(t, stateAt(t, "job", 6, "release", at(6)))
	ch, err := c.Watch(ctxT(t), "job")
	require.NoError(t, err)
	require.EqualValues(t, 6, next(t, ch).Revision)
	produce(
		stateAt(t, "job", 5, "acquire", at(5)), // late, dropped
		tombstone,
		stateAt(t, "job", 5, "acquire", at(5)), tombstone, // published again
		stateAt(t, "job", 1, "acquire", at(100)),
	)
	require.True(t, next(t, ch).Deleted)
	lr := next(t, ch)
	require.EqualValues(t, 1, lr.Revision, "got %d (%s) after the tombstone", lr.Revision, lr.Operation)
}

// Locks read while the copy of the republish is there and the
// tombstone's copy not yet: the removed lock is back in the table.
func TestLocksDropsARepublishCopyAfterATombstone(t *testing.T) {
	_, c, _ := stateTopic(t,
		stateAt(t, "job", 5, "release", at(5)),
		stateAt(t, "job", 5, "republish", at(7)),
		&kgo.Record{Key: []byte("job")},
		stateAt(t, "job", 5, "republish", at(7)), // published again
	)
	table, err := c.Locks(ctxT(t))
	require.NoError(t, err)
	require.Empty(t, table, "a removed lock is back")
}
