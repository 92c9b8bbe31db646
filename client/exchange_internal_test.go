package client

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
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

// A copy of a command sent again (unanswered after ReplyTimeout) that fails
// to go out after an earlier copy was delivered (acknowledged by the
// broker) fails nothing: the worker has the command, and its answer is
// waited for, rather than the call failing ErrUnreachable and an acquire
// being withdrawn. Should no answer come, the call fails ErrNoReply, saying
// that sending failed.
func TestSendFailingAfterDelivery(t *testing.T) {
	for _, answer := range []bool{true, false} {
		t.Run(map[bool]string{true: "answered", false: "unanswered"}[answer], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var acquires, releases atomic.Int32 // as the worker sees them
			c, cluster := fakeWorkerWith(t, fakeOpts{config: func(cfg *Config) { cfg.RequestTimeout = 5 * time.Second }},
				func(ctx context.Context, cmd topics.Command) []topics.Event {
					switch cmd.Operation {
					case topics.OpAcquire:
						// The first copy's answer is lost; the second
						// copy fails at the broker; the third is answered.
						if acquires.Add(1) == 2 && answer {
							return one(granted(cmd, topics.TypeAcquired, 30))
						}
					case topics.OpRelease:
						releases.Add(1)
						return one(releasedEvent(cmd))
					}
					return nil
				})
			failProduce(t, cluster, c.Topics().Commands, 2, func() {})
			l, err := c.Acquire(ctx, "resent", WithoutKeepAlive())
			if !answer {
				require.ErrorIs(t, err, ErrNoReply)
				require.ErrorContains(t, err, "(sending it again failed: INVALID_RECORD")
				return
			}
			require.NoError(t, err)
			require.Equal(t, int32(2), acquires.Load(), "the first copy and the third")
			require.Zero(t, releases.Load(), "nothing withdrawn")
			require.NoError(t, l.Release(ctx))
		})
	}
}

// mangle is a fakeOpts.send that sends each reply as edit makes it of the
// reply's value and type. Each with a client of its own, closed once the
// reply was sent: one kept until the test's clean-up may be closed while a
// reply is on its way, as the client may read it before the broker's
// acknowledgement comes back, and the test end there.
func mangle(edit func(typ string, v []byte) []byte) func(context.Context, []string, *kgo.Record) error {
	return func(ctx context.Context, brokers []string, rec *kgo.Record) error {
		ev, err := topics.DecodeEvent(rec.Value)
		if err != nil {
			return err
		}
		rec.Value = edit(ev.Type, rec.Value)
		prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(0))
		if err != nil {
			return err
		}
		defer prod.Close()
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

// errorLog is a kgo.Logger that keeps the messages logged at LogLevelError,
// and their keys and values.
type errorLog struct {
	mu      sync.Mutex
	msgs    []string
	keyvals [][]any
}

func (l *errorLog) Level() kgo.LogLevel { return kgo.LogLevelError }

func (l *errorLog) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, msg)
	l.keyvals = append(l.keyvals, keyvals)
}

func (l *errorLog) logged() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.msgs)
}

// keyvalsOf are the keys and values logged with the i-th message.
func (l *errorLog) keyvalsOf(i int) []any {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.keyvals[i]
}

