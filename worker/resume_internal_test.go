package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/topics"
)

// Resuming assigned partitions retries a failure that may pass by itself
// (here the broker answers the listing of the log ends LEADER_NOT_AVAILABLE,
// as during an election): failing the assignment would end the client's
// group session, losing every partition of the replica and rebalancing the
// whole group. A failure that cannot pass still fails it.
func TestResumeRetriesTransientFailures(t *testing.T) {
	ctx := context.Background()
	names := topics.DefaultNames()
	c := kafkatest.Cluster(t, kfake.SeedTopics(2, names.Commands))
	w, _ := newApplierOn(t, c)
	assigned := func() map[string]map[int32]kgo.Offset {
		return map[string]map[int32]kgo.Offset{names.Commands: {0: kgo.NewOffset(), 1: kgo.NewOffset()}}
	}

	election := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.ListOffsets}, Topic: names.Commands, Err: kerr.LeaderNotAvailable})
	offsets, err := w.resumeFromStore(ctx, assigned())
	require.NoError(t, err)
	require.Equal(t, 1, election.Hits())
	require.Equal(t, kgo.NewOffset().AtStart(), offsets[names.Commands][1], "nothing stored: from the log's start")

	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.ListOffsets}, Topic: names.Commands, Err: kerr.PolicyViolation})
	_, err = w.resumeFromStore(ctx, assigned())
	require.ErrorIs(t, err, kerr.PolicyViolation)
}

// A failure to read the commands topic's ID that may pass (an election, as
// while a recreated topic gets its leaders) is retried, not taken as a
// reason to use the stored offsets unchecked: those of a topic deleted and
// created again would skip the new topic's first records as applied.
func TestResumeRetriesTheTopicIDsRead(t *testing.T) {
	ctx := context.Background()
	names := topics.DefaultNames()
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, names.Commands))
	w, st := newApplierOn(t, c)
	// The old topic's ID and offset; the new topic holds more records.
	_, _, err := st.CheckTopicID(ctx, "lockworker", names.Commands, "the-old-topic")
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('lockworker', $1, 0, 2)`,
		names.Commands)
	require.NoError(t, err)
	producer, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...)) // w's client then asks for no topic by itself
	require.NoError(t, err)
	for range 3 {
		require.NoError(t, producer.ProduceSync(ctx, &kgo.Record{Topic: names.Commands, Value: []byte("x")}).FirstErr())
	}
	producer.Close()
	election := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Metadata}, Topic: names.Commands, Err: kerr.LeaderNotAvailable})
	err = w.checkTopicID(ctx)
	require.ErrorIs(t, err, kerr.LeaderNotAvailable)
	require.True(t, transient(err))
	require.Equal(t, 1, election.Hits())

	election = c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Metadata}, Topic: names.Commands, Err: kerr.LeaderNotAvailable})
	offsets, err := w.resumeFromStore(ctx, map[string]map[int32]kgo.Offset{names.Commands: {0: kgo.NewOffset()}})
	require.NoError(t, err)
	require.Equal(t, 1, election.Hits())
	require.Equal(t, kgo.NewOffset().AtStart(), offsets[names.Commands][0], "the old topic's offset forgotten")
}

// topicIDCase is a commands topic whose stored ID is current, with the
// offset 2, after an earlier topic of the name (retired), on c's brokers;
// answer(node, live) then answers each Metadata read of the topic on node,
// the live answer given (nil: let the broker answer; an error: the
// connection is closed, the broker unreachable).
func topicIDCase(t *testing.T, brokers int) (c *kfake.Cluster, w *Worker, logs *testlog.Buffer, current, retired string,
	answer func(func(node int32, live *kmsg.MetadataResponse) (*kmsg.MetadataResponse, error))) {
	ctx := context.Background()
	names := topics.DefaultNames()
	c = kafkatest.Cluster(t, kfake.SeedTopics(1, names.Commands), kfake.NumBrokers(brokers))
	w, st := newApplierOn(t, c)
	logs = &testlog.Buffer{}
	w.log = zerolog.New(logs)
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(names.Commands)
	req.Topics = append(req.Topics, rt)
	live, err := req.RequestWith(ctx, w.cl)
	require.NoError(t, err)
	require.Len(t, live.Topics, 1)
	current = kadm.TopicID(live.Topics[0].TopicID).String()
	retired = kadm.TopicID(retiredTopicID).String()
	_, _, err = st.CheckTopicID(ctx, "lockworker", names.Commands, retired)
	require.NoError(t, err)
	_, _, err = st.CheckTopicID(ctx, "lockworker", names.Commands, current)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('lockworker', $1, 0, 2)`,
		names.Commands)
	require.NoError(t, err)
	producer, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	for range 3 {
		require.NoError(t, producer.ProduceSync(ctx, &kgo.Record{Topic: names.Commands, Value: []byte("x")}).FirstErr())
	}
	producer.Close()
	return c, w, logs, current, retired, func(fn func(int32, *kmsg.MetadataResponse) (*kmsg.MetadataResponse, error)) {
		c.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			if ts := req.(*kmsg.MetadataRequest).Topics; len(ts) != 1 || ts[0].Topic == nil || *ts[0].Topic != names.Commands {
				return nil, nil, false
			}
			resp, err := fn(c.CurrentNode(), live)
			switch {
			case err != nil:
				return nil, err, true
			case resp == nil:
				return nil, nil, false
			}
			resp.Version = req.GetVersion()
			return resp, nil, true
		})
	}
}

