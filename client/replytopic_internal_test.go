package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/topics"
)

// relaySend sends rec as the workers' relay does to a reply topic: the
// topic created first when it is missing, with partitions partitions (the
// broker's default, for the relay), and the record put in its key's
// partition of the topic as it is now (a new client per record: a
// long-lived producer learns of partitions added at its next metadata
// refresh, and refuses a topic created again until it purges it, as the
// relay does).
func relaySend(partitions int32) func(ctx context.Context, brokers []string, rec *kgo.Record) error {
	return func(ctx context.Context, brokers []string, rec *kgo.Record) error {
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(0))
		if err != nil {
			return err
		}
		defer cl.Close()
		if _, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, rec.Topic); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return err
		}
		return cl.ProduceSync(ctx, rec).FirstErr()
	}
}

// answerQueriesOnce answers the first copy of each query (a resend gets
// nothing, as if the answer were an event no resend asks again for, a
// lease's lock.expired say), but those of the locks in silent.
func answerQueriesOnce(silent ...string) func(context.Context, topics.Command) []topics.Event {
	var mu sync.Mutex
	answered := map[string]bool{}
	return func(_ context.Context, cmd topics.Command) []topics.Event {
		mu.Lock()
		defer mu.Unlock()
		if cmd.Operation != topics.OpQuery || answered[cmd.RequestID] {
			return nil
		}
		for _, s := range silent {
			if cmd.LockName == s {
				return nil
			}
		}
		answered[cmd.RequestID] = true
		ev := topics.NewEvent(topics.TypeStatus, cmd.Operation, cmd.RequestID, time.Now())
		ev.LockInfo = &topics.LockInfo{Namespace: cmd.Namespace, LockName: cmd.LockName, Status: topics.StatusFree, Limit: 1}
		return one(ev)
	}
}

// lockOn is a lock name whose replies go to partition p of c's reply
// topic of n partitions.
func lockOn(c *Client, p int32, n int) string {
	for i := 0; ; i++ {
		if name := fmt.Sprintf("on-%d-%d", p, i); keyPartition(name, n) == p {
			return name
		}
	}
}

// adminOf is an admin client of cluster.
func adminOf(t *testing.T, cluster *kfake.Cluster) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// The reply topic deleted while the client runs (an operator's
// kafka-topics.sh --delete) and created again by the workers' relay, as it
// publishes a reply there, is read again: kgo refuses to follow a topic's
// new ID by itself, so the reader drops the old one and reads every
// partition of the new one (more than the old one had: the relay creates
// it with the broker's default) from its start. The reply that had the
// topic created again, written before the reader noticed and not sent
// again, reaches its caller, and so do replies on each partition. While it
// is missing, a command unanswered fails with ErrNoReply saying so; when
// it is created again at once, the client notices the new ID.
func TestReplyTopicCreatedAgain(t *testing.T) {
	const n = 3
	for _, missing := range []bool{true, false} {
		t.Run(fmt.Sprintf("missing a while %t", missing), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, cluster := fakeWorkerWith(t, fakeOpts{send: relaySend(n), config: func(cfg *Config) { cfg.RequestTimeout = 15 * time.Second }},
				answerQueriesOnce("gone"))
			_, err := c.Query(ctx, "before")
			require.NoError(t, err)

			adm := adminOf(t, cluster)
			resp, err := adm.DeleteTopic(ctx, c.ReplyTopic())
			require.NoError(t, err)
			require.NoError(t, resp.Err)
			if missing {
				_, err = c.Query(ctx, "gone") // unanswered: nothing creates the topic again
				require.ErrorIs(t, err, ErrNoReply)
				assert.ErrorContains(t, err, fmt.Sprintf("reply topic %q not found since", c.ReplyTopic()))
				t.Log(err)
				_, err = c.Query(ctx, "again")
				require.NoError(t, err, "the reply that created the topic again")
			} else {
				created, err := adm.CreateTopic(ctx, n, 1, nil, c.ReplyTopic())
				require.NoError(t, err)
				require.NoError(t, created.Err)
			}
			for p := range int32(n) {
				_, err := c.Query(ctx, lockOn(c, p, n))
				require.NoError(t, err, "a reply on partition %d of the new topic", p)
			}
		})
	}
}

// Partitions added to the reply topic while the client runs (an
// operator's --alter) are read from their start once the client noticed:
// a reply keyed to a new partition reaches its caller, although it is not
// sent again (the client looks the topic up as it sends its command
// again).
func TestReplyTopicPartitionsAdded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, cluster := fakeWorkerWith(t, fakeOpts{send: relaySend(1), config: func(cfg *Config) { cfg.RequestTimeout = 15 * time.Second }},
		answerQueriesOnce())
	_, err := c.Query(ctx, "before")
	require.NoError(t, err)

	const n = 3
	resp, err := adminOf(t, cluster).UpdatePartitions(ctx, n, c.ReplyTopic())
	require.NoError(t, err)
	require.NoError(t, resp.Error())
	for p := int32(1); p < n; p++ {
		_, err := c.Query(ctx, lockOn(c, p, n))
		require.NoError(t, err, "a reply on the new partition %d", p)
	}
}