// A reply that does not decode as an event is not dropped unread, leaving
// its call to fail ErrNoReply after RequestTimeout, although it was
// answered: the call fails with it at once (ErrUndecodableReply), with the
// version error of a later version's reply (docs/design.md
// "Compatibility": here v 2 reshaped lock_info), else saying why it does
// not decode; an acquire so answered is given back. A reply whose request_id cannot be read is named by the
// ErrNoReply of the command it leaves unanswered. Each is logged, lease
// ends too, which cannot be matched to their lease.
func TestUndecodableReply(t *testing.T) {
	reshaped := func(typ string, v []byte) []byte { return setJSON(t, setJSON(t, v, "v", 2), "lock_info", []any{}) }
	t.Run("a later version's", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, _ := fakeWorkerWith(t, fakeOpts{send: mangle(reshaped)}, answerQueriesOnce())
		_, err := c.Query(ctx, "later")
		require.ErrorIs(t, err, ErrUndecodableReply)
		require.ErrorContains(t, err, "query answered lock.status of v 2, and this client reads v 1: upgrade it")
	})
	t.Run("a later version's, of a long type", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, _ := fakeWorkerWith(t, fakeOpts{send: mangle(func(typ string, v []byte) []byte {
			return setJSON(t, setJSON(t, v, "v", 2), "type", strings.Repeat("T", 4096))
		})}, answerQueriesOnce())
		_, err := c.Query(ctx, "later")
		require.ErrorContains(t, err, "query answered TTTT")
		require.ErrorContains(t, err, "T...(cut from 4096 bytes) of v 2, and this client reads v 1: upgrade it")
	})
	t.Run("a later version's grant is given back", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		released := make(chan topics.Command, 1)
		c, _ := fakeWorkerWith(t, fakeOpts{send: mangle(func(typ string, v []byte) []byte {
			if typ == topics.TypeAcquired {
				return reshaped(typ, v)
			}
			return v
		})}, answers{
			topics.OpAcquire: grants(topics.TypeAcquired, 60),
			topics.OpRelease: delivering(released, answerWith(releasedEvent)),
		}.by(nil))
		_, err := c.Acquire(ctx, "later")
		require.ErrorContains(t, err, "acquire answered lock.acquired of v 2, and this client reads v 1: upgrade it")
		cmd := await(t, ctx, released, "the undecodable grant of a later version is not given back")
		require.Equal(t, "later", cmd.LockName)
	})
	t.Run("of this version", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		logs := &errorLog{}
		c, _ := fakeWorkerWith(t, fakeOpts{
			config: func(cfg *Config) { cfg.KafkaOpts = append(cfg.KafkaOpts, kgo.WithLogger(logs)) },
			send: mangle(func(typ string, v []byte) []byte {
				return setJSON(t, v, "occurred_at", "yesterday")
			})}, answerQueriesOnce())
		_, err := c.Query(ctx, "damaged")
		require.ErrorIs(t, err, ErrUndecodableReply)
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
			send:   mangle(func(string, []byte) []byte { return []byte("not JSON") })}, answerQueriesOnce())
		_, err := c.Query(ctx, "unreadable")
		require.ErrorIs(t, err, ErrNoReply)
		require.NotErrorIs(t, err, ErrUndecodableReply, "not answered: its answer maybe")
		require.ErrorContains(t, err, `: undecodable reply "" (v 0, request_id "") at offset 0 of partition 0: decoding event: invalid character`)
	})
	t.Run("a lease's end", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		logs := &errorLog{}
		c, _ := fakeWorkerWith(t, fakeOpts{
			config: func(cfg *Config) { cfg.KafkaOpts = append(cfg.KafkaOpts, kgo.WithLogger(logs)) },
			send: mangle(func(typ string, v []byte) []byte {
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

// A flood of undecodable records on the reply topic (anyone who may produce
// to it may write one, of up to 8 MiB) is logged one line every
// undecodableLogEvery, counting the records left unlogged since the last
// line, and what the line quotes of a record is cut: the ErrNoReply that
// names one stays as short.
func TestUndecodableFloodBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logs := &errorLog{}
	silent := make(chan struct{}, 1)
	c, cluster := fakeWorkerWith(t, fakeOpts{config: func(cfg *Config) {
		cfg.RequestTimeout = 5 * time.Second
		cfg.KafkaOpts = append(cfg.KafkaOpts, kgo.WithLogger(logs))
	}}, answerSilentQuery(silent))
	prod, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.DefaultProduceTopic(c.ReplyTopic()),
		kgo.ProducerBatchMaxBytes(2<<20))
	require.NoError(t, err)
	defer prod.Close()

	errc := make(chan error, 1)
	go func() { _, err := c.Query(ctx, "silent"); errc <- err }()
	<-silent // sent: what is read from now on may explain its ErrNoReply

	const flood = 1000
	var recs []*kgo.Record
	for i := range flood {
		recs = append(recs, &kgo.Record{Value: fmt.Appendf(nil, "not JSON %d", i)})
	}
	require.NoError(t, prod.ProduceSync(ctx, recs...).FirstErr())
	read := func(offset int) func() bool { // the reader read the record at offset
		return func() bool {
			c.reply.mu.Lock()
			defer c.reply.mu.Unlock()
			return c.reply.undecodable != nil && strings.Contains(c.reply.undecodable.Error(), fmt.Sprintf(" at offset %d ", offset))
		}
	}
	require.Eventually(t, read(flood-1), 10*time.Second, 10*time.Millisecond)
	require.Len(t, logs.logged(), 1, "the first record's line only")
	require.Contains(t, logs.logged()[0], `undecodable reply "" (v 0, request_id "") at offset 0 of partition 0: decoding event: invalid character`)

	// As if undecodableLogEvery had passed: the next record is logged.
	c.reply.mu.Lock()
	c.reply.undecodableLogged = c.reply.undecodableLogged.Add(-undecodableLogEvery)
	c.reply.mu.Unlock()
	big := strings.Repeat("A", 256<<10)
	require.NoError(t, prod.ProduceSync(ctx, &kgo.Record{
		Value: []byte(`{"v":1,"type":"` + big + `","request_id":0,"occurred_at":"` + big + `"}`),
	}).FirstErr())
	require.Eventually(t, read(flood), 10*time.Second, 10*time.Millisecond)
	require.Len(t, logs.logged(), 2)
	line := logs.logged()[1]
	t.Logf("%d bytes: %s", len(line), line)
	require.Less(t, len(line), 1000)
	require.Contains(t, line, `undecodable reply "AAAA`)
	require.Contains(t, line, `...(cut from 262144 bytes)" (v 1, request_id "") at offset 1000 of partition 0: decoding event: `)
	require.Equal(t, []any{"topic", c.ReplyTopic(), "skipped_since_last_line", flood - 1}, logs.keyvalsOf(1))

	err = <-errc
	require.ErrorIs(t, err, ErrNoReply)
	require.ErrorContains(t, err, "...(cut from 262144 bytes)")
	require.Less(t, len(err.Error()), 1500)
}

// answerSilentQuery is answerQueriesOnce("silent"), which tells sent when
// the query of "silent" reached the worker.
func answerSilentQuery(sent chan<- struct{}) func(context.Context, topics.Command) []topics.Event {
	queries := answerQueriesOnce("silent")
	return func(ctx context.Context, cmd topics.Command) []topics.Event {
		if cmd.LockName == "silent" {
			deliver(ctx, sent, struct{}{})
		}
		return queries(ctx, cmd)
	}
}

// An unanswered command's ErrNoReply names an undecodable record only when
// its request_id could not be read, so that it may be the answer: not one
// that names another call's request_id, nor one without a request_id (a
// lease's end, which answers no command).
func TestUndecodableNamedOnlyWhenAnyones(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	silent := make(chan struct{}, 1)
	c, cluster := fakeWorkerWith(t, fakeOpts{config: func(cfg *Config) { cfg.RequestTimeout = 2 * time.Second }}, answerSilentQuery(silent))
	prod, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.DefaultProduceTopic(c.ReplyTopic()))
	require.NoError(t, err)
	defer prod.Close()
	errc := make(chan error, 1)
	go func() { _, err := c.Query(ctx, "silent"); errc <- err }()
	<-silent
	require.NoError(t, prod.ProduceSync(ctx,
		&kgo.Record{Value: []byte(`{"v":1,"type":"lock.status","request_id":["anyone's"],"occurred_at":"x"}`)},
		&kgo.Record{Value: []byte(`{"v":1,"type":"lock.status","request_id":"0190aaaa-not-this-call","occurred_at":"x"}`)},
		&kgo.Record{Value: []byte(`{"v":1,"type":"lock.expired","occurred_at":"x"}`)},
	).FirstErr())
	err = <-errc
	require.ErrorIs(t, err, ErrNoReply)
	require.ErrorContains(t, err, `undecodable reply "lock.status" (v 1, request_id "") at offset 0 of partition 0`)
	require.NotContains(t, err.Error(), "0190aaaa-not-this-call")
	require.NotContains(t, err.Error(), "lock.expired")
}

// A WithOwner acquire answered by a lock.queued the client cannot read (of
// a later version, or damaged) is withdrawn, as one read would be: the
// type says the worker queued it, and would grant it later to an owner
// nobody tracks.
func TestUndecodableQueuedWithdrawn(t *testing.T) {
	for _, tc := range []struct {
		name, says string
		edit       func(v []byte) []byte
	}{
		{"damaged", `acquire answered: undecodable reply "lock.queued" (v 1`, func(v []byte) []byte { return setJSON(t, v, "occurred_at", "yesterday") }},
		{"a later version's", "acquire answered lock.queued of v 2", func(v []byte) []byte { return setJSON(t, v, "v", 2) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			released := make(chan topics.Command, 1)
			c, _ := fakeWorkerWith(t, fakeOpts{send: mangle(func(typ string, v []byte) []byte {
				if typ == topics.TypeQueued {
					return tc.edit(v)
				}
				return v
			})}, answers{
				topics.OpAcquire: answerWith(queuedEvent),
				topics.OpRelease: delivering(released, answerWith(releasedEvent)),
			}.by(nil))
			_, err := c.Acquire(ctx, "q", WithOwner("shared-owner"), WithWait(10*time.Second))
			require.ErrorIs(t, err, ErrUndecodableReply)
			require.ErrorContains(t, err, tc.says)
			cmd := await(t, ctx, released, "the queued acquire is not withdrawn")
			require.Equal(t, "q", cmd.LockName)
			require.Equal(t, "shared-owner", cmd.OwnerID)
		})
	}
}

// TestQueuedAnsweredQueuedAgainGivesUp: a queued acquire whose resends are
// answered the stored lock.queued again (the worker's scheduler behind, or
// a duplicate from the relay) gives up at the first lock.queued's wait +
// 1 s + RequestTimeout: a later lock.queued moves neither its resend nor
// its give-up, which would otherwise never come.
func TestQueuedAnsweredQueuedAgainGivesUp(t *testing.T) {
	var mu sync.Mutex
	stored := map[string]topics.Event{} // by request_id: the stored lock.queued
	c, _ := fakeWorkerWith(t, fakeOpts{config: func(cfg *Config) {
		cfg.ReplyTimeout = time.Second
		cfg.RequestTimeout = 2 * time.Second
	}}, func(_ context.Context, cmd topics.Command) []topics.Event {
		switch cmd.Operation {
		case topics.OpAcquire:
			mu.Lock()
			defer mu.Unlock()
			ev, ok := stored[cmd.RequestID]
			if !ok {
				ev = queuedEvent(cmd)
				stored[cmd.RequestID] = ev
			}
			return one(ev)
		case topics.OpRelease:
			return one(releasedEvent(cmd))
		}
		return nil
	})
	// Given up at about 4 s; each lock.queued moving the give-up, the
	// context's deadline would come first.
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
	defer cancel()
	_, err := c.Acquire(ctx, "stuck", WithWait(time.Second))
	require.ErrorIs(t, err, ErrNoReply)
}

// A RequestTimeout shorter than ReplyTimeout bounds the command: it fails
// ErrNoReply at RequestTimeout, sent once, not at the resend ReplyTimeout
// later; and after lock.queued at the acquire's wait + 1 s + RequestTimeout,
// not at its resend, ReplyTimeout past the wait.
func TestRequestTimeoutShorterThanReplyTimeout(t *testing.T) {
	const requestTimeout = time.Second
	for _, tc := range []struct {
		name   string
		call   func(ctx context.Context, c *Client) error
		within time.Duration // RequestTimeout after what the worker says, and leeway
	}{
		{"unanswered", func(ctx context.Context, c *Client) error {
			_, err := c.Query(ctx, "silent")
			return err
		}, requestTimeout + time.Second},
		{"queued, then unanswered", func(ctx context.Context, c *Client) error {
			_, err := c.Acquire(ctx, "silent", WithWait(time.Second))
			return err
		}, time.Second + time.Second + requestTimeout + time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := fakeWorkerWith(t, fakeOpts{config: func(cfg *Config) {
				cfg.ReplyTimeout = 5 * time.Second
				cfg.RequestTimeout = requestTimeout
			}}, func(_ context.Context, cmd topics.Command) []topics.Event {
				switch cmd.Operation {
				case topics.OpAcquire:
					return one(queuedEvent(cmd)) // and never granted
				case topics.OpRelease: // the withdrawal
					return one(releasedEvent(cmd))
				}
				return nil
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			err := tc.call(ctx, c)
			took := time.Since(start)
			require.ErrorIs(t, err, ErrNoReply)
			require.ErrorContains(t, err, "sent 1 times")
			require.Less(t, took, tc.within, "ErrNoReply after %s: %v", took, err)
		})
	}
}

// Do given one RequestID twice at once (a hedged resend of one command)
// hands the answer to both calls: neither takes the other's place, nor
// removes it when it returns first.
func TestDoSameRequestIDAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		// firstGivesUp: the first Do is cancelled once both copies reached
		// the worker, which answers only a later copy (the second Do's
		// resend).
		firstGivesUp bool
	}{{"both answered", false}, {"one given up", true}} {
		t.Run(tc.name, func(t *testing.T) {
			firstSent, bothSent := make(chan struct{}), make(chan struct{})
			var queries atomic.Int32
			c, _ := fakeWorkerWith(t, fakeOpts{config: func(cfg *Config) { cfg.RequestTimeout = 3 * time.Second }},
				func(_ context.Context, cmd topics.Command) []topics.Event {
					switch queries.Add(1) {
					case 1: // answered with the second
						close(firstSent)
						return nil
					case 2:
						close(bothSent)
						if tc.firstGivesUp {
							return nil
						}
					}
					return one(statusEvent(cmd))
				})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			firstCtx, giveUp := context.WithCancel(ctx)
			defer giveUp()
			cmd := c.command(topics.OpQuery, "hedged")
			errs := make(chan error, 2)
			go func() { _, err := c.Do(firstCtx, cmd); errs <- err }()
			second := make(chan error, 1)
			go func() {
				// Sent once the first copy reached the worker: both wait.
				select {
				case <-firstSent:
				case <-ctx.Done():
				}
				_, err := c.Do(ctx, cmd)
				second <- err
			}()
			await(t, ctx, bothSent, "the two copies did not reach the worker")
			if tc.firstGivesUp {
				giveUp()
				require.ErrorIs(t, <-errs, context.Canceled)
			} else {
				require.NoError(t, <-errs, "first Do")
			}
			require.NoError(t, <-second, "second Do")
			c.mu.Lock()
			defer c.mu.Unlock()
			require.Empty(t, c.calls, "each call removed its own")
		})
	}
}

// OnQueued is called once for one wait: a lock.queued read again (the same
// event twice, as an at-least-once relay may publish it, or the stored one
// answered to a resend) carries the first one's position, and does not call
// it again (a callback that closes a channel would panic).
func TestOnQueuedOncePerWait(t *testing.T) {
	var acquires atomic.Int32
	c := fakeWorker(t, func(_ context.Context, cmd topics.Command) []topics.Event {
		switch cmd.Operation {
		case topics.OpAcquire:
			if acquires.Add(1) == 1 {
				q := queuedEvent(cmd)
				return []topics.Event{q, q, granted(cmd, topics.TypeAcquired, 30)}
			}
		case topics.OpRelease:
			return one(releasedEvent(cmd))
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var calls atomic.Int32
	l, err := c.Acquire(ctx, "dup-queued", WithWait(5*time.Second), WithoutKeepAlive(),
		OnQueued(func(int) { calls.Add(1) }))
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))
	require.Equal(t, int32(1), calls.Load(), "OnQueued calls for one wait")
}

// TestRequeuedAcquireFollowsItsNewWait: after lost transactions (design.md
// "consumer offsets go back") the worker applies a queued acquire again: a
// new lock.queued (another event_id, a deadline from then), and its grant
// within that new wait. The client's give-up follows the new lock.queued,
// as it does not a stored one answered again (same event_id).
func TestRequeuedAcquireFollowsItsNewWait(t *testing.T) {
	copies := 0
	err := acquireQueued(t, "requeued", time.Second, 2*time.Second, func(ctx context.Context, grants *kgo.Client, cmd topics.Command) []topics.Event {
		copies++
		if copies == 1 {
			return one(queuedEvent(cmd)) // the wait later lost with the database's last commits
		}
		if copies == 2 {
			// Applied afresh: queued anew, granted 2 s later (the
			// new wait is 3 s).
			grantAfter(ctx, grants, cmd, 2*time.Second)
			return one(queuedEvent(cmd)) // a new event_id
		}
		return nil
	})
	require.NoError(t, err, "granted within the wait its second lock.queued announced")
}

// TestQueuedWithoutEventIDMovesTheGiveUp: a lock.queued without event_id
// (outside the contract, which says "always") still moves the give-up the
// first time: the acquire waits 3 s and is granted after 2 s, past the
// RequestTimeout of 1.5 s.
func TestQueuedWithoutEventIDMovesTheGiveUp(t *testing.T) {
	err := acquireQueued(t, "noid", 500*time.Millisecond, 1500*time.Millisecond, func(ctx context.Context, grants *kgo.Client, cmd topics.Command) []topics.Event {
		grantAfter(ctx, grants, cmd, 2*time.Second)
		ev := queuedEvent(cmd)
		ev.EventID = ""
		return one(ev)
	})
	require.NoError(t, err)
}

// acquireQueued acquires lock, waiting up to 3 s, from a stand-in worker
// that answers each acquire as onAcquire says (one at a time, given the
// client grantAfter grants with) and each release as released, the
// client's ReplyTimeout and RequestTimeout as given.
func acquireQueued(t *testing.T, lock string, replyTimeout, requestTimeout time.Duration,
	onAcquire func(ctx context.Context, grants *kgo.Client, cmd topics.Command) []topics.Event) error {
	t.Helper()
	var mu sync.Mutex
	var grants *kgo.Client
	c, cluster := fakeWorkerWith(t, fakeOpts{config: func(cfg *Config) {
		cfg.ReplyTimeout, cfg.RequestTimeout = replyTimeout, requestTimeout
	}}, func(ctx context.Context, cmd topics.Command) []topics.Event {
		mu.Lock()
		defer mu.Unlock()
		switch cmd.Operation {
		case topics.OpAcquire:
			return onAcquire(ctx, grants, cmd)
		case topics.OpRelease:
			return one(releasedEvent(cmd))
		}
		return nil
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ProducerLinger(0))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	mu.Lock()
	grants = cl
	mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = c.Acquire(ctx, lock, WithWait(3*time.Second))
	return err
}

// grantAfter produces the grant of the acquire cmd to its reply topic d
// from now, as a worker granting a queued acquire, unless ctx ends first.
func grantAfter(ctx context.Context, cl *kgo.Client, cmd topics.Command, d time.Duration) {
	go func() {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return
		}
		v, _ := granted(cmd, topics.TypeAcquired, 30).Encode()
		cl.Produce(ctx, &kgo.Record{Topic: cmd.ReplyTo, Key: []byte(cmd.Key()), Value: v}, nil)
	}()
}
