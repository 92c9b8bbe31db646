package kafkapubsub

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
)

// A Publish that failed on a deleted topic but finishes after another one
// has purged the topic, created it again and written to it does not purge
// it again: that purge would restart the idempotent producer's sequence
// numbers on the live topic, and the broker would acknowledge the next
// record as a duplicate of the first without writing it.
func TestLateFailureDoesNotPurgeALiveTopic(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer c.Close()
	const topic = "locks.replies.job"
	p, err := NewPublisher(PublisherConfig{Brokers: c.ListenAddrs(), AutoCreateTopics: true, TopicPartitions: 1,
		ClientOpts: []kgo.Opt{kgo.RecordDeliveryTimeout(5 * time.Second), kgo.MetadataMinAge(50 * time.Millisecond)}}, nil)
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.Publish(topic, message.NewMessage("1", []byte("old topic"))))
	adm, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer adm.Close()
	_, err = kadm.NewClient(adm).DeleteTopics(context.Background(), topic)
	require.NoError(t, err)

	lateCall := []TopicMessages{{Topic: topic, Messages: []*message.Message{message.NewMessage("0", nil)}}}
	late := p.begin(lateCall)[0]                                                                                 // a Publish that began now
	require.ErrorIs(t, p.Publish(topic, message.NewMessage("2", []byte("fails"))), kerr.UnknownTopicOrPartition) // purges
	require.NoError(t, p.Publish(topic, message.NewMessage("3", []byte("first"))), "created again")
	p.forgetTopic(topic, late) // the late one's failure, on the same deletion
	p.end(lateCall)
	require.NoError(t, p.Publish(topic, message.NewMessage("4", []byte("second"))))

	offs, err := kadm.NewClient(adm).ListEndOffsets(context.Background(), topic)
	require.NoError(t, err)
	end, _ := offs.Lookup(topic, 0)
	require.EqualValues(t, 2, end.Offset, "both records on the new topic are written")
}

// purgeFixture is a broker, a publisher on it that checks for deleted topics
// only when a test says so, and an admin client.
type purgeFixture struct {
	c   *kfake.Cluster
	p   *Publisher
	adm *kadm.Client
}

func newPurgeFixture(t *testing.T, opts ...kgo.Opt) purgeFixture {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	p, err := NewPublisher(PublisherConfig{Brokers: c.ListenAddrs(), AutoCreateTopics: true, TopicPartitions: 1, PurgeInterval: -1,
		ClientOpts: append([]kgo.Opt{kgo.RecordDeliveryTimeout(5 * time.Second), kgo.MetadataMinAge(50 * time.Millisecond)}, opts...)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	adm, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	t.Cleanup(adm.Close)
	return purgeFixture{c: c, p: p, adm: kadm.NewClient(adm)}
}

func (f purgeFixture) publish(t *testing.T, topic, payload string) {
	t.Helper()
	require.NoError(t, f.p.Publish(topic, message.NewMessage(payload, []byte(payload))))
}

func (f purgeFixture) delete(t *testing.T, topic string) {
	t.Helper()
	resps, err := f.adm.DeleteTopics(context.Background(), topic)
	require.NoError(t, err)
	require.NoError(t, resps.Error())
}

// end is topic's end offset (its one partition).
func (f purgeFixture) end(t *testing.T, topic string) int64 {
	t.Helper()
	offs, err := f.adm.ListEndOffsets(context.Background(), topic)
	require.NoError(t, err)
	o, ok := offs.Lookup(topic, 0)
	require.True(t, ok)
	require.NoError(t, o.Err)
	return o.Offset
}

// known are the topics in the publisher's bookkeeping and the topic
// creator's.
func (f purgeFixture) known() (produced, created []string) {
	f.p.mu.Lock()
	produced = slices.Sorted(maps.Keys(f.p.produced))
	f.p.mu.Unlock()
	f.p.topics.mu.Lock()
	created = slices.Sorted(maps.Keys(f.p.topics.pending))
	f.p.topics.mu.Unlock()
	return produced, created
}

// metadataTopics observes c's Metadata requests from now on: each one's
// topics go to the channel (dropped when it is full).
func metadataTopics(c *kfake.Cluster) <-chan []string {
	seen := make(chan []string, 100)
	c.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		var topics []string
		for _, t := range req.(*kmsg.MetadataRequest).Topics {
			if t.Topic != nil {
				topics = append(topics, *t.Topic)
			}
		}
		select {
		case seen <- topics:
		default:
		}
		return nil, nil, false
	})
	return seen
}

