package client

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/topics"
)

// failProduce has the broker refuse (INVALID_RECORD, which kgo does not
// retry) the n-th produce request to topic, once it called hold, which
// holds it as long as it likes: the broker serves other connections
// meanwhile.
func failProduce(t *testing.T, cluster *kfake.Cluster, topic string, n int32, hold func()) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	details, err := kadm.NewClient(cl).ListTopics(t.Context(), topic)
	require.NoError(t, err)
	id := details[topic].ID
	var seen atomic.Int32
	cluster.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		req := kr.(*kmsg.ProduceRequest)
		ours := false
		for _, tp := range req.Topics {
			ours = ours || tp.Topic == topic || tp.TopicID == id
		}
		if !ours || seen.Add(1) != n {
			return nil, nil, false
		}
		cluster.SleepControl(hold)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, tp := range req.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic, rt.TopicID = tp.Topic, tp.TopicID
			for _, p := range tp.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, kerr.InvalidRecord.Code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
}

// A copy of a command sent again (its first answer was late) that fails
// to go out after an answer was read (lock.queued) fails nothing: the
// worker has the command, and the acquire waits on for its grant, rather
// than failing ErrUnreachable and withdrawing what the worker had queued.
// Should no grant come, the acquire fails ErrNoReply, saying that sending
// failed.
func TestSendFailingAfterAnAnswer(t *testing.T) {
	for _, grant := range []bool{true, false} {
		t.Run(map[bool]string{true: "granted", false: "unanswered"}[grant], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			resent := make(chan struct{})       // the second copy reached the broker
			queuedRead := make(chan struct{})   // the client read lock.queued
			var acquires, releases atomic.Int32 // as the worker sees them
			c, cluster := fakeWorkerWith(t, fakeOpts{config: func(cfg *Config) { cfg.RequestTimeout = 3 * time.Second }},
				func(ctx context.Context, cmd topics.Command) []topics.Event {
					switch cmd.Operation {
					case topics.OpAcquire:
						switch acquires.Add(1) {
						case 1:
							// Answered once the copy sent again (after
							// ReplyTimeout) is on its way, so that its
							// failure comes after the answer.
							select {
							case <-resent:
							case <-ctx.Done():
							}
							return one(queuedEvent(cmd))
						case 2:
							if grant {
								return one(granted(cmd, topics.TypeAcquired, 30))
							}
						}
					case topics.OpRelease:
						releases.Add(1)
						return one(releasedEvent(cmd))
					}
					return nil
				})
			failProduce(t, cluster, c.Topics().Commands, 2, func() {
				close(resent)
				select {
				case <-queuedRead:
				case <-ctx.Done():
				}
			})
			var once sync.Once
			l, err := c.Acquire(ctx, "resent", WithWait(time.Second), WithoutKeepAlive(),
				OnQueued(func(int) { once.Do(func() { close(queuedRead) }) }))
			if !grant {
				require.ErrorIs(t, err, ErrNoReply)
				require.ErrorContains(t, err, "(sending it again failed: INVALID_RECORD")
				return
			}
			require.NoError(t, err)
			require.Equal(t, int32(2), acquires.Load(), "the first copy, and the one sent after the wait")
			require.Zero(t, releases.Load(), "nothing withdrawn")
			require.NoError(t, l.Release(ctx))
		})
	}
}