// resumeHeld resumes partition 0 of the commands topic, which is held while
// the topic's ID is read again: once asked counts three reads, the revoke
// ends it, and its error is returned.
func resumeHeld(t *testing.T, w *Worker, asked *atomic.Int32) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := w.resumeFromStore(ctx, map[string]map[int32]kgo.Offset{topics.DefaultNames().Commands: {0: kgo.NewOffset()}})
		done <- err
	}()
	require.Eventually(t, func() bool { return asked.Load() >= 3 }, 30*time.Second, 10*time.Millisecond, "read again")
	cancel() // the revoke
	return <-done
}

// retiredTopicID is topicIDCase's earlier topic's ID.
var retiredTopicID = [16]byte{0xde, 0x1e, 0x7e, 0xd}

// withTopicID is live answering id for the topic.
func withTopicID(live *kmsg.MetadataResponse, id [16]byte) *kmsg.MetadataResponse {
	resp := *live
	resp.Topics = slices.Clone(live.Topics)
	resp.Topics[0].TopicID = id
	return &resp
}

// A broker that has not caught up with two recreations answers the topic's
// ID as one never stored (the middle topic's), while the others answer the
// current one: the brokers disagree, so nothing is taken for a recreation;
// read again until they agree, the live topic's offsets are kept. Taken as
// a recreation, it would forget them and retire the live ID, which every
// broker would answer from then on.
func TestResumeWaitsForTheBrokersToAgreeOnTheTopicID(t *testing.T) {
	_, w, logs, current, _, answer := topicIDCase(t, 3)
	middle := [16]byte{0x3d, 0x1d}
	var stale atomic.Int32
	answer(func(node int32, live *kmsg.MetadataResponse) (*kmsg.MetadataResponse, error) {
		if node == 0 && stale.Add(1) <= 2 {
			return withTopicID(live, middle), nil
		}
		return nil, nil
	})
	names := topics.DefaultNames()
	offsets, err := w.resumeFromStore(context.Background(), map[string]map[int32]kgo.Offset{names.Commands: {0: kgo.NewOffset()}})
	require.NoError(t, err)
	require.GreaterOrEqual(t, stale.Load(), int32(3), "the lagging broker was asked until it agreed")
	require.Equal(t, kgo.NewOffset().At(2).WithEpoch(-1), offsets[names.Commands][0], "the live topic's offset kept")
	require.NotContains(t, logs.String(), "created again")
	require.Equal(t, 1, strings.Count(logs.String(), `"level":"warn"`), logs.String())
	require.Contains(t, logs.String(), kadm.TopicID(middle).String())
	require.Contains(t, logs.String(), current)
	require.NotContains(t, logs.String(), `"level":"error"`, "an expected lag, not a failure")
}

