package kafkapubsub_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/kafkapubsub"
)

func newSubscriber(t *testing.T, c *kfake.Cluster, group string) *kafkapubsub.Subscriber {
	t.Helper()
	sub, err := kafkapubsub.NewSubscriber(kafkapubsub.SubscriberConfig{
		Brokers:             c.ListenAddrs(),
		ClientOpts:          testClientOpts(),
		ConsumerGroup:       group,
		NackRedeliveryDelay: -1,
		TopicPartitions:     1,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sub.Close()) })
	return sub
}

func receive(t *testing.T, msgs <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg, ok := <-msgs:
		require.True(t, ok, "channel closed")
		return msg
	case <-time.After(10 * time.Second):
		t.Fatal("no message")
		return nil
	}
}

// TestKeyAndHeaders checks the message <-> record mapping both ways, with a
// caller-owned client that the publisher must leave open.
func TestKeyAndHeaders(t *testing.T) {
	c := newCluster(t)
	const topic = "locks.lock.acquired.v1"

	client, err := kgo.NewClient(append(testClientOpts(), kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic))...)
	require.NoError(t, err)
	defer client.Close()

	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
		Client:           client,
		AutoCreateTopics: true,
		TopicPartitions:  3,
	}, nil)
	require.NoError(t, err)

	keyed := message.NewMessage("uuid-1", []byte("payload"))
	keyed.Metadata.Set(kafkapubsub.DefaultKeyMetadata, "ns/lock-a")
	keyed.Metadata.Set("request_id", "r1")
	unkeyed := message.NewMessage("uuid-2", nil)
	require.NoError(t, pub.Publish(topic, keyed, unkeyed))
	require.NoError(t, pub.Close())
	require.NoError(t, pub.Close(), "Close is idempotent")
	assert.ErrorIs(t, pub.Publish(topic, keyed), kafkapubsub.ErrClosed)

	// The publisher left the client open: it still consumes.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var records []*kgo.Record
	for len(records) < 2 && ctx.Err() == nil {
		records = append(records, client.PollFetches(ctx).Records()...)
	}
	require.Len(t, records, 2)
	byUUID := map[string]*kgo.Record{}
	for _, r := range records {
		require.Equal(t, kafkapubsub.UUIDHeader, r.Headers[0].Key)
		byUUID[string(r.Headers[0].Value)] = r
	}
	assert.Equal(t, []byte("ns/lock-a"), byUUID["uuid-1"].Key)
	assert.Equal(t, []byte("payload"), byUUID["uuid-1"].Value)
	assert.Equal(t, []kgo.RecordHeader{
		{Key: kafkapubsub.UUIDHeader, Value: []byte("uuid-1")},
		{Key: kafkapubsub.DefaultKeyMetadata, Value: []byte("ns/lock-a")},
		{Key: "request_id", Value: []byte("r1")},
	}, byUUID["uuid-1"].Headers)
	assert.Nil(t, byUUID["uuid-2"].Key, "no key metadata, nil key")

	// A record from a non-watermill producer: key but no UUID header.
	foreign := &kgo.Record{Topic: topic, Key: []byte("ns/lock-b"), Value: []byte("v"),
		Headers: []kgo.RecordHeader{{Key: "ce_type", Value: []byte("lock.acquired")}}}
	require.NoError(t, client.ProduceSync(ctx, foreign).FirstErr())

	msgs, err := newSubscriber(t, c, "").Subscribe(ctx, topic)
	require.NoError(t, err)
	got := map[string]*message.Message{}
	for range 3 {
		msg := receive(t, msgs)
		got[msg.UUID] = msg
		r, ok := kafkapubsub.RecordFromContext(msg.Context())
		require.True(t, ok)
		assert.Equal(t, topic, r.Topic)
		msg.Ack()
	}
	assert.Equal(t, []byte("payload"), []byte(got["uuid-1"].Payload))
	assert.Equal(t, message.Metadata{"partition_key": "ns/lock-a", "request_id": "r1"}, got["uuid-1"].Metadata)
	assert.Empty(t, got["uuid-2"].Metadata)

	foreignUUID := fmt.Sprintf("%s/%d/%d", topic, foreign.Partition, foreign.Offset)
	require.Contains(t, got, foreignUUID, "UUID falls back to topic/partition/offset")
	assert.Equal(t, message.Metadata{"partition_key": "ns/lock-b", "ce_type": "lock.acquired"}, got[foreignUUID].Metadata)
}

