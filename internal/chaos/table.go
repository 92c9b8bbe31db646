package chaos

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/topics"
)

// CompareTable reads the lock state topic from its start (client.Locks) and
// the database's locks, and returns an error naming the locks where they
// differ (revision, status, holders and their tokens, waiters): after a
// run, once the relays have published everything, they must be equal.
func CompareTable(ctx context.Context, brokers []string, databaseURL string) error {
	c, err := client.New(ctx, client.Config{Brokers: brokers, Requester: "chaos-table"})
	if err != nil {
		return err
	}
	defer c.Close()
	table, err := c.Locks(ctx)
	if err != nil {
		return err
	}
	fromTopic := map[string]string{}
	for _, lr := range table {
		var hs []string
		for _, h := range lr.Holders {
			hs = append(hs, fmt.Sprintf("%s#%d", h.Owner, h.Token))
		}
		fromTopic[lr.Namespace+"/"+lr.Name] = render(lr.Revision, string(lr.Status), hs, lr.Waiters)
	}
	fromDB, err := dbTable(ctx, databaseURL)
	if err != nil {
		return err
	}
	var diffs []error
	for _, key := range slices.Sorted(maps.Keys(fromDB)) {
		if fromTopic[key] != fromDB[key] {
			diffs = append(diffs, fmt.Errorf("lock %s: database %q, topic %q", key, fromDB[key], fromTopic[key]))
		}
	}
	for key, v := range fromTopic {
		if _, ok := fromDB[key]; !ok {
			diffs = append(diffs, fmt.Errorf("lock %s: not in the database, topic %q", key, v))
		}
	}
	return errors.Join(diffs[:min(len(diffs), maxViolations)]...)
}

// CompareTableSettled runs CompareTable every half second until the topic
// and the database agree or within has passed, and returns its last error:
// after a run the relays still publish the last changes, and leases still
// end. It compares at least once: with ctx already done or within not
// positive it compares nothing and says so, an error, never a pass.
func CompareTableSettled(ctx context.Context, brokers []string, databaseURL string, within time.Duration) error {
	if within <= 0 {
		return fmt.Errorf("the lock state topic and the database not compared: no time to compare in (%s)", within)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("the lock state topic and the database not compared: %w", err)
	}
	deadline := time.Now().Add(within)
	for {
		diff := CompareTable(ctx, brokers, databaseURL)
		if diff == nil {
			return nil
		}
		if !time.Now().Add(compareEvery).Before(deadline) {
			return diff
		}
		select {
		case <-ctx.Done():
			return diff
		case <-time.After(compareEvery):
		}
	}
}

// compareEvery is CompareTableSettled's pause between comparisons.
const compareEvery = 500 * time.Millisecond

func render(rev int64, status string, holders []string, waiters int) string {
	return fmt.Sprintf("rev=%d %s holders=[%s] waiters=%d", rev, status, strings.Join(holders, " "), waiters)
}

// dbTable renders the database's locks as CompareTable compares them.
func dbTable(ctx context.Context, databaseURL string) (map[string]string, error) {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `
		SELECT l.namespace, l.lock_name, l.revision, l.status, l.waiter_count,
			coalesce((SELECT array_agg(h.owner_id || '#' || h.fencing_token ORDER BY h.fencing_token) FROM lock_holders h
				WHERE h.namespace = l.namespace AND h.lock_name = l.lock_name), '{}')
		FROM locks l`)
	if err != nil {
		return nil, fmt.Errorf("reading locks: %w", err)
	}
	out := map[string]string{}
	var ns, name, status string
	var rev int64
	var waiters int
	var holders []string
	_, err = pgx.ForEachRow(rows, []any{&ns, &name, &rev, &status, &waiters, &holders}, func() error {
		out[ns+"/"+name] = render(rev, status, holders, waiters)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading locks: %w", err)
	}
	return out, nil
}

// StateOrder is what CheckStateOrder read of the lock state topic.
type StateOrder struct {
	// Records read, tombstones included; Back, the records whose
	// revision's first publication came after a later revision of their
	// lock; Copies, those of a revision published before (at least once)
	// that came after a later one.
	Records, Tombstones, Back, Copies int
}