// The lagging broker alone answering, the others unreachable, is not taken
// at its word: a majority of the brokers must answer. And a broker that
// gives no ID (an older version, during an upgrade) contradicts nobody.
func TestResumeWaitsForAMajorityOfBrokersToAnswer(t *testing.T) {
	_, w, logs, _, _, answer := topicIDCase(t, 3)
	middle := [16]byte{0x3d, 0x1d}
	var lagging, unreachable1, unreachable2 atomic.Int32
	answer(func(node int32, live *kmsg.MetadataResponse) (*kmsg.MetadataResponse, error) {
		switch {
		case node == 0 && lagging.Add(1) <= 2:
			return withTopicID(live, middle), nil
		case node == 1 && unreachable1.Add(1) <= 2, node == 2 && unreachable2.Add(1) <= 2:
			return nil, errors.New("unreachable")
		case node == 2:
			return withTopicID(live, [16]byte{}), nil // then gives none
		}
		return nil, nil
	})
	names := topics.DefaultNames()
	offsets, err := w.resumeFromStore(context.Background(), map[string]map[int32]kgo.Offset{names.Commands: {0: kgo.NewOffset()}})
	require.NoError(t, err)
	require.Equal(t, kgo.NewOffset().At(2).WithEpoch(-1), offsets[names.Commands][0], "the live topic's offset kept")
	require.NotContains(t, logs.String(), "created again")
	require.Contains(t, logs.String(), "only 1 of the 3 brokers give the commands topic's ID, not a majority")
	require.Contains(t, logs.String(), "broker 2 of 3: broker closed the connection", "why a broker gave none")
}

// Brokers that give no ID (an older version, during an upgrade) do not make
// a lagging broker's ID a majority's: the partitions wait, the stored
// offsets as they were, until a majority of the brokers give the ID.
func TestResumeTakesNoIDFromAMinorityWhenTheOthersGiveNone(t *testing.T) {
	_, w, logs, current, _, answer := topicIDCase(t, 3)
	middle := [16]byte{0x3d, 0x1d}
	var asked atomic.Int32
	answer(func(node int32, live *kmsg.MetadataResponse) (*kmsg.MetadataResponse, error) {
		if node == 0 {
			asked.Add(1)
			return withTopicID(live, middle), nil
		}
		return withTopicID(live, [16]byte{}), nil // an older version: no IDs
	})
	require.Error(t, resumeHeld(t, w, &asked))
	var stored string
	require.NoError(t, w.cfg.Store.Pool.QueryRow(context.Background(), `SELECT topic_id FROM consumer_topics`).Scan(&stored))
	require.Equal(t, current, stored)
	require.EqualValues(t, 2, storedOffset(t, w.cfg.Store, 0), "the live topic's offset kept")
	require.NotContains(t, logs.String(), "created again")
	require.Equal(t, 1, strings.Count(logs.String(), "not a majority"), logs.String())
	require.Contains(t, logs.String(), "gives no topic IDs")
}

