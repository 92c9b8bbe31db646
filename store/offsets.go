package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const lockOffsetSQL = `
	INSERT INTO consumer_offsets (group_id, topic, partition, next_offset)
	VALUES ($1, $2, $3, -1)
	ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = consumer_offsets.next_offset
	RETURNING next_offset`

// LockOffset locks a partition's offset row for the rest of tx and returns the
// next offset to apply, or -1 when nothing was ever applied there. Every
// transaction that writes outbox rows for a partition calls it first, which
// serializes them: outbox ids then follow commit order within the partition.
func LockOffset(ctx context.Context, tx pgx.Tx, group, topic string, partition int32) (int64, error) {
	var next int64
	err := tx.QueryRow(ctx, lockOffsetSQL, group, topic, partition).Scan(&next)
	if err != nil {
		return 0, fmt.Errorf("locking offset of %s/%d: %w", topic, partition, translate(err))
	}
	return next, nil
}

// QueueLockOffset is LockOffset queued on b, to share a round trip: *next is
// set when b's results are read.
func QueueLockOffset(b *pgx.Batch, group, topic string, partition int32, next *int64) {
	b.Queue(lockOffsetSQL, group, topic, partition).QueryRow(func(row pgx.Row) error {
		if err := row.Scan(next); err != nil {
			return fmt.Errorf("locking offset of %s/%d: %w", topic, partition, translate(err))
		}
		return nil
	})
}

// QueueAdvanceOffset queues on b the move of a partition's next offset from
// `from` to `to`, so it shares a round trip with other statements; b's Close
// fails with an *OffsetMovedError when the stored offset is not `from`. Updating
// the row also locks it: a batch whose offsets are known can lock and advance
// in one statement at its start, which LockOffset would otherwise do. epoch
// is the Kafka leader epoch of the record at to-1 (-1: not known), with
// which the partition is resumed (Position). The check is the client's:
// queue it on a batch that fn sends, and whose Close error it returns,
// before it returns; never on one that goes with COMMIT (InTxBatch's last,
// or its first when fn sends nothing), which would commit whatever it
// found.
func QueueAdvanceOffset(b *pgx.Batch, group, topic string, partition int32, from, to int64, epoch int32) {
	b.Queue(`
		UPDATE consumer_offsets SET next_offset = $5, leader_epoch = $6, leader_epoch_offset = $5, updated_at = clock_timestamp()
		WHERE group_id = $1 AND topic = $2 AND partition = $3 AND next_offset = $4`,
		group, topic, partition, from, to, epoch).Exec(func(tag pgconn.CommandTag) error {
		if tag.RowsAffected() != 1 {
			return &OffsetMovedError{Topic: topic, Partition: partition, From: from}
		}
		return nil
	})
}

// Position is where a partition's consumption stands: the next offset to
// apply and the Kafka leader epoch of the record before it (-1: not known).
type Position struct {
	Next  int64
	Epoch int32
}

// Offsets returns the stored positions of a group's topic, by partition.
func (s *Store) Offsets(ctx context.Context, group, topic string) (map[int32]Position, error) {
	ctx, done, cancel := s.bounded(ctx)
	defer cancel()
	rows, err := s.Pool.Query(ctx, `
		SELECT partition, next_offset, CASE WHEN leader_epoch_offset = next_offset THEN leader_epoch ELSE -1 END
		FROM consumer_offsets WHERE group_id = $1 AND topic = $2 AND next_offset >= 0`, group, topic)
	if err != nil {
		return nil, fmt.Errorf("reading offsets of %s: %w", topic, done(err))
	}
	out := map[int32]Position{}
	var p int32
	var pos Position
	_, err = pgx.ForEachRow(rows, []any{&p, &pos.Next, &pos.Epoch}, func() error { out[p] = pos; return nil })
	if err != nil {
		return nil, fmt.Errorf("reading offsets of %s: %w", topic, done(err))
	}
	return out, nil
}