// A topic produced to that was deleted is purged: kgo's metadata requests
// name it no more, the publisher forgets it, and a later Publish creates it
// again and writes there. A topic that exists stays.
func TestDeletedTopicIsPurged(t *testing.T) {
	f := newPurgeFixture(t)
	f.publish(t, "a", "1")
	f.publish(t, "b", "1")
	f.delete(t, "a")

	purged, err := f.p.purgeMissing(context.Background(), 0)
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, purged)
	produced, created := f.known()
	require.Equal(t, []string{"b"}, produced)
	require.Equal(t, []string{"b"}, created)

	// The purge ran in kgo's metadata loop, between two of its requests:
	// every request from now on is the client's without a.
	seen := metadataTopics(f.c)
	f.p.client.ForceMetadataRefresh()
	for {
		select {
		case topics := <-seen:
			require.NotContains(t, topics, "a")
			if !slices.Contains(topics, "b") {
				continue
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no metadata refresh naming b")
		}
		break
	}

	f.publish(t, "a", "2")
	require.EqualValues(t, 1, f.end(t, "a"), "created again and written")
	f.publish(t, "b", "2")
	require.EqualValues(t, 2, f.end(t, "b"))
	purged, err = f.p.purgeMissing(context.Background(), 0)
	require.NoError(t, err)
	require.Empty(t, purged)
}

// A topic that exists and is idle is never purged, so the idempotent
// producer's sequence numbers there go on and no later record is taken for
// a duplicate and dropped.
func TestIdleLiveTopicIsNotPurged(t *testing.T) {
	f := newPurgeFixture(t)
	var purged []string
	for i := range 3 {
		f.publish(t, "a", fmt.Sprint(i))
		p, err := f.p.purgeMissing(context.Background(), 0)
		require.NoError(t, err)
		purged = append(purged, p...)
	}
	require.EqualValues(t, 3, f.end(t, "a"), "every record written")
	require.Empty(t, purged)
	produced, _ := f.known()
	require.Equal(t, []string{"a"}, produced)
}

// A topic that a Publish began to produce to after the brokers were asked
// is not purged, though they said it was missing: that Publish may have
// created it again and written there, and the purge would restart the
// producer's sequence numbers on the live topic, where the broker would
// take the next record for a duplicate without writing it.
func TestTopicPublishedSinceAskedIsNotPurged(t *testing.T) {
	f := newPurgeFixture(t)
	f.publish(t, "a", "0")
	f.delete(t, "a")

	idles := f.p.idleTopics(0)
	missing, err := f.p.missingTopics(context.Background(), []string{"a"})
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, missing)
	require.ErrorIs(t, f.p.Publish("a", message.NewMessage("1", []byte("fails"))), kerr.UnknownTopicOrPartition) // purges
	f.publish(t, "a", "2")                                                                                       // created again
	purged := f.p.purgeIdle(idles, missing)
	f.publish(t, "a", "3")
	require.EqualValues(t, 2, f.end(t, "a"), "both records on the new topic are written")
	require.Empty(t, purged)
}

// A topic with a Publish in flight is not purged, whether it began before
// the idle topics were taken or after; it is once that Publish has ended.
func TestTopicInFlightIsNotPurged(t *testing.T) {
	f := newPurgeFixture(t)
	f.publish(t, "a", "0")
	f.delete(t, "a")

	idles := f.p.idleTopics(0)
	require.Contains(t, idles, "a")
	// kgo still knows a's partition and produces there: the broker holds
	// the request, and the Publish is in flight until it answers.
	held, release := kafkatest.HoldFirst(f.c, kmsg.Produce)
	defer release()
	done := make(chan error, 1)
	go func() { done <- f.p.Publish("a", message.NewMessage("1", nil)) }()
	<-held
	missing, err := f.p.missingTopics(context.Background(), []string{"a"})
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, missing)
	require.Empty(t, f.p.purgeIdle(idles, missing), "began after the idle topics were taken")
	purged, err := f.p.purgeMissing(context.Background(), 0)
	require.NoError(t, err)
	require.Empty(t, purged, "began before")

	release()
	select {
	case err := <-done:
		require.ErrorIs(t, err, kerr.UnknownTopicOrPartition)
	case <-time.After(10 * time.Second):
		t.Fatal("the Publish did not end")
	}
	purged, err = f.p.purgeMissing(context.Background(), 0)
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, purged)
}

// Only topics idle for the interval are asked about: none, no request.
func TestRecentTopicsAreNotAsked(t *testing.T) {
	f := newPurgeFixture(t)
	f.publish(t, "a", "0")
	f.delete(t, "a")
	seen := metadataTopics(f.c)
	f.p.client.PurgeTopicsFromProducing("a") // kgo's own refreshes name it no more
	purged, err := f.p.purgeMissing(context.Background(), time.Hour)
	require.NoError(t, err)
	require.Empty(t, purged)
	select {
	case topics := <-seen:
		require.NotContains(t, topics, "a")
	default:
	}
}

// Close stops the purge loop.
func TestCloseStopsPurges(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer c.Close()
	p, err := NewPublisher(PublisherConfig{Brokers: c.ListenAddrs(), AutoCreateTopics: true, PurgeInterval: time.Millisecond}, nil)
	require.NoError(t, err)
	require.NoError(t, p.Publish("a", message.NewMessage("1", nil)))
	require.NoError(t, p.Close())
	select {
	case <-p.purgesDone:
	default:
		t.Fatal("the purge loop runs on after Close")
	}
}