// CheckStateOrder reads the lock state topic from its start to its end
// offsets and checks that no lock's revision goes back by offset the
// first time it is published. Delivery is at least once, so a copy of a
// revision published before may come after a later one (a relay's retry,
// a new owner's relay publishing the rows the old one left): readers drop
// it by revision, and it is only counted. A revision published first after
// a later one is what a replica that lost the partition without knowing
// yet writes beside its new owner (docs/design.md, Exactly-once effect):
// readers keeping the greatest revision never see it, and compaction may
// keep it as the lock's state. A tombstone begins its key's lock anew (its
// revisions start over). Run it once the relays have published every
// change (CompareTableSettled). The error names each record that went
// back, with the one it went back from.
func CheckStateOrder(ctx context.Context, brokers []string) (StateOrder, error) {
	recs, err := readState(ctx, brokers, topics.DefaultNames().State)
	if err != nil {
		return StateOrder{}, err
	}
	return checkStateOrder(recs)
}

// stateRecord is a record of the lock state topic as checkStateOrder
// judges it.
type stateRecord struct {
	partition int32
	offset    int64
	key       string
	tombstone bool
	revision  int64
	operation string
	changedAt time.Time // the database's time of the change
	produced  time.Time // the record's timestamp
}

func (r stateRecord) String() string {
	return fmt.Sprintf("revision %d (%s, changed %s, produced %s, partition %d offset %d)",
		r.revision, r.operation, stamp(r.changedAt), stamp(r.produced), r.partition, r.offset)
}

// checkStateOrder judges recs, each partition's in offset order.
func checkStateOrder(recs []stateRecord) (StateOrder, error) {
	var o StateOrder
	var errs []error
	top := map[string]stateRecord{}          // per key, the record of its greatest revision so far
	published := map[string]map[int64]bool{} // per key, the revisions published so far
	for _, r := range recs {
		o.Records++
		if r.tombstone {
			o.Tombstones++
			delete(top, r.key)
			delete(published, r.key)
			continue
		}
		if published[r.key] == nil {
			published[r.key] = map[int64]bool{}
		}
		again := published[r.key][r.revision]
		published[r.key][r.revision] = true
		t, ok := top[r.key]
		switch {
		case !ok || r.revision > t.revision:
			top[r.key] = r
		case r.revision == t.revision:
		case again:
			o.Copies++
		default:
			o.Back++
			if len(errs) < maxViolations {
				errs = append(errs, fmt.Errorf("lock %s: %s published first after %s", r.key, r, t))
			}
		}
	}
	return o, errors.Join(errs...)
}

// readState reads topic from its start to the end offsets it has now, each
// partition in offset order.
func readState(ctx context.Context, brokers []string, topic string) ([]stateRecord, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing the end offsets of %s: %w", topic, err)
	}
	left := map[int32]int64{} // the partitions not read to their end, and their end
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	var recs []stateRecord
	var fetchErr, decodeErr error
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("reading %s to its end: %w (the last fetch error: %v)", topic, ctx.Err(), fetchErr)
		}
		fs.EachError(func(_ string, _ int32, err error) { fetchErr = err })
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset+1 >= left[r.Partition] {
				delete(left, r.Partition)
			}
			sr := stateRecord{partition: r.Partition, offset: r.Offset, key: string(r.Key), tombstone: r.Value == nil, produced: r.Timestamp}
			if !sr.tombstone {
				v, err := topics.ExpandLockState(r.Value)
				var st topics.LockState
				if err == nil {
					st, err = topics.DecodeLockState(v)
				}
				if err != nil {
					decodeErr = cmp.Or(decodeErr, fmt.Errorf("partition %d offset %d of %s: %w", r.Partition, r.Offset, topic, err))
					return
				}
				sr.revision, sr.operation, sr.changedAt = st.Revision, st.Operation, st.ChangedAt.Time
			}
			recs = append(recs, sr)
		})
	}
	if decodeErr != nil {
		return nil, decodeErr
	}
	return recs, nil
}