// TestMetadataCannotReplaceTheUUID: a Metadata entry named UUIDHeader is
// not written as a header, so the consumer's UUID is the message's.
func TestMetadataCannotReplaceTheUUID(t *testing.T) {
	c := newCluster(t)
	const topic = "forged-uuid"
	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{Brokers: c.ListenAddrs(), ClientOpts: testClientOpts(), AutoCreateTopics: true}, nil)
	require.NoError(t, err)
	defer pub.Close()
	msg := message.NewMessage("real", nil)
	msg.Metadata.Set(kafkapubsub.UUIDHeader, "forged")
	require.NoError(t, pub.Publish(topic, msg))

	msgs, err := newSubscriber(t, c, "").Subscribe(context.Background(), topic)
	require.NoError(t, err)
	got := receive(t, msgs)
	got.Ack()
	require.Equal(t, "real", got.UUID)
	require.Empty(t, got.Metadata)
}

// TestNackAndCommit checks that a Nack redelivers the same message before
// any other, and that a group commits only acked messages.
func TestNackAndCommit(t *testing.T) {
	c := newCluster(t)
	const topic, group = "nack", "nack-group"

	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{Brokers: c.ListenAddrs(), ClientOpts: testClientOpts()}, nil)
	require.NoError(t, err)
	defer pub.Close()
	first := newSubscriber(t, c, group)
	require.NoError(t, first.SubscribeInitialize(topic))
	require.NoError(t, pub.Publish(topic,
		message.NewMessage("m1", []byte("1")),
		message.NewMessage("m2", []byte("2")),
		message.NewMessage("m3", []byte("3"))))

	msgs, err := first.Subscribe(context.Background(), topic)
	require.NoError(t, err)
	for range 3 {
		msg := receive(t, msgs)
		require.Equal(t, "m1", msg.UUID)
		msg.Nack()
		<-msg.Context().Done() // canceled on Nack
	}
	receive(t, msgs).Ack() // m1
	m2 := receive(t, msgs)
	require.Equal(t, "m2", m2.UUID)
	select {
	case msg := <-msgs:
		t.Fatalf("got %s before acking m2", msg.UUID)
	case <-time.After(100 * time.Millisecond):
	}

	// m2 is never acked: closing commits m1 only.
	require.NoError(t, first.Close())
	_, open := <-msgs
	require.False(t, open, "Close closes the channel")
	select {
	case <-m2.Context().Done():
	default:
		t.Fatal("message context outlived the subscription")
	}

	msgs, err = newSubscriber(t, c, group).Subscribe(context.Background(), topic)
	require.NoError(t, err)
	msg := receive(t, msgs)
	assert.Equal(t, "m2", msg.UUID, "the group resumes after the last acked message")
	msg.Ack()
}

// TestNoGoroutineLeak checks that ending subscriptions with a message still
// unacked, by context and by Close, stops everything the package started.
func TestNoGoroutineLeak(t *testing.T) {
	before := packageGoroutines()
	c := newCluster(t)
	const topic = "leak"

	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
		Brokers: c.ListenAddrs(), ClientOpts: testClientOpts(), AutoCreateTopics: true, TopicPartitions: 1,
	}, nil)
	require.NoError(t, err)
	require.NoError(t, pub.Publish(topic, message.NewMessage("m1", nil)))
	require.NoError(t, pub.Close())

	for _, group := range []string{"", "leak-group"} {
		sub, err := kafkapubsub.NewSubscriber(kafkapubsub.SubscriberConfig{
			Brokers: c.ListenAddrs(), ClientOpts: testClientOpts(), ConsumerGroup: group,
		}, nil)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		byCtx, err := sub.Subscribe(ctx, topic)
		require.NoError(t, err)
		receive(t, byCtx)
		cancel()
		_, open := <-byCtx
		require.False(t, open, "canceling ctx closes the channel")

		byClose, err := sub.Subscribe(context.Background(), topic)
		require.NoError(t, err)
		receive(t, byClose)
		require.NoError(t, sub.Close())
		_, open = <-byClose
		require.False(t, open, "Close closes the channel")
		_, err = sub.Subscribe(context.Background(), topic)
		require.ErrorIs(t, err, kafkapubsub.ErrClosed)
	}
	c.Close()

	// Polled: kgo's goroutines end a moment after Close returns.
	var leaked map[string]string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		leaked = packageGoroutines()
		for id := range before {
			delete(leaked, id)
		}
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
	}
	var stacks []string
	for _, stack := range leaked {
		stacks = append(stacks, stack)
	}
	t.Fatalf("%d goroutines of kafkapubsub or kgo left:\n\n%s", len(leaked), strings.Join(stacks, "\n\n"))
}

// packageGoroutines are the goroutines running or started by code of
// kafkapubsub or kgo, stacks by goroutine ID (IDs are never reused): a
// count of every goroutine in the process could hide a leak behind another
// goroutine's end.
func packageGoroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	ours := map[string]string{}
	for _, stack := range strings.Split(string(buf), "\n\n") {
		// "kafkapubsub." and not the tests' "kafkapubsub_test.".
		if strings.Contains(stack, "lockworker/kafkapubsub.") || strings.Contains(stack, "franz-go/pkg/kgo.") {
			id, _, _ := strings.Cut(strings.TrimPrefix(stack, "goroutine "), " ")
			ours[id] = stack
		}
	}
	return ours
}

