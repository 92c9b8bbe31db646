package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/topics"
)

// A running worker told by the broker that its log lost records
// (OFFSET_OUT_OF_RANGE past the log end while consuming, then an
// OffsetForLeaderEpoch answer that the epoch of the last record applied
// ends one record earlier) moves the stored offset back to there, retrying
// while PostgreSQL refuses, and applies the records from there: the one read
// again had been applied, so it is answered from its stored outcome (the
// same event again) and not applied twice; one sent while the rewind failed
// is applied once. Meanwhile the worker's other partitions go on. The broker
// here lost nothing: only its answers say so, which is all a worker can see.
func TestRunningWorkerRewindsLostRecords(t *testing.T) {
	e := e2e.New(t)
	ctx := context.Background()
	reply := "locks.replies.lost"
	watch := e.Watch(reply)
	const partition = 5
	send := sendTo(t, e, partition)
	extend := func(id string) topics.Command {
		return cmd("extend", id, "x", "o1", reply, func(c *topics.Command) { c.ExtensionDuration = 10 })
	}
	// Without fetch sessions every fetch lists every partition: in an
	// incremental session, one whose offset is unchanged is left out, so
	// once the worker's fetch at offset 3 returned empty before the Fetch
	// control below is installed (the watch seeing the reply late, on a
	// loaded machine), no later fetch would show that offset to it.
	e.StartWorker(e2e.WorkerOpts{Name: "w", KafkaOpts: []kgo.Opt{kgo.DisableFetchSessions()}})
	send(cmd("acquire", "lost-acquire", "x", "o1", reply, func(c *topics.Command) { c.LeaseDuration = 300 }))
	send(extend("lost-extend-1"))
	send(extend("lost-extend-2")) // offset 2, the one the broker will call lost
	watch.WaitEvent(t, "the last extend applied", e2e.ByRequest(reply, "lost-extend-2", topics.TypeExtended))

	// Rewinds fail while rewinds_fail has a row.
	_, err := e.Store.Pool.Exec(ctx, `
		CREATE SEQUENCE rewinds;
		CREATE TABLE rewinds_fail (at timestamptz);
		INSERT INTO rewinds_fail VALUES (now());
		CREATE FUNCTION fail_rewinds() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.next_offset < OLD.next_offset AND nextval('rewinds') > 0 AND EXISTS (SELECT FROM rewinds_fail) THEN
				RAISE EXCEPTION 'the rewind fails';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER fail_rewinds BEFORE UPDATE ON consumer_offsets FOR EACH ROW EXECUTE FUNCTION fail_rewinds()`)
	require.NoError(t, err)
	rewinds := func() (n int64) {
		require.NoError(t, e.Store.Pool.QueryRow(ctx, `SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM rewinds`).Scan(&n))
		return n
	}

	details, err := kadm.NewClient(e.Producer()).ListTopics(ctx, e.Names.Commands)
	require.NoError(t, err)
	id := [16]byte(details[e.Names.Commands].ID)
	ours := func(topic string, topicID [16]byte, p int32) bool {
		return (topic == e.Names.Commands || topicID == id) && p == partition
	}
	// Every OffsetForLeaderEpoch of the partition: its epoch ends at 2.
	e.Cluster.ControlKey(int16(kmsg.OffsetForLeaderEpoch), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		e.Cluster.KeepControl()
		req := kr.(*kmsg.OffsetForLeaderEpochRequest)
		if len(req.Topics) != 1 || len(req.Topics[0].Partitions) != 1 || !ours(req.Topics[0].Topic, [16]byte{}, req.Topics[0].Partitions[0].Partition) {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
		rt := kmsg.NewOffsetForLeaderEpochResponseTopic()
		rt.Topic = req.Topics[0].Topic
		rp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
		rp.Partition, rp.LeaderEpoch, rp.EndOffset = partition, req.Topics[0].Partitions[0].LeaderEpoch, 2
		rt.Partitions = append(rt.Partitions, rp)
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})
	// The next fetch at offset 3: past the log end.
	e.Cluster.ControlKey(int16(kmsg.Fetch), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		req := kr.(*kmsg.FetchRequest)
		hit := false
		for _, rt := range req.Topics {
			for _, rp := range rt.Partitions {
				hit = hit || ours(rt.Topic, rt.TopicID, rp.Partition) && rp.FetchOffset == 3
			}
		}
		if !hit {
			e.Cluster.KeepControl()
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewFetchResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewFetchResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.HighWatermark, sp.LastStableOffset = rp.FetchOffset, rp.FetchOffset
				if ours(rt.Topic, rt.TopicID, rp.Partition) {
					sp.ErrorCode = kerr.OffsetOutOfRange.Code
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})

	require.Eventually(t, func() bool { return rewinds() >= 2 }, 20*time.Second, 10*time.Millisecond, "the rewind failed and was retried")
	send(extend("lost-extend-3"))
	sendTo(t, e, partition-1)(cmd("acquire", "beside-the-loss", "y", "o1", reply))
	watch.WaitEvent(t, "another partition goes on while the rewind fails", e2e.ByRequest(reply, "beside-the-loss", topics.TypeAcquired))
	_, err = e.Store.Pool.Exec(ctx, `DELETE FROM rewinds_fail`)
	require.NoError(t, err)

	// The record read again is answered from its stored outcome: the same
	// event a second time.
	watch.WaitFor(t, 20*time.Second, "lost-extend-2 answered again", func(rs []e2e.Received) bool {
		var seen []string
		for _, r := range rs {
			if e2e.ByRequest(reply, "lost-extend-2", topics.TypeExtended)(r) {
				seen = append(seen, r.Event.EventID)
			}
		}
		return len(seen) == 2 && seen[0] == seen[1]
	})
	watch.WaitEvent(t, "the one sent during the rewind applied", e2e.ByRequest(reply, "lost-extend-3", topics.TypeExtended))
	send(extend("lost-extend-4"))
	watch.WaitEvent(t, "the partition goes on", e2e.ByRequest(reply, "lost-extend-4", topics.TypeExtended))
	var extensions int64
	require.NoError(t, e.Store.Pool.QueryRow(ctx, `SELECT extension_count FROM lock_holders WHERE lock_name = 'x'`).Scan(&extensions))
	require.Equal(t, int64(4), extensions, "each extend applied once")
	answers := 0
	for _, r := range watch.All() {
		if e2e.ByRequest(reply, "lost-extend-3", topics.TypeExtended)(r) {
			answers++
		}
	}
	require.Equal(t, 1, answers, "the one sent during the rewind answered once")
}

// A worker resuming a partition whose stored offset is past the log's end,
// with no epoch beside it (moved last by an earlier version), moves it back
// to the log's end before fetching, so the next record, numbered there, is
// applied; when listing the end offsets fails, the assignment fails and is
// tried again rather than resumed unchecked.
func TestResumeMovesBackAnOffsetPastTheLogEnd(t *testing.T) {
	e := e2e.New(t)
	ctx := context.Background()
	reply := "locks.replies.past-end"
	watch := e.Watch(reply)
	const partition = 5
	send := sendTo(t, e, partition)
	w := e.StartWorker(e2e.WorkerOpts{Name: "w1"})
	for _, lock := range []string{"a", "b", "c"} {
		send(cmd("acquire", "past-end-"+lock, lock, "o1", reply))
	}
	watch.WaitEvent(t, "the third applied", e2e.ByRequest(reply, "past-end-c", topics.TypeAcquired))
	w.Stop()
	// Records 3..5 were applied and lost; an earlier version stored 6.
	_, err := e.Store.Pool.Exec(ctx, `UPDATE consumer_offsets SET next_offset = 6 WHERE partition = $1`, partition)
	require.NoError(t, err)

	failed := make(chan struct{})
	e.Cluster.ControlKey(int16(kmsg.ListOffsets), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		req := kr.(*kmsg.ListOffsetsRequest)
		select {
		case <-failed:
			return nil, nil, false
		default:
		}
		if len(req.Topics) == 0 || req.Topics[0].Topic != e.Names.Commands {
			e.Cluster.KeepControl()
			return nil, nil, false
		}
		close(failed)
		resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewListOffsetsResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewListOffsetsResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.PolicyViolation.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	w = e.StartWorker(e2e.WorkerOpts{Name: "w2"})
	<-failed
	require.Eventually(t, func() bool { return storedNext(t, w, partition) == 3 }, 30*time.Second, 10*time.Millisecond,
		"the stored offset moved back to the log's end")
	send(cmd("acquire", "past-end-new", "n", "o1", reply))
	watch.WaitEvent(t, "the record at the lost offset applied", e2e.ByRequest(reply, "past-end-new", topics.TypeAcquired))
}

func storedNext(t *testing.T, w *e2e.Worker, partition int32) int64 {
	t.Helper()
	offs, err := w.Store.Offsets(context.Background(), "lockworker", topics.DefaultNames().Commands)
	require.NoError(t, err)
	return offs[partition].Next
}

// sendTo returns a func that produces commands to one partition of e's
// commands topic, each keyed by its lock.
func sendTo(t *testing.T, e *e2e.Env, partition int32) func(topics.Command) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.DefaultProduceTopic(e.Names.Commands),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return func(c topics.Command) {
		t.Helper()
		r := &kgo.Record{Key: []byte(c.LockName), Partition: partition, Value: mustEncode(t, c)}
		require.NoError(t, cl.ProduceSync(context.Background(), r).FirstErr())
	}
}
