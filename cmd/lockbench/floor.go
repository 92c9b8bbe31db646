package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/topics"
)

// A floor is the least work any service with lockworker's API does for a
// command on this machine, run in place of a worker binary
// (--worker-bin floor:MODE, or --baseline-bin for builds) so that its
// figures compare with lockworker's, and the original design's (peer), in
// one run. It keeps no lock state: it answers an acquire lock.acquired, a
// release lock.released and anything else lock.rejected, on the command's
// reply_to, through the same broker. The modes:
//
//   - kafka: read a poll's commands and answer them. The two broker hops,
//     with nothing in between.
//   - commit: first write the poll in one PostgreSQL transaction of one
//     round trip (the offsets of its partitions, a row per command) and
//     wait for its COMMIT: what a durable service must pay before it
//     answers.
//   - outbox: commit, and in the same transaction the outbox rows
//     lockworker writes per command (its reply, the lifecycle record and
//     the lock's state record, each carrying the event compacted as
//     lockworker stores it, topics.CompactEvent), deleted in bulk once
//     published.
//
// lockbench runs itself as the child process for a floor (--serve-floor).
var floorModes = []string{"kafka", "commit", "outbox"}

const floorPrefix = "floor:"

// floorMode is the mode bin names ("floor:MODE"), or "".
func floorMode(bin string) string {
	mode, ok := strings.CutPrefix(bin, floorPrefix)
	if !ok {
		return ""
	}
	return mode
}

// checkFloor refuses a floor:MODE of no known mode.
func checkFloor(bins ...string) error {
	for _, b := range bins {
		if m, ok := strings.CutPrefix(b, floorPrefix); ok && !slices.Contains(floorModes, m) {
			return fmt.Errorf("%q: the floor's mode is one of %s", b, strings.Join(floorModes, ", "))
		}
	}
	return nil
}

// floorDDL is the floor's schema; floorReady says it is there.
const (
	floorDDL = `
CREATE TABLE IF NOT EXISTS floor_offsets (partition int PRIMARY KEY, next_offset bigint NOT NULL);
CREATE TABLE IF NOT EXISTS floor_log (request_id text PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS floor_outbox (id bigserial PRIMARY KEY, source_partition int NOT NULL, topic text NOT NULL,
	key bytea, value bytea NOT NULL, headers bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX IF NOT EXISTS floor_outbox_partition ON floor_outbox (source_partition, id);`
	floorReady = `SELECT to_regclass('floor_outbox') IS NOT NULL`
)

// serveFloor runs the floor as a worker process does: DATABASE_URL and
// KAFKA_BOOTSTRAP_SERVERS from the environment, until ctx ends.
func serveFloor(ctx context.Context, mode string) error {
	if err := checkFloor(floorPrefix + mode); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, floorDDL); err != nil {
		return fmt.Errorf("creating the floor's tables: %w", err)
	}
	names, brokers := topics.DefaultNames(), strings.Split(os.Getenv("KAFKA_BOOTSTRAP_SERVERS"), ",")
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(names.Commands), kgo.ConsumerGroup("lockbench-floor"), kgo.DisableAutoCommit(),
		kgo.ProducerLinger(0))
	if err != nil {
		return err
	}
	defer cl.Close()
	for _, t := range []string{names.Commands, names.Lifecycle(topics.TypeAcquired), names.Lifecycle(topics.TypeReleased), names.State} {
		if err := createTopic(ctx, brokers, t, 16); err != nil {
			return err
		}
	}
	// The outbox's rows are deleted once published, in bulk, off the
	// answering path, as lockworker's relay does.
	published := make(chan struct{}, 1)
	defer close(published)
	go func() {
		for range published {
			if cl.Flush(ctx) != nil {
				return
			}
			_, _ = pool.Exec(ctx, `DELETE FROM floor_outbox`)
		}
	}()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		var recs []*kgo.Record
		var parts []int32 // of each record's command, for its outbox row
		var ids []string
		offsets := map[int32]int64{}
		now := time.Now()
		fs.EachRecord(func(r *kgo.Record) {
			offsets[r.Partition] = r.Offset + 1
			c, err := topics.Decode(r.Value, names.ReplyPrefix)
			if err != nil || c.ReplyTo == "" {
				return
			}
			typ := topics.TypeRejected
			switch c.Operation {
			case topics.OpAcquire:
				typ = topics.TypeAcquired
			case topics.OpRelease:
				typ = topics.TypeReleased
			}
			ev := topics.NewEvent(typ, c.Operation, c.RequestID, now)
			ev.LockInfo = &topics.LockInfo{Namespace: c.Namespace, LockName: c.LockName, OwnerID: c.OwnerID, Status: "acquired"}
			v, err := ev.Encode()
			if err != nil {
				return
			}
			key := []byte(c.Key())
			recs, parts = append(recs, &kgo.Record{Topic: c.ReplyTo, Key: key, Value: v}), append(parts, r.Partition)
			ids = append(ids, c.RequestID)
			if mode == "outbox" && typ != topics.TypeRejected {
				recs = append(recs, &kgo.Record{Topic: names.Lifecycle(typ), Key: key, Value: v}, &kgo.Record{Topic: names.State, Key: key, Value: v})
				parts = append(parts, r.Partition, r.Partition)
			}
		})
		if mode != "kafka" && len(offsets) > 0 {
			if err := floorCommit(ctx, pool, offsets, ids, mode == "outbox", recs, parts); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
		for _, r := range recs {
			cl.Produce(ctx, r, nil)
		}
		if mode == "outbox" && len(recs) > 0 {
			select {
			case published <- struct{}{}:
			default:
			}
		}
	}
}

// floorCommit writes a poll in one transaction of one round trip.
func floorCommit(ctx context.Context, pool *pgxpool.Pool, offsets map[int32]int64, ids []string, outbox bool, recs []*kgo.Record, parts []int32) error {
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	for p, o := range offsets {
		b.Queue(`INSERT INTO floor_offsets VALUES ($1, $2) ON CONFLICT (partition) DO UPDATE SET next_offset = EXCLUDED.next_offset`, p, o)
	}
	b.Queue(`INSERT INTO floor_log (request_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`, ids)
	if outbox && len(recs) > 0 {
		tops, keys, values, headers := make([]string, len(recs)), make([][]byte, len(recs)), make([][]byte, len(recs)), make([][]byte, len(recs))
		for i, r := range recs {
			tops[i], keys[i], values[i], headers[i] = r.Topic, r.Key, topics.CompactEvent(nil, r.Value), []byte{}
		}
		b.Queue(`INSERT INTO floor_outbox (source_partition, topic, key, value, headers)
			SELECT * FROM unnest($1::int[], $2::text[], $3::bytea[], $4::bytea[], $5::bytea[])`, parts, tops, keys, values, headers)
	}
	b.Queue(`COMMIT`)
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("floor: writing a poll: %w", err)
	}
	return nil
}