// smallBatchPublisher creates topics itself and refuses a record over
// 10,000 bytes (kgo.ProducerBatchMaxBytes), for the failure tests.
func smallBatchPublisher(t *testing.T, c *kfake.Cluster) *kafkapubsub.Publisher {
	t.Helper()
	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
		Brokers:          c.ListenAddrs(),
		ClientOpts:       append(testClientOpts(), kgo.ProducerBatchMaxBytes(10_000)),
		AutoCreateTopics: true,
		TopicPartitions:  1,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	return pub
}

// TestPublishErrorNamesFailedMessages: a record too large for the client
// fails alone (the others are written), and the error says which message
// failed and why, so a caller can retry or set aside just that one.
func TestPublishErrorNamesFailedMessages(t *testing.T) {
	c := newCluster(t)
	const topic = "locks.replies.big"
	pub := smallBatchPublisher(t, c)

	msgs := []*message.Message{
		message.NewMessage("small-1", []byte("a")),
		message.NewMessage("big", make([]byte, 20_000)),
		message.NewMessage("small-2", []byte("b")),
	}
	err := pub.Publish(topic, msgs...)
	var perr *kafkapubsub.PublishError
	require.ErrorAs(t, err, &perr)
	assert.Equal(t, topic, perr.Topic)
	assert.Equal(t, 3, perr.Total)
	require.Len(t, perr.Failed, 1)
	assert.Equal(t, 1, perr.Failed[0].Index)
	assert.Equal(t, "big", perr.Failed[0].UUID)
	assert.ErrorIs(t, perr.Failed[0].Err, kerr.MessageTooLarge)
	assert.ErrorIs(t, err, kerr.MessageTooLarge, "the error unwraps to each message's")
	assert.Contains(t, err.Error(), "1 of 3 messages failed")

	require.NoError(t, pub.Publish(topic, msgs[0], msgs[2]))
}

// TestPublishTopicsReportsEachTopic: several topics in one call; each gets
// its own error, indexed within its own messages, and a failing topic
// (here one message too large, and an empty topic name) does not fail the
// others.
func TestPublishTopicsReportsEachTopic(t *testing.T) {
	c := newCluster(t)
	const a, b = "locks.replies.a", "locks.replies.b"
	pub := smallBatchPublisher(t, c)

	errs := pub.PublishTopics(
		kafkapubsub.TopicMessages{Topic: a, Messages: []*message.Message{message.NewMessage("a1", []byte("a1")), message.NewMessage("a2", []byte("a2"))}},
		kafkapubsub.TopicMessages{Topic: b, Messages: []*message.Message{message.NewMessage("b1", []byte("b1")), message.NewMessage("big", make([]byte, 20_000))}},
		kafkapubsub.TopicMessages{Topic: "", Messages: []*message.Message{message.NewMessage("x", nil)}},
		kafkapubsub.TopicMessages{Topic: a},
	)
	require.Len(t, errs, 4)
	assert.NoError(t, errs[0])
	var perr *kafkapubsub.PublishError
	require.ErrorAs(t, errs[1], &perr)
	assert.Equal(t, b, perr.Topic)
	assert.Equal(t, 2, perr.Total)
	require.Len(t, perr.Failed, 1)
	assert.Equal(t, 1, perr.Failed[0].Index)
	assert.Equal(t, "big", perr.Failed[0].UUID)
	assert.ErrorIs(t, errs[1], kerr.MessageTooLarge)
	assert.ErrorContains(t, errs[2], "empty topic")
	assert.NoError(t, errs[3], "no messages, nothing to do")

	cl, err := kgo.NewClient(append(testClientOpts(), kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(a, b),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	require.NoError(t, err)
	defer cl.Close()
	got := map[string][]string{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(got[a])+len(got[b]) < 3 && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got[r.Topic] = append(got[r.Topic], string(r.Value)) })
	}
	assert.Equal(t, map[string][]string{a: {"a1", "a2"}, b: {"b1"}}, got)
}

// TestPublishCreatesADeletedTopicAgain: with AutoCreateTopics, a topic
// deleted after the publisher created it (a requester's reply topic, cleaned
// up and used again) is created again: the publish that finds it missing
// fails UNKNOWN_TOPIC_OR_PARTITION, the next one creates it and succeeds.
func TestPublishCreatesADeletedTopicAgain(t *testing.T) {
	c := newCluster(t)
	const topic = "locks.replies.job"
	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
		Brokers:          c.ListenAddrs(),
		ClientOpts:       append(testClientOpts(), kgo.RecordDeliveryTimeout(5*time.Second)),
		AutoCreateTopics: true,
		TopicPartitions:  1,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	require.NoError(t, pub.Publish(topic, message.NewMessage("1", []byte("a"))))

	adm, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer adm.Close()
	_, err = kadm.NewClient(adm).DeleteTopics(context.Background(), topic)
	require.NoError(t, err)

	err = pub.Publish(topic, message.NewMessage("2", []byte("b")))
	require.ErrorIs(t, err, kerr.UnknownTopicOrPartition, "the publisher's client still knew the deleted topic")
	require.NoError(t, pub.Publish(topic, message.NewMessage("3", []byte("c"))), "the topic is created again")
}