// Every broker answering an ID the topic had before its current one is no
// lag (another cluster, or an earlier one failed back to): it is refused,
// the stored offsets kept, and logged once at error level with the
// statement that applies the topic as a new one.
func TestResumeRefusesARetiredTopicIDEveryBrokerGives(t *testing.T) {
	_, w, logs, current, retired, answer := topicIDCase(t, 1)
	var asked atomic.Int32
	answer(func(_ int32, live *kmsg.MetadataResponse) (*kmsg.MetadataResponse, error) {
		asked.Add(1)
		return withTopicID(live, retiredTopicID), nil
	})
	// The revoke may end a read under way rather than the wait after one:
	// the error line says it was refused.
	require.Error(t, resumeHeld(t, w, &asked))
	require.Equal(t, 1, strings.Count(logs.String(), `"level":"error"`), logs.String())
	require.Contains(t, logs.String(), `"topic_id":"`+retired+`","current":"`+current+`"`)
	require.Contains(t, logs.String(), "array_remove(retired_ids, '"+retired+"')")
	require.NotContains(t, logs.String(), "created again")
}

// A stale replica that moves the stored offset between resuming's read of
// it and its move back (checkLogEnds) makes the move find the offset moved
// (errTakenOver): reading it again is all it takes, so resuming retries
// instead of failing the assignment.
func TestResumeRetriesAnOffsetMovedMeanwhile(t *testing.T) {
	ctx := context.Background()
	names := topics.DefaultNames()
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, names.Commands))
	w, st := newApplierOn(t, c)
	// Stored above the log's end (0): the log lost what was applied.
	_, err := st.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('lockworker', $1, 0, 10)`,
		names.Commands)
	require.NoError(t, err)
	var moved atomic.Bool
	c.ControlKey(int16(kmsg.ListOffsets), func(kmsg.Request) (kmsg.Response, error, bool) {
		// After the read, before the move back: the stale replica commits.
		if !moved.Swap(true) {
			if _, err := st.Pool.Exec(ctx, `UPDATE consumer_offsets SET next_offset = 12 WHERE partition = 0`); err != nil {
				t.Error(err)
			}
		}
		return nil, nil, false
	})

	offsets, err := w.resumeFromStore(ctx, map[string]map[int32]kgo.Offset{names.Commands: {0: kgo.NewOffset()}})
	require.NoError(t, err)
	require.True(t, moved.Load())
	require.Equal(t, kgo.NewOffset().At(0).WithEpoch(-1), offsets[names.Commands][0])
	require.EqualValues(t, 0, storedOffset(t, st, 0))
}

// What kgo itself retries is transient: a broker's connection that died
// under a request, a broker that metadata no longer lists (as while it
// restarts), a cluster without a controller yet; as is another replica's
// move of the stored offset.
func TestTransientCoversKgosRetryableErrors(t *testing.T) {
	c := kafkatest.Cluster(t)
	w, _ := newApplierOn(t, c)
	// kgo's own "unknown broker" error (unexported): no broker has ID -1.
	_, unknown := w.cl.Broker(-1).Request(context.Background(), kmsg.NewPtrMetadataRequest())
	require.Error(t, unknown)
	for _, err := range []error{
		unknown,
		&kadm.ShardErrors{Name: "ListOffsets", Errs: []kadm.ShardError{{Err: unknown}}},
		fmt.Errorf("partition 3: %w", errTakenOver),
		temporary{},
		kerr.LeaderNotAvailable,
		io.ErrUnexpectedEOF,
	} {
		require.True(t, transient(err), "%v", err)
	}
	for _, err := range []error{kerr.PolicyViolation, errors.New("something else")} {
		require.False(t, transient(err), "%v", err)
	}
}

type temporary struct{}

func (temporary) Error() string   { return "temporary" }
func (temporary) Temporary() bool { return true }

// A move of a stored offset that another replica's move to the same place
// beat (the conditional UPDATE matched no row: errTakenOver) was certainly
// not this replica's: when resuming retries and reads the offset where both
// would have put it, this replica reports nothing (the other replica
// reported the loss), rather than reporting it again as its own move whose
// answer was lost.
func TestResumeDoesNotReportAMoveThatLostToAnotherReplicas(t *testing.T) {
	ctx := context.Background()
	names := topics.DefaultNames()
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, names.Commands))
	w, st := newApplierOn(t, c)
	metrics := &lossCount{}
	w.cfg.Metrics = metrics
	// Stored above the log's end (0): the log lost what was applied.
	_, err := st.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('lockworker', $1, 0, 10)`,
		names.Commands)
	require.NoError(t, err)
	var moved atomic.Bool
	c.ControlKey(int16(kmsg.ListOffsets), func(kmsg.Request) (kmsg.Response, error, bool) {
		// After the read, before the move back: the other replica moves it
		// back to the same place (RewindOffset's position: 0, no epoch).
		if !moved.Swap(true) {
			if _, err := st.RewindOffset(ctx, "lockworker", names.Commands, 0, 10, 0, -1); err != nil {
				t.Error(err)
			}
		}
		return nil, nil, false
	})

	offsets, err := w.resumeFromStore(ctx, map[string]map[int32]kgo.Offset{names.Commands: {0: kgo.NewOffset()}})
	require.NoError(t, err)
	require.True(t, moved.Load())
	require.Equal(t, kgo.NewOffset().At(0).WithEpoch(-1), offsets[names.Commands][0])
	require.Zero(t, metrics.n.Load(), "the other replica's move is not reported here")
}

