package client

import (
	"context"
	"encoding/json"
	"slices"
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

// mangle is a fakeOpts.send that sends each reply as edit makes it of the
// reply's value and type.
func mangle(t *testing.T, edit func(typ string, v []byte) []byte) func(context.Context, []string, *kgo.Record) error {
	var mu sync.Mutex
	var prod *kgo.Client
	return func(ctx context.Context, brokers []string, rec *kgo.Record) error {
		mu.Lock()
		defer mu.Unlock()
		if prod == nil {
			var err error
			if prod, err = kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(0)); err != nil {
				return err
			}
			t.Cleanup(prod.Close)
		}
		ev, err := topics.DecodeEvent(rec.Value)
		if err != nil {
			return err
		}
		rec.Value = edit(ev.Type, rec.Value)
		return prod.ProduceSync(ctx, rec).FirstErr()
	}
}

// setJSON is the JSON object v with its field key set to value.
func setJSON(t *testing.T, v []byte, key string, value any) []byte {
	var m map[string]any
	require.NoError(t, json.Unmarshal(v, &m))
	m[key] = value
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return b
}

// errorLog is a kgo.Logger that keeps the messages logged at LogLevelError.
type errorLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *errorLog) Level() kgo.LogLevel { return kgo.LogLevelError }

func (l *errorLog) Log(level kgo.LogLevel, msg string, _ ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, msg)
}

func (l *errorLog) logged() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.msgs)
}

// A reply that does not decode as an event is not dropped unread, leaving
// its call to fail ErrNoReply after RequestTimeout, although it was
// answered: the call fails with it at once, with the version error of a
// later version's reply (docs/design.md "Compatibility": here v 2 reshaped
// lock_info), else saying why it does not decode; an acquire so answered is
// given back. A reply whose request_id cannot be read is named by the
// ErrNoReply of the command it leaves unanswered. Each is logged, lease
// ends too, which cannot be matched to their lease.
func TestUndecodableReply(t *testing.T) {
	reshaped := func(typ string, v []byte) []byte { return setJSON(t, setJSON(t, v, "v", 2), "lock_info", []any{}) }
	t.Run("a later version's", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, _ := fakeWorkerWith(t, fakeOpts{send: mangle(t, reshaped)}, answerQueriesOnce())
		_, err := c.Query(ctx, "later")
		require.ErrorContains(t, err, "query answered lock.status of v 2, and this client reads v 1: upgrade it")
	})
	t.Run("a later version's grant is given back", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		released := make(chan topics.Command, 1)
		c, _ := fakeWorkerWith(t, fakeOpts{send: mangle(t, func(typ string, v []byte) []byte {
			if typ == topics.TypeAcquired {
				return reshaped(typ, v)
			}
			return v
		})}, func(ctx context.Context, cmd topics.Command) []topics.Event {
			switch cmd.Operation {
			case topics.OpAcquire:
				return one(granted(cmd, topics.TypeAcquired, 60))
			case topics.OpRelease:
				deliver(ctx, released, cmd)
				return one(releasedEvent(cmd))
			}
			return nil
		})
		_, err := c.Acquire(ctx, "later")
		require.ErrorContains(t, err, "acquire answered lock.acquired of v 2, and this client reads v 1: upgrade it")
		select {
		case cmd := <-released:
			require.Equal(t, "later", cmd.LockName)
		case <-ctx.Done():
			t.Fatal("the undecodable grant of a later version is not given back")
		}
	})
	t.Run("of this version", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		logs := &errorLog{}
		c, _ := fakeWorkerWith(t, fakeOpts{
			config: func(cfg *Config) { cfg.KafkaOpts = append(cfg.KafkaOpts, kgo.WithLogger(logs)) },
			send: mangle(t, func(typ string, v []byte) []byte {
				return setJSON(t, v, "occurred_at", "yesterday")
			})}, answerQueriesOnce())
		_, err := c.Query(ctx, "damaged")
		require.ErrorContains(t, err, `query answered: undecodable reply "lock.status" (v 1, request_id "`)
		require.ErrorContains(t, err, `at offset 0 of partition 0: decoding event: parsing time "yesterday"`)
		require.Len(t, logs.logged(), 1)
		require.Contains(t, logs.logged()[0], `lockworker client: undecodable reply "lock.status" (v 1, request_id "`)
	})
	t.Run("of no request_id", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, _ := fakeWorkerWith(t, fakeOpts{
			config: func(cfg *Config) { cfg.RequestTimeout = 2 * time.Second },
			send:   mangle(t, func(string, []byte) []byte { return []byte("not JSON") })}, answerQueriesOnce())
		_, err := c.Query(ctx, "unreadable")
		require.ErrorIs(t, err, ErrNoReply)
		require.ErrorContains(t, err, `: undecodable reply "" (v 0, request_id "") at offset 0 of partition 0: decoding event: invalid character`)
	})
	t.Run("a lease's end", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		logs := &errorLog{}
		c, _ := fakeWorkerWith(t, fakeOpts{
			config: func(cfg *Config) { cfg.KafkaOpts = append(cfg.KafkaOpts, kgo.WithLogger(logs)) },
			send: mangle(t, func(typ string, v []byte) []byte {
				if typ == topics.TypeExpired { // of no request_id, as the worker's
					return setJSON(t, reshaped(typ, v), "request_id", nil)
				}
				return v
			})}, func(ctx context.Context, cmd topics.Command) []topics.Event {
			switch cmd.Operation {
			case topics.OpAcquire:
				ev := granted(cmd, topics.TypeAcquired, 60)
				end := topics.NewEvent(topics.TypeExpired, "", "", time.Now())
				end.LockInfo = ev.LockInfo
				return []topics.Event{ev, end}
			case topics.OpQuery:
				return answerQueriesOnce()(ctx, cmd)
			}
			return nil
		})
		_, err := c.Acquire(ctx, "ends", WithoutKeepAlive())
		require.NoError(t, err)
		_, err = c.Query(ctx, "after") // its reply comes after the end's
		require.NoError(t, err)
		require.Len(t, logs.logged(), 1)
		require.Contains(t, logs.logged()[0], `lockworker client: undecodable reply "lock.expired" (v 2, request_id "") at offset 1 of partition 0: decoding event: json: cannot unmarshal array`)
	})
}