// TestPublishFollowsATopicCreatedAgainElsewhere: without AutoCreateTopics,
// a topic deleted and created again by someone else is written again after
// one failed Publish: kgo would fail it under its old topic ID for the life
// of the client unless it is purged.
func TestPublishFollowsATopicCreatedAgainElsewhere(t *testing.T) {
	c := newCluster(t)
	const topic = "locks.replies.job"
	adm, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer adm.Close()
	admin := kadm.NewClient(adm)
	create := func() {
		t.Helper()
		_, err := admin.CreateTopic(context.Background(), 1, 1, nil, topic)
		require.NoError(t, err)
	}
	create()
	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
		Brokers:    c.ListenAddrs(),
		ClientOpts: append(testClientOpts(), kgo.RecordDeliveryTimeout(5*time.Second)),
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	require.NoError(t, pub.Publish(topic, message.NewMessage("1", []byte("a"))))

	_, err = admin.DeleteTopics(context.Background(), topic)
	require.NoError(t, err)
	create()

	err = pub.Publish(topic, message.NewMessage("2", []byte("b")))
	require.ErrorIs(t, err, kerr.UnknownTopicID, "the publisher's client held the old topic ID")
	require.NoError(t, pub.Publish(topic, message.NewMessage("3", []byte("c"))), "the new topic is written")
}

// TestPublishCreatesNewTopicsTogether: the topics one PublishTopics call
// must create are asked for in one request, not one admin round trip after
// another, which would hold every topic's messages for them all.
func TestPublishCreatesNewTopicsTogether(t *testing.T) {
	c := newCluster(t)
	var mu sync.Mutex
	var requests [][]string
	c.ControlKey(int16(kmsg.CreateTopics), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		var names []string
		for _, rt := range kr.(*kmsg.CreateTopicsRequest).Topics {
			names = append(names, rt.Topic)
		}
		mu.Lock()
		requests = append(requests, names)
		mu.Unlock()
		return nil, nil, false
	})
	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
		Brokers: c.ListenAddrs(), ClientOpts: testClientOpts(), AutoCreateTopics: true, TopicPartitions: 1,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })

	msg := func(id string) []*message.Message { return []*message.Message{message.NewMessage(id, []byte(id))} }
	errs := pub.PublishTopics(
		kafkapubsub.TopicMessages{Topic: "locks.replies.a", Messages: msg("a")},
		kafkapubsub.TopicMessages{Topic: "locks.replies.b", Messages: msg("b")},
		kafkapubsub.TopicMessages{Topic: "locks.replies.a", Messages: msg("a2")},
	)
	require.Equal(t, []error{nil, nil, nil}, errs)
	mu.Lock()
	require.Equal(t, [][]string{{"locks.replies.a", "locks.replies.b"}}, requests, "one request, each topic once")
	mu.Unlock()

	// Known now: no request; a new one beside them: a request of its own.
	errs = pub.PublishTopics(
		kafkapubsub.TopicMessages{Topic: "locks.replies.b", Messages: msg("b2")},
		kafkapubsub.TopicMessages{Topic: "locks.replies.c", Messages: msg("c")},
	)
	require.Equal(t, []error{nil, nil}, errs)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, [][]string{{"locks.replies.a", "locks.replies.b"}, {"locks.replies.c"}}, requests)
}

// A batch whose context has ended does not fail the creation of another's
// topic in the same call: the request stands for both.
func TestPublishCreatesTopicsForTheLiveBatches(t *testing.T) {
	c := newCluster(t)
	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
		Brokers: c.ListenAddrs(), ClientOpts: testClientOpts(), AutoCreateTopics: true, TopicPartitions: 1,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	late := message.NewMessage("late", []byte("late"))
	late.SetContext(gone)
	errs := pub.PublishTopics(
		kafkapubsub.TopicMessages{Topic: "locks.replies.gone", Messages: []*message.Message{late}},
		kafkapubsub.TopicMessages{Topic: "locks.replies.live", Messages: []*message.Message{message.NewMessage("live", []byte("live"))}},
	)
	require.ErrorIs(t, errs[0], context.Canceled)
	require.NoError(t, errs[1])
}

