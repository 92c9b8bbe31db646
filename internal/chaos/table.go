package chaos

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/client"
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