// purgeLog is a kgo.Logger that tells when kgo drops topic from a
// client's consumer (PurgeTopicsFromClient): it logs "assigning
// partitions" why "purge of [topic] requested".
type purgeLog struct {
	topic  atomic.Value // string: set after New, read by kgo's goroutines
	purged atomic.Bool
}

func (l *purgeLog) Level() kgo.LogLevel { return kgo.LogLevelInfo }

func (l *purgeLog) Log(_ kgo.LogLevel, msg string, keyvals ...any) {
	if msg != "assigning partitions" {
		return
	}
	topic, _ := l.topic.Load().(string)
	for i := 0; i+1 < len(keyvals); i += 2 {
		if keyvals[i] == "why" && keyvals[i+1] == fmt.Sprintf("purge of %v requested", []string{topic}) {
			l.purged.Store(true)
		}
	}
}

// The reply reader refused its topic's ID (UNKNOWN_TOPIC_ID) while every
// look-up finds the topic there, with the ID the reader was given, drops
// the topic and adds it back where it was. kgo's reader refuses every
// fetch so when it holds another ID than the look-ups find (a broker
// lagging a quick deletion and creation answered its own metadata
// request), until the topic is dropped and added back: the broker here
// refuses the reader's fetches until kgo drops the topic. The reply
// written while the reader was refused reaches its caller, although it is
// not sent again.
func TestReplyTopicRefusedWhileThere(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logs := &purgeLog{}
	c, cluster := fakeWorkerWith(t, fakeOpts{config: func(cfg *Config) {
		cfg.RequestTimeout = 30 * time.Second
		cfg.KafkaOpts = append(cfg.KafkaOpts, kgo.WithLogger(logs))
	}}, answerQueriesOnce())
	logs.topic.Store(c.ReplyTopic())
	_, err := c.Query(ctx, "before")
	require.NoError(t, err)

	ti := cluster.TopicInfo(c.ReplyTopic())
	require.NotNil(t, ti)
	// resumed is the offset the reader first fetches from once dropped:
	// past the reply to "before" (offset 0), not from the start again.
	var resumed atomic.Int64
	resumed.Store(-1)
	refusing := cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, TopicID: ti.TopicID, Err: kerr.UnknownTopicID, Count: -1,
		When: func(req kmsg.Request) bool {
			if !logs.purged.Load() {
				return true
			}
			for _, rt := range req.(*kmsg.FetchRequest).Topics {
				for _, rp := range rt.Partitions {
					if rt.TopicID == ti.TopicID {
						resumed.CompareAndSwap(-1, rp.FetchOffset)
					}
				}
			}
			return false
		}})
	defer refusing.Remove()
	start := time.Now()
	_, err = c.Query(ctx, "refused")
	require.NoError(t, err, "the reply written while the reader was refused")
	assert.Positive(t, refusing.Hits())
	assert.True(t, logs.purged.Load())
	assert.EqualValues(t, 1, resumed.Load(), "where the reader resumed")
	t.Logf("answered after %s, %d fetches refused", time.Since(start).Round(time.Millisecond), refusing.Hits())
	_, err = c.Query(ctx, "after")
	require.NoError(t, err)
}

// A record batch of the reply topic that decompresses past the reader's
// bound (here lowered by KafkaOpts, which come after the SDK's default)
// is skipped unread: kgo fetches the partition no further until moved
// past it, and the reply written after it reaches its caller, although it
// is not sent again.
func TestReplyBatchTooLargeIsSkipped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, cluster := fakeWorkerWith(t, fakeOpts{config: func(cfg *Config) {
		cfg.RequestTimeout = 15 * time.Second
		cfg.KafkaOpts = append(cfg.KafkaOpts, kgo.MaxDecompressBatchBytes(16<<10))
	}}, answerQueriesOnce())
	_, err := c.Query(ctx, "before")
	require.NoError(t, err)
	kafkatest.Bomb(t, cluster, c.ReplyTopic(), 0, "bomb", 20<<10)
	_, err = c.Query(ctx, "after")
	require.NoError(t, err, "the reply after the batch")
}

// Record batches of the reply topic past the reader's bound in a row are
// skipped one after the other: a batch skipped is progress, as a record
// is, so no pause follows it as one follows a poll of fetch errors only
// (100 ms doubling to 1 s, 3.5 s for six), and the reply after them is
// read at once.
func TestReplyBatchesTooLargeInARowDoNotPause(t *testing.T) {
	const batches = 6
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, cluster := fakeWorkerWith(t, fakeOpts{config: func(cfg *Config) {
		cfg.RequestTimeout = 15 * time.Second
		cfg.KafkaOpts = append(cfg.KafkaOpts, kgo.MaxDecompressBatchBytes(16<<10))
	}}, answerQueriesOnce())
	_, err := c.Query(ctx, "before")
	require.NoError(t, err)
	for range batches {
		kafkatest.Bomb(t, cluster, c.ReplyTopic(), 0, "bomb", 20<<10)
	}
	start := time.Now()
	_, err = c.Query(ctx, "after")
	require.NoError(t, err, "the reply after the batches")
	require.Less(t, time.Since(start), 500*time.Millisecond, "%d batches skipped in a row", batches)
}