// RewindOffset moves a partition's next offset from `from` back to `to`,
// with the leader epoch of the record before `to` (-1: not known), when the
// Kafka log no longer holds the records applied from `to` on: the broker
// lost them, and the records it numbers from `to` now are new. It reports
// false, moving nothing, when the stored offset is no longer `from`: another
// replica applied records of the partition meanwhile.
func (s *Store) RewindOffset(ctx context.Context, group, topic string, partition int32, from, to int64, epoch int32) (bool, error) {
	tag, err := s.Pool.Exec(ctx, `
		UPDATE consumer_offsets SET next_offset = $5, leader_epoch = $6, leader_epoch_offset = $5, updated_at = clock_timestamp()
		WHERE group_id = $1 AND topic = $2 AND partition = $3 AND next_offset = $4 AND $5 < $4`,
		group, topic, partition, from, to, epoch)
	if err != nil {
		return false, fmt.Errorf("rewinding offset of %s/%d from %d to %d: %w", topic, partition, from, to, translate(err))
	}
	return tag.RowsAffected() == 1, nil
}

// ErrOtherGroup means a topic's offsets are stored under other consumer
// groups only, not under the group asking (OtherGroupError).
var ErrOtherGroup = errors.New("the topic's offsets are stored under another consumer group only")

// OtherGroupError is ErrOtherGroup for one group and topic: Others are the
// groups with stored offsets of the topic, the one whose stored offsets
// changed last first. TopicID is the topic ID stored with Others[0]'s
// offsets (its consumer_topics row; "": none). Only when it is the topic's
// current ID are they known to be of the topic as it is now: without one
// (offsets stored before topic IDs were, or by a Kafka that gives none) or
// with another (a topic deleted and created again since) they may be of an
// earlier topic of that name, and moving them would skip the current
// topic's records.
type OtherGroupError struct {
	Group, Topic string
	Others       []string
	TopicID      string
}

func (e *OtherGroupError) Error() string {
	return fmt.Sprintf("%v: %s has none for %s, %s have", ErrOtherGroup, e.Group, e.Topic, strings.Join(e.Others, ", "))
}

func (e *OtherGroupError) Unwrap() error { return ErrOtherGroup }