// TestPublishBoundsTopicCreation: a CreateTopics the controller never
// answers holds the call only up to the creation's own bound, well before
// the messages' deadline, and fails only the new topic's messages: the
// other topics of the call are produced with time to spare.
func TestPublishBoundsTopicCreation(t *testing.T) {
	t.Parallel()
	const known, fresh = "locks.replies.known", "locks.replies.fresh"
	c := kafkatest.Cluster(t)
	var mute atomic.Bool
	c.ControlKey(int16(kmsg.CreateTopics), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		return nil, nil, mute.Load() // muted: taken, never answered
	})
	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
		Brokers: c.ListenAddrs(), ClientOpts: testClientOpts(), AutoCreateTopics: true, TopicPartitions: 1,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	require.NoError(t, pub.Publish(known, message.NewMessage("first", []byte("first"))), "created")
	mute.Store(true)

	const deadline = 15 * time.Second // as the relay's PublishTimeout, past the creation's bound
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	msg := func(id string) []*message.Message {
		m := message.NewMessage(id, []byte(id))
		m.SetContext(ctx)
		return []*message.Message{m}
	}
	started := time.Now()
	errs := pub.PublishTopics(
		kafkapubsub.TopicMessages{Topic: known, Messages: msg("k")},
		kafkapubsub.TopicMessages{Topic: fresh, Messages: msg("f")},
	)
	require.NoError(t, errs[0], "the known topic's message is produced")
	require.ErrorIs(t, errs[1], context.DeadlineExceeded)
	require.ErrorContains(t, errs[1], "create topic")
	require.Less(t, time.Since(started), deadline/2, "the creation's own bound, not the messages' deadline")
}

// muteProduce makes c take every produce request and answer none; the
// channel returned is closed once the first one reached it.
func muteProduce(c *kfake.Cluster) <-chan struct{} {
	reached := make(chan struct{})
	var first atomic.Bool
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if first.CompareAndSwap(false, true) {
			close(reached)
		}
		return nil, nil, true // taken, never answered
	})
	return reached
}

// TestCloseEndsAPublishKafkaNeverAnswers: a broker that takes a produce
// request and never answers it holds the Publish that sent it (kgo's
// idempotent producer never fails a request it sent unanswered). Close
// waits CloseTimeout for it, then closes its own client: the Publish fails
// with kgo.ErrClientClosed, and Close returns rather than hang.
func TestCloseEndsAPublishKafkaNeverAnswers(t *testing.T) {
	const topic = "locks.replies.mute"
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, topic))
	reached := muteProduce(c)
	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
		Brokers: c.ListenAddrs(), ClientOpts: testClientOpts(), CloseTimeout: 100 * time.Millisecond,
	}, nil)
	require.NoError(t, err)

	published := make(chan error, 1)
	go func() { published <- pub.Publish(topic, message.NewMessage("m1", []byte("m1"))) }()
	select {
	case <-reached:
	case <-time.After(10 * time.Second):
		t.Fatal("no produce request reached the broker")
	}
	closed := make(chan error, 1)
	go func() { closed <- pub.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Close hangs on the unanswered Publish")
	}
	select {
	case err := <-published:
		var perr *kafkapubsub.PublishError
		require.ErrorAs(t, err, &perr)
		require.Equal(t, "m1", perr.Failed[0].UUID)
		require.ErrorIs(t, err, kgo.ErrClientClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("the Publish did not return")
	}
}