// Only a move whose outcome is unknown is kept to be found made later: not
// one PostgreSQL answered (no row matched, or the statement failed with an
// ERROR and was rolled back), nor one never sent. A FATAL (the backend
// terminated, maybe after committing it locally while waiting for
// synchronous replication) or PANIC leaves it unknown.
func TestOutcomeUnknown(t *testing.T) {
	for _, err := range []error{
		context.DeadlineExceeded,
		fmt.Errorf("rewinding: %w", io.ErrUnexpectedEOF),
		fmt.Errorf("rewinding: %w", &pgconn.PgError{Severity: "FATAL", Code: "57P01"}),
		fmt.Errorf("rewinding: %w", &pgconn.PgError{Severity: "PANIC", Code: "XX000"}),
		fmt.Errorf("rewinding: %w", &pgconn.PgError{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "57P01"}),
	} {
		require.True(t, outcomeUnknown(err), "%v", err)
	}
	for _, err := range []error{
		errTakenOver,
		fmt.Errorf("partition 3: %w", errTakenOver),
		fmt.Errorf("rewinding: %w", &pgconn.PgError{Severity: "ERROR", Code: "40001"}),
		fmt.Errorf("rewinding: %w", &pgconn.PgError{Severity: "FEHLER", SeverityUnlocalized: "ERROR", Code: "40001"}),
		fmt.Errorf("rewinding: %w", notSent{}),
	} {
		require.False(t, outcomeUnknown(err), "%v", err)
	}
}

// notSent is an error pgx raises before sending anything (pgconn.SafeToRetry).
type notSent struct{}

func (notSent) Error() string     { return "not sent" }
func (notSent) SafeToRetry() bool { return true }

// describeTopic asks a broker, not kgo's metadata cache (kadm's listings'
// source, up to 5 s old): right after a topic is deleted and created
// again, the cache still holds the old topic's ID.
func TestDescribeTopicSeesARecreatedTopicAtOnce(t *testing.T) {
	ctx := context.Background()
	names := topics.DefaultNames()
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, names.Commands))
	w, _ := newApplierOn(t, c)
	adm := kadm.NewClient(w.cl)
	old, _, err := describeTopic(ctx, w.cl, names.Commands)
	require.NoError(t, err)
	_, err = adm.ListTopics(ctx, names.Commands) // fills the cache
	require.NoError(t, err)
	_, err = adm.DeleteTopics(ctx, names.Commands)
	require.NoError(t, err)
	_, err = adm.CreateTopic(ctx, 1, 1, nil, names.Commands)
	require.NoError(t, err)
	id, partitions, err := describeTopic(ctx, w.cl, names.Commands)
	require.NoError(t, err)
	require.NotEqual(t, old, id)
	require.Equal(t, 1, partitions)
}