// CheckGroup returns an *OtherGroupError when consumer_offsets holds
// offsets of topic (a record applied: next_offset >= 0) under other
// groups and none under group, as after the consumer group's name was
// changed: the group would apply the topic again from its start. No
// offsets at all (a new deployment) is no error. The other groups are
// ordered by the last change of their stored offsets (max(updated_at),
// which applying a batch, RewindOffset and SkipOffset set). It is bounded
// as a transaction's attempt is (Config.AttemptTimeout): a replica stuck in
// it would never join its group.
func (s *Store) CheckGroup(ctx context.Context, group, topic string) error {
	ctx, done, cancel := s.bounded(ctx)
	defer cancel()
	rows, err := s.Pool.Query(ctx, `
		SELECT o.group_id, coalesce((SELECT t.topic_id FROM consumer_topics t WHERE t.group_id = o.group_id AND t.topic = $2), '')
		FROM consumer_offsets o
		WHERE o.topic = $2 AND o.group_id <> $1 AND o.next_offset >= 0
			AND NOT EXISTS (SELECT FROM consumer_offsets WHERE group_id = $1 AND topic = $2 AND next_offset >= 0)
		GROUP BY o.group_id ORDER BY max(o.updated_at) DESC, o.group_id`, group, topic)
	if err != nil {
		return fmt.Errorf("reading the groups with offsets of %s: %w", topic, done(err))
	}
	e := &OtherGroupError{Group: group, Topic: topic}
	var other, id string
	_, err = pgx.ForEachRow(rows, []any{&other, &id}, func() error {
		if e.Others == nil {
			e.TopicID = id
		}
		e.Others = append(e.Others, other)
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading the groups with offsets of %s: %w", topic, done(err))
	}
	if len(e.Others) > 0 {
		return e
	}
	return nil
}

// SkipOffset moves a partition's next offset from `from` forward to `to`,
// with no leader epoch, when the Kafka log now starts at `to`: the records
// between were deleted (the topic's retention, DeleteRecords) before they
// were applied, and can never be. It reports false, moving nothing, when
// the stored offset is no longer `from`: another replica applied records of
// the partition meanwhile.
func (s *Store) SkipOffset(ctx context.Context, group, topic string, partition int32, from, to int64) (bool, error) {
	tag, err := s.Pool.Exec(ctx, `
		UPDATE consumer_offsets SET next_offset = $5, leader_epoch = -1, leader_epoch_offset = -1, updated_at = clock_timestamp()
		WHERE group_id = $1 AND topic = $2 AND partition = $3 AND next_offset = $4 AND $5 > $4`,
		group, topic, partition, from, to)
	if err != nil {
		return false, fmt.Errorf("moving offset of %s/%d from %d to the log start %d: %w", topic, partition, from, to, translate(err))
	}
	return tag.RowsAffected() == 1, nil
}

// CheckTopicID records id as the topic ID of a group's topic, and says
// whether the topic was created again since its offsets were stored: it
// then forgets them (the new topic numbers its records from 0 again) and
// the outcomes of the request_ids generated from the old topic's records
// ("<topic>/<partition>/<offset>", which the new topic's records would be
// given again; a wait still queued under one is answered under the id and
// "@<old topic ID>"), and returns the ID they were stored under. The first
// call for a topic only records the ID. The IDs replaced are kept, the
// last RetiredTopicIDsKept: one of them given again changes nothing and
// fails with a *RetiredTopicIDError (ErrRetiredTopicID), for taken as a new
// recreation it would forget the live topic's offsets and outcomes.
func (s *Store) CheckTopicID(ctx context.Context, group, topic, id string) (recreated bool, was string, err error) {
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		recreated, was = false, ""
		var retired bool
		err := tx.QueryRow(ctx, `SELECT topic_id, $3 = ANY(retired_ids) FROM consumer_topics WHERE group_id = $1 AND topic = $2 FOR UPDATE`,
			group, topic, id).Scan(&was, &retired)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			_, err = tx.Exec(ctx, `INSERT INTO consumer_topics (group_id, topic, topic_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, group, topic, id)
			return err
		case err != nil || was == id:
			return err
		case retired:
			return &RetiredTopicIDError{Topic: topic, ID: id, Current: was}
		}
		recreated = true
		// The offset rows are locked in partition order first, as every
		// batch locks them: the DELETE alone takes them in its scan's order
		// (a seq scan's is the heap's, which updates reshuffle), and could
		// close a cycle with a batch of two of the partitions.
		if _, err := tx.Exec(ctx, `SELECT FROM consumer_offsets WHERE group_id = $1 AND topic = $2 ORDER BY partition FOR UPDATE`,
			group, topic); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM consumer_offsets WHERE group_id = $1 AND topic = $2`, group, topic); err != nil {
			return err
		}
		// The outcomes of the ids generated from the old topic's records
		// go. A wait queued under one stores its final answer later: it is
		// stored under the id and the old topic's ID, which no command of
		// the new topic is given. The waits' lock rows are locked first, as
		// every writer of waits does, so a grant or timeout another replica
		// is making commits before (and the DELETE, which reads after,
		// takes its outcome too) or reads the new id.
		if _, err := tx.Exec(ctx, `SELECT FROM locks WHERE (namespace, lock_name) IN (
				SELECT namespace, lock_name FROM lock_waiters WHERE starts_with(request_id, $1 || '/'))
			ORDER BY namespace, lock_name FOR UPDATE`, topic); err != nil {
			return err
		}
		// One statement in this transaction, though it reads the whole
		// table (no index serves a prefix under a collation other than C):
		// deleted in batches of their own before the switch of the ID, an
		// outcome an old-topic batch commits meanwhile would be left; after
		// it, the other replicas, which restart a partition whose offset
		// went without this check, could apply the new topic's records
		// beside the old outcomes, and a crash in between would leave them
		// for good (the next check finds the new ID recorded).
		if _, err := tx.Exec(ctx, `DELETE FROM processed_requests WHERE starts_with(request_id, $1 || '/')`, topic); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE lock_waiters SET request_id = request_id || '@' || $2
			WHERE starts_with(request_id, $1 || '/')`, topic, was); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE consumer_topics SET topic_id = $3, retired_ids = (ARRAY[topic_id] || retired_ids)[1:$4]
			WHERE group_id = $1 AND topic = $2`, group, topic, id, RetiredTopicIDsKept)
		return err
	})
	if err != nil {
		return false, "", fmt.Errorf("checking the topic ID of %s: %w", topic, translate(err))
	}
	return recreated, was, nil
}

// RetiredTopicIDsKept is how many of the IDs a topic had before its
// current one CheckTopicID keeps. Topic IDs are random UUIDs, never given
// again to a new topic, and only those of recent deletions can still be
// read from a broker that lags: a few are enough.
const RetiredTopicIDsKept = 16