// TestPublishEndsWhileTheBufferIsFull: while kgo's buffer is full (here
// kgo.MaxBufferedRecords(1), held by a record in a produce request the
// broker never answers), a Publish waits for room outside any request, and
// canceling its messages' context ends that wait, as Publish's doc says:
// the messages fail with the context's error (a deadline's included).
// Where the messages' contexts differ, the wait ends once all have ended.
func TestPublishEndsWhileTheBufferIsFull(t *testing.T) {
	const topic = "locks.replies.full"
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, topic))
	reached := muteProduce(c)
	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
		Brokers: c.ListenAddrs(), ClientOpts: append(testClientOpts(), kgo.MaxBufferedRecords(1)), CloseTimeout: 100 * time.Millisecond,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pub.Close()) }) // fails the calls still waiting

	go func() { _ = pub.Publish(topic, message.NewMessage("held", []byte("held"))) }()
	select {
	case <-reached:
	case <-time.After(10 * time.Second):
		t.Fatal("no produce request reached the broker")
	}
	publish := func(msgs ...*message.Message) <-chan error {
		published := make(chan error, 1)
		go func() { published <- pub.Publish(topic, msgs...) }()
		return published
	}
	waiting := func(published <-chan error, what string) {
		t.Helper()
		select {
		case err := <-published:
			t.Fatalf("%s returned (%v) with the buffer still full", what, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	ended := func(published <-chan error, want error, uuids ...string) {
		t.Helper()
		select {
		case err := <-published:
			var perr *kafkapubsub.PublishError
			require.ErrorAs(t, err, &perr)
			var failed []string
			for _, f := range perr.Failed {
				failed = append(failed, f.UUID)
			}
			require.Equal(t, uuids, failed)
			require.ErrorIs(t, err, want)
		case <-time.After(5 * time.Second):
			t.Fatal("canceling the messages' contexts did not end a Publish waiting for room in the buffer")
		}
	}

	// One context for the call's messages.
	ctx, cancel := context.WithCancel(context.Background())
	m1, m2 := message.NewMessage("m1", nil), message.NewMessage("m2", nil)
	m1.SetContext(ctx)
	m2.SetContext(ctx)
	published := publish(m1, m2)
	waiting(published, "a Publish of live messages")
	cancel()
	ended(published, context.Canceled, "m1", "m2")

	// A deadline's error is the messages' own.
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	m3 := message.NewMessage("m3", nil)
	m3.SetContext(ctx)
	ended(publish(m3), context.DeadlineExceeded, "m3")

	// Contexts of their own: the call waits for the last.
	ctxA, cancelA := context.WithCancel(context.Background())
	ctxB, cancelB := context.WithCancel(context.Background())
	a, b := message.NewMessage("a", nil), message.NewMessage("b", nil)
	a.SetContext(ctxA)
	b.SetContext(ctxB)
	published = publish(a, b)
	cancelA()
	waiting(published, "a Publish with one of its messages' contexts live")
	cancelB()
	ended(published, context.Canceled, "a", "b")
}

// TestSubscriptionEndsOnARefusal: an error retrying cannot cure (a session
// timeout under the broker's group.min.session.timeout.ms) ends the
// subscription, closing its channel, and is logged as an error, rather
// than leaving a subscription that never delivers.
func TestSubscriptionEndsOnARefusal(t *testing.T) {
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, "refused"))
	logger := watermill.NewCaptureLogger()
	sub, err := kafkapubsub.NewSubscriber(kafkapubsub.SubscriberConfig{
		Brokers:       c.ListenAddrs(),
		ClientOpts:    append(testClientOpts(), kgo.SessionTimeout(3*time.Second)),
		ConsumerGroup: "refused-group",
	}, logger)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sub.Close()) })
	msgs, err := sub.Subscribe(context.Background(), "refused")
	require.NoError(t, err)
	select {
	case _, open := <-msgs:
		require.False(t, open, "a message from a refused subscription")
	case <-time.After(20 * time.Second):
		t.Fatal("the refused subscription is still open")
	}
	var logged []error
	for _, m := range logger.Captured()[watermill.ErrorLogLevel] {
		logged = append(logged, m.Err)
	}
	require.ErrorIs(t, errors.Join(logged...), kerr.InvalidSessionTimeout, "the refusal is logged as an error")
}

// TestSubscriptionOutlivesAGroupError: a group error that is not a refusal
// (here the group's ACL, granted a moment later) is logged and retried,
// and the subscription delivers once it is over.
func TestSubscriptionOutlivesAGroupError(t *testing.T) {
	const topic = "flaky"
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, topic))
	c.ControlKey(int16(kmsg.JoinGroup), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		resp := kr.ResponseKind().(*kmsg.JoinGroupResponse)
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp, nil, true // once: the next JoinGroup is kfake's
	})
	logger := watermill.NewCaptureLogger()
	sub, err := kafkapubsub.NewSubscriber(kafkapubsub.SubscriberConfig{
		Brokers: c.ListenAddrs(), ClientOpts: testClientOpts(), ConsumerGroup: "flaky-group",
	}, logger)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sub.Close()) })
	msgs, err := sub.Subscribe(context.Background(), topic)
	require.NoError(t, err)

	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{Brokers: c.ListenAddrs(), ClientOpts: testClientOpts()}, nil)
	require.NoError(t, err)
	defer pub.Close()
	require.NoError(t, pub.Publish(topic, message.NewMessage("m1", nil)))
	msg := receive(t, msgs)
	require.Equal(t, "m1", msg.UUID)
	msg.Ack()
	var logged []error
	for _, m := range logger.Captured()[watermill.ErrorLogLevel] {
		logged = append(logged, m.Err)
	}
	require.ErrorIs(t, errors.Join(logged...), kerr.GroupAuthorizationFailed, "the group error was logged")
}

// TestSubscriptionPausesWhileFetchesAreRefused: a subscription whose every
// Fetch Kafka refuses (here the topic's Read ACL is missing) waits after
// each poll that got only errors, rather than having kgo send the next
// Fetch at once (tens of thousands a second), and delivers once the
// refusal ends.
func TestSubscriptionPausesWhileFetchesAreRefused(t *testing.T) {
	const topic = "unreadable"
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, topic))
	refused := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Err: kerr.TopicAuthorizationFailed, Count: -1})
	defer refused.Remove()
	msgs, err := newSubscriber(t, c, "").Subscribe(context.Background(), topic)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, refused.Wait(ctx, 1), "the subscription fetches")

	// A bound the busy loop passes within milliseconds, and the pauses
	// (at most 1 s each) stay far below even on a loaded machine.
	const window, bound = 2 * time.Second, 100
	before, start := refused.Hits(), time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), window)
	defer cancel()
	err = refused.Wait(ctx, before+bound)
	require.ErrorIs(t, err, context.DeadlineExceeded, "%d refused Fetches in %v", refused.Hits()-before, time.Since(start))
	t.Logf("%d refused Fetches in %v", refused.Hits()-before, window)

	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{Brokers: c.ListenAddrs(), ClientOpts: testClientOpts()}, nil)
	require.NoError(t, err)
	defer pub.Close()
	require.NoError(t, pub.Publish(topic, message.NewMessage("m1", nil)))
	refused.Remove()
	msg := receive(t, msgs)
	require.Equal(t, "m1", msg.UUID)
	msg.Ack()
}

// TestNackedRecordLeftToItsNewOwner: a member that keeps nacking a record
// stops delivering it once a rebalance gave its partition to another
// member, which delivers it after the offset acked before, and goes on with its other partitions instead
// of holding them back.
func TestNackedRecordLeftToItsNewOwner(t *testing.T) {
	const topic, group = "moved", "moved-group"
	c := kafkatest.Cluster(t, kfake.SeedTopics(2, topic))
	produce, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer produce.Close()
	send := func(uuid string, partition int32) {
		t.Helper()
		r := &kgo.Record{Topic: topic, Partition: partition,
			Headers: []kgo.RecordHeader{{Key: kafkapubsub.UUIDHeader, Value: []byte(uuid)}}}
		require.NoError(t, produce.ProduceSync(context.Background(), r).FirstErr())
	}
	send("acked", 1)
	send("stuck", 1)

	// A owns both partitions, acks "acked" and nacks "stuck" for as long as
	// it has it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fromA, err := newSubscriber(t, c, group).Subscribe(ctx, topic)
	require.NoError(t, err)
	msg := receive(t, fromA)
	require.Equal(t, "acked", msg.UUID)
	msg.Ack()
	msg = receive(t, fromA)
	require.Equal(t, "stuck", msg.UUID)
	ackedByA := make(chan string, 10)
	go func(m *message.Message) {
		for ; m != nil; m = <-fromA {
			if m.UUID == "stuck" {
				m.Nack()
				continue
			}
			m.Ack()
			ackedByA <- m.UUID
		}
	}(msg)

	// B joins: kgo's cooperative-sticky balancer (the default) gives it
	// the last of A's partitions, 1; were that to change, B would receive
	// nothing here.
	fromB, err := newSubscriber(t, c, group).Subscribe(ctx, topic)
	require.NoError(t, err)
	msg = receive(t, fromB)
	require.Equal(t, "stuck", msg.UUID, "B got partition 1, from the offset A committed as it lost it")
	msg.Ack()

	send("next", 0)
	select {
	case uuid := <-ackedByA:
		require.Equal(t, "next", uuid)
	case <-time.After(10 * time.Second):
		t.Fatal("A still redelivers the record of the partition it lost")
	}
}

// TestSubscribeInitializeAfterDeletion: SubscribeInitialize creates a topic
// deleted since it created it, as its doc says, rather than trusting an old
// success.
func TestSubscribeInitializeAfterDeletion(t *testing.T) {
	c := kafkatest.Cluster(t)
	const topic = "initialized"
	sub := newSubscriber(t, c, "")
	adm, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer adm.Close()
	admin := kadm.NewClient(adm)
	exists := func() bool { // asked of the broker: kadm may answer from kgo's cache
		t.Helper()
		req := kmsg.NewPtrMetadataRequest()
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(context.Background(), adm)
		require.NoError(t, err)
		return resp.Topics[0].ErrorCode == 0
	}

	require.NoError(t, sub.SubscribeInitialize(topic))
	require.True(t, exists())
	require.NoError(t, sub.SubscribeInitialize(topic), "an existing topic is no error")
	_, err = admin.DeleteTopics(context.Background(), topic)
	require.NoError(t, err)
	require.False(t, exists())
	require.NoError(t, sub.SubscribeInitialize(topic))
	require.True(t, exists(), "created again")
}

// TestPublishKeepsALiveTopicAWrongAnswerCalledUnknown: a Publish that fails
// UNKNOWN_TOPIC_OR_PARTITION on a topic that exists (a restarting broker of
// a real cluster may answer so) does not purge it from the producer: a
// Metadata request finds it, so the next Publish neither creates it again
// nor restarts its sequence numbers.
func TestPublishKeepsALiveTopicAWrongAnswerCalledUnknown(t *testing.T) {
	const topic = "locks.replies.live"
	c := kafkatest.Cluster(t)
	var creates atomic.Int32
	c.ControlKey(int16(kmsg.CreateTopics), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		creates.Add(1)
		return nil, nil, false
	})
	var glitch atomic.Bool
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !glitch.Load() {
			return nil, nil, false
		}
		req := kr.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.UnknownTopicOrPartition.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
		Brokers: c.ListenAddrs(), ClientOpts: testClientOpts(), AutoCreateTopics: true, TopicPartitions: 1,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	require.NoError(t, pub.Publish(topic, message.NewMessage("1", []byte("a"))))
	require.EqualValues(t, 1, creates.Load())

	glitch.Store(true)
	require.ErrorIs(t, pub.Publish(topic, message.NewMessage("2", []byte("b"))), kerr.UnknownTopicOrPartition)
	glitch.Store(false)
	require.NoError(t, pub.Publish(topic, message.NewMessage("3", []byte("c"))))
	require.EqualValues(t, 1, creates.Load(), "the live topic was taken for deleted and created again")
}

// TestCreatedTopicsMinInsyncReplicas: the topics a publisher
// (AutoCreateTopics) or a subscriber (SubscribeInitialize) creates with
// three replicas or more have min.insync.replicas=2, so that acks=all
// acknowledges a record only once two replicas have it; with fewer, or the
// broker's default replication factor, they have the broker's (kfake's: 1).
func TestCreatedTopicsMinInsyncReplicas(t *testing.T) {
	for _, tc := range []struct {
		factor    int16
		replicas  int
		minInsync string
	}{
		{factor: 3, replicas: 3, minInsync: "2"},
		{factor: 2, replicas: 2, minInsync: "1"},
		{factor: 1, replicas: 1, minInsync: "1"},
		{factor: -1, replicas: 3, minInsync: "1"}, // kfake's default: min(3, brokers)
	} {
		t.Run(fmt.Sprint(tc.factor), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := kafkatest.Cluster(t, kfake.NumBrokers(3))
			pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
				Brokers: c.ListenAddrs(), ClientOpts: testClientOpts(),
				AutoCreateTopics: true, TopicPartitions: 1, TopicReplicationFactor: tc.factor,
			}, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = pub.Close() })
			require.NoError(t, pub.Publish("published", message.NewMessage("1", []byte("a"))))
			sub, err := kafkapubsub.NewSubscriber(kafkapubsub.SubscriberConfig{
				Brokers: c.ListenAddrs(), ClientOpts: testClientOpts(),
				TopicPartitions: 1, TopicReplicationFactor: tc.factor,
			}, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = sub.Close() })
			require.NoError(t, sub.SubscribeInitialize("initialized"))

			cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
			require.NoError(t, err)
			defer cl.Close()
			adm := kadm.NewClient(cl)
			for _, topic := range []string{"published", "initialized"} {
				tds, err := adm.ListTopics(ctx, topic)
				require.NoError(t, err)
				require.Len(t, tds[topic].Partitions[0].Replicas, tc.replicas, topic)
				require.Equal(t, tc.minInsync, kafkatest.TopicConfigs(t, ctx, adm, topic)["min.insync.replicas"], topic)
			}
		})
	}
}

// TestEveryCallAfterCloseIsErrClosed: ErrClosed is what publishing or
// subscribing after Close returns, SubscribeInitialize included (watermill's
// Router calls it before Subscribe), and also when Close ends a
// SubscribeInitialize in flight.
func TestEveryCallAfterCloseIsErrClosed(t *testing.T) {
	c := kafkatest.Cluster(t)
	sub, err := kafkapubsub.NewSubscriber(kafkapubsub.SubscriberConfig{Brokers: c.ListenAddrs(), ClientOpts: testClientOpts()}, nil)
	require.NoError(t, err)
	held, release := kafkatest.HoldFirst(c, kmsg.CreateTopics)
	defer release()
	inFlight := make(chan error, 1)
	go func() { inFlight <- sub.SubscribeInitialize("held") }()
	<-held
	require.NoError(t, sub.Close())
	assert.ErrorIs(t, <-inFlight, kafkapubsub.ErrClosed, "in flight at Close")
	require.ErrorIs(t, sub.SubscribeInitialize("t"), kafkapubsub.ErrClosed)
	_, err = sub.Subscribe(context.Background(), "t")
	require.ErrorIs(t, err, kafkapubsub.ErrClosed)

	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{Brokers: c.ListenAddrs(), ClientOpts: testClientOpts()}, nil)
	require.NoError(t, err)
	require.NoError(t, pub.Close())
	msg := message.NewMessage("1", nil)
	require.ErrorIs(t, pub.Publish("t", msg), kafkapubsub.ErrClosed)
	require.ErrorIs(t, pub.PublishTopics(kafkapubsub.TopicMessages{Topic: "t", Messages: []*message.Message{msg}})[0], kafkapubsub.ErrClosed)
	pub.PublishTopicsEach(func(_ int, err error) { require.ErrorIs(t, err, kafkapubsub.ErrClosed) },
		kafkapubsub.TopicMessages{Topic: "t", Messages: []*message.Message{msg}})
}
