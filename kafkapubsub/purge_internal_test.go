package kafkapubsub

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
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
	p.mu.Lock()
	late := p.begin(lateCall)[0] // a Publish that began now
	p.mu.Unlock()
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

// The fixture's purge prefix, and topics under it and not.
const (
	purgePrefix = "replies."
	ra          = purgePrefix + "a"
	rb          = purgePrefix + "b"
	state       = "state" // never purged
)

// purgeFixture is a broker, a publisher on it that purges topics under
// purgePrefix, checking only when a test says so, and an admin client.
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
	p, err := NewPublisher(PublisherConfig{Brokers: c.ListenAddrs(), AutoCreateTopics: true, TopicPartitions: 1,
		PurgeInterval: -1, PurgePrefix: purgePrefix,
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

// check is one check of PurgeInterval on the topics idle at all.
func (f purgeFixture) check(t *testing.T) []string {
	t.Helper()
	purged, err := f.p.purgeMissing(context.Background(), 0)
	require.NoError(t, err)
	return purged
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

// struck reports whether topic has its first strike.
func (f purgeFixture) struck(topic string) bool {
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	e := f.p.produced[topic]
	return e != nil && e.missing
}

// metadataTopics observes c's Metadata requests from now on: each one's
// topics go to the channel (dropped when it is full).
func metadataTopics(c *kfake.Cluster) <-chan []string {
	seen := make(chan []string, 100)
	c.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		select {
		case seen <- requestTopics(req):
		default:
		}
		return nil, nil, false
	})
	return seen
}

func requestTopics(req kmsg.Request) []string {
	var topics []string
	for _, t := range req.(*kmsg.MetadataRequest).Topics {
		if t.Topic != nil {
			topics = append(topics, *t.Topic)
		}
	}
	return topics
}

// unknownOnce makes c answer the first Metadata request that names exactly
// topics with UNKNOWN_TOPIC_OR_PARTITION for each, as a broker restarted and
// serving before it has the cluster's metadata would.
func unknownOnce(t *testing.T, c *kfake.Cluster, topics ...string) {
	t.Helper()
	var brokers []kmsg.MetadataResponseBroker
	for i, addr := range c.ListenAddrs() {
		host, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		n, err := strconv.Atoi(port)
		require.NoError(t, err)
		b := kmsg.NewMetadataResponseBroker()
		b.NodeID, b.Host, b.Port = int32(i), host, int32(n)
		brokers = append(brokers, b)
	}
	c.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if !slices.Equal(requestTopics(req), topics) {
			c.KeepControl()
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.MetadataResponse)
		resp.Version = req.GetVersion()
		resp.Brokers, resp.ControllerID = brokers, 0
		for _, topic := range topics {
			rt := kmsg.NewMetadataResponseTopic()
			rt.Topic, rt.ErrorCode = kmsg.StringPtr(topic), kerr.UnknownTopicOrPartition.Code
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
}

// A topic produced to that was deleted is purged at the second check that
// finds it missing: kgo's metadata requests name it no more, the publisher
// forgets it, and a later Publish creates it again and writes there. A
// topic that exists stays.
func TestDeletedTopicIsPurged(t *testing.T) {
	f := newPurgeFixture(t)
	f.publish(t, ra, "1")
	f.publish(t, rb, "1")
	f.delete(t, ra)

	require.Empty(t, f.check(t), "the first strike")
	require.True(t, f.struck(ra))
	require.False(t, f.struck(rb))
	require.Equal(t, []string{ra}, f.check(t), "the second")
	produced, created := f.known()
	require.Equal(t, []string{rb}, produced)
	require.Equal(t, []string{rb}, created)

	// The purge ran in kgo's metadata loop, between two of its requests:
	// every request from now on is the client's without a.
	seen := metadataTopics(f.c)
	f.p.client.ForceMetadataRefresh()
	for {
		select {
		case topics := <-seen:
			require.NotContains(t, topics, ra)
			if !slices.Contains(topics, rb) {
				continue
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no metadata refresh naming b")
		}
		break
	}

	f.publish(t, ra, "2")
	require.EqualValues(t, 1, f.end(t, ra), "created again and written")
	f.publish(t, rb, "2")
	require.EqualValues(t, 2, f.end(t, rb))
	require.Empty(t, f.check(t))
	require.Empty(t, f.check(t))
}

// One wrong answer does not purge a topic that exists: the broker's next
// answer clears the strike, so the idempotent producer's sequence numbers
// there go on and every later record is written.
func TestOneUnknownAnswerDoesNotPurge(t *testing.T) {
	f := newPurgeFixture(t)
	f.publish(t, ra, "0")
	f.publish(t, state, "0") // kgo's own metadata requests name both
	unknownOnce(t, f.c, ra)  // the check's names only ra
	require.Empty(t, f.check(t))
	require.True(t, f.struck(ra), "the check was told ra is missing")
	require.Empty(t, f.check(t), "ra exists")
	require.False(t, f.struck(ra))
	require.Empty(t, f.check(t))
	for i := range 3 {
		f.publish(t, ra, fmt.Sprint(i+1))
	}
	require.EqualValues(t, 4, f.end(t, ra), "every record written")
	produced, _ := f.known()
	require.Equal(t, []string{ra, state}, produced)
}

// A Publish between two checks that find a topic missing clears the first
// strike: the topic is purged only at the second check after it.
func TestPublishClearsTheStrike(t *testing.T) {
	f := newPurgeFixture(t)
	f.publish(t, ra, "0")
	f.delete(t, ra)
	require.Empty(t, f.check(t))
	require.True(t, f.struck(ra))
	require.ErrorIs(t, f.p.Publish(ra, message.NewMessage("1", nil)), kerr.UnknownTopicOrPartition)
	require.False(t, f.struck(ra))
	require.Empty(t, f.check(t), "a first strike again")
	require.Equal(t, []string{ra}, f.check(t))
}

// A topic outside the purge prefix is never asked about, nor purged, even
// deleted.
func TestTopicOutsideThePrefixIsNeverPurged(t *testing.T) {
	f := newPurgeFixture(t)
	f.publish(t, state, "0")
	f.publish(t, ra, "0")
	f.delete(t, state)
	f.delete(t, ra)
	seen := metadataTopics(f.c)
	require.Empty(t, f.check(t))
	require.Equal(t, []string{ra}, f.check(t))
	require.Empty(t, f.check(t))
	require.Empty(t, f.check(t))
	produced, _ := f.known()
	require.Equal(t, []string{state}, produced)
	requireNotAsked(t, seen, state)
}

// A topic that exists and is idle is never purged, so the idempotent
// producer's sequence numbers there go on and no later record is taken for
// a duplicate and dropped.
func TestIdleLiveTopicIsNotPurged(t *testing.T) {
	f := newPurgeFixture(t)
	var purged []string
	for i := range 3 {
		f.publish(t, ra, fmt.Sprint(i))
		purged = append(purged, f.check(t)...)
		purged = append(purged, f.check(t)...)
	}
	require.EqualValues(t, 3, f.end(t, ra), "every record written")
	require.Empty(t, purged)
	produced, _ := f.known()
	require.Equal(t, []string{ra}, produced)
}

// A topic that a Publish began to produce to after the brokers were asked
// is not purged, though they said it was missing at this check and the one
// before: that Publish may have created it again and written there, and the
// purge would restart the producer's sequence numbers on the live topic,
// where the broker would take the next record for a duplicate without
// writing it.
func TestTopicPublishedSinceAskedIsNotPurged(t *testing.T) {
	f := newPurgeFixture(t)
	f.publish(t, ra, "0")
	f.delete(t, ra)
	require.Empty(t, f.check(t))
	require.True(t, f.struck(ra))

	idles := f.p.idleTopics(0)
	missing, err := f.p.missingTopics(context.Background(), []string{ra})
	require.NoError(t, err)
	require.Equal(t, []string{ra}, missing)
	require.ErrorIs(t, f.p.Publish(ra, message.NewMessage("1", []byte("fails"))), kerr.UnknownTopicOrPartition) // purges
	f.publish(t, ra, "2")                                                                                       // created again
	purged := f.p.purgeIdle(idles, missing)
	f.publish(t, ra, "3")
	require.EqualValues(t, 2, f.end(t, ra), "both records on the new topic are written")
	require.Empty(t, purged)
}

// A topic with a Publish in flight is not purged, whether it began before
// the idle topics were taken or after; it is once that Publish has ended,
// at the second check after.
func TestTopicInFlightIsNotPurged(t *testing.T) {
	f := newPurgeFixture(t)
	f.publish(t, ra, "0")
	f.delete(t, ra)
	require.Empty(t, f.check(t))
	require.True(t, f.struck(ra))

	idles := f.p.idleTopics(0)
	require.Contains(t, idles, ra)
	// kgo still knows a's partition and produces there: the broker holds
	// the request, and the Publish is in flight until it answers.
	held, release := kafkatest.HoldFirst(f.c, kmsg.Produce)
	defer release()
	done := make(chan error, 1)
	go func() { done <- f.p.Publish(ra, message.NewMessage("1", nil)) }()
	<-held
	missing, err := f.p.missingTopics(context.Background(), []string{ra})
	require.NoError(t, err)
	require.Equal(t, []string{ra}, missing)
	require.Empty(t, f.p.purgeIdle(idles, missing), "began after the idle topics were taken")
	require.Empty(t, f.check(t), "began before")
	require.Empty(t, f.check(t), "still in flight")

	release()
	select {
	case err := <-done:
		require.ErrorIs(t, err, kerr.UnknownTopicOrPartition)
	case <-time.After(10 * time.Second):
		t.Fatal("the Publish did not end")
	}
	require.Empty(t, f.check(t))
	require.Equal(t, []string{ra}, f.check(t))
}

// Only topics idle for the interval are asked about: none, no request.
func TestRecentTopicsAreNotAsked(t *testing.T) {
	f := newPurgeFixture(t)
	f.publish(t, ra, "0")
	f.delete(t, ra)
	seen := metadataTopics(f.c)
	f.p.client.PurgeTopicsFromProducing(ra) // kgo's own refreshes name it no more
	purged, err := f.p.purgeMissing(context.Background(), time.Hour)
	require.NoError(t, err)
	require.Empty(t, purged)
	// Every request the check made was observed before it was answered.
	requireNotAsked(t, seen, ra)
}

// purgeLoopFixture is a publisher on c checking every millisecond, with
// its own client, and an observer of c's Metadata requests that has seen
// the loop ask about a deleted topic under the prefix.
func purgeLoopFixture(t *testing.T) (p *Publisher, cl *kgo.Client, seen <-chan []string) {
	t.Helper()
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, ra, state))
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	p, err = NewPublisher(PublisherConfig{Client: cl, PurgeInterval: time.Millisecond, PurgePrefix: purgePrefix}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	// Two topics, so that kgo's own metadata requests (naming both) are
	// told from the check's (naming only the idle one under the prefix).
	require.NoError(t, p.Publish(ra, message.NewMessage("1", nil)))
	require.NoError(t, p.Publish(state, message.NewMessage("1", nil)))
	seen = metadataTopics(c)
	timeout := time.After(10 * time.Second)
	for {
		select {
		case topics := <-seen:
			if !slices.Equal(topics, []string{ra}) {
				continue
			}
		case <-timeout:
			t.Fatal("the loop does not ask about ra alone")
		}
		return p, cl, seen // the loop asks
	}
}

// checks are how many of seen's requests for window were the check's
// (naming only ra).
func checks(seen <-chan []string, window time.Duration) (n int) {
	end := time.After(window)
	for {
		select {
		case topics := <-seen:
			if slices.Equal(topics, []string{ra}) {
				n++
			}
		case <-end:
			return n
		}
	}
}

// Close stops the purge loop: the check asks the brokers no more.
func TestCloseStopsPurges(t *testing.T) {
	p, _, seen := purgeLoopFixture(t)
	require.NoError(t, p.Close())
	select {
	case <-p.purgesDone:
	default:
		t.Fatal("the purge loop runs on after Close")
	}
	for len(seen) > 0 { // asked before Close
		<-seen
	}
	// Two hundred intervals, the client alive: at most the request of a
	// check that Close cut short, written before it and read by the broker
	// after.
	require.LessOrEqual(t, checks(seen, 200*time.Millisecond), 1, "checks after Close")
}

// Closing the client ends the purge loop too, though the publisher is not
// closed.
func TestClientCloseStopsPurges(t *testing.T) {
	p, cl, _ := purgeLoopFixture(t)
	cl.Close()
	select {
	case <-p.purgesDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the purge loop runs on after the client was closed")
	}
}

// Without a purge prefix, no loop runs.
func TestNoPrefixNoPurges(t *testing.T) {
	c := kafkatest.Cluster(t)
	p, err := NewPublisher(PublisherConfig{Brokers: c.ListenAddrs(), PurgeInterval: time.Millisecond}, nil)
	require.NoError(t, err)
	defer p.Close()
	require.Nil(t, p.stopPurges)
}

// requireNotAsked drains the metadata requests seen so far and requires
// that none named topic.
func requireNotAsked(t *testing.T, seen <-chan []string, topic string) {
	t.Helper()
	for {
		select {
		case topics := <-seen:
			require.NotContains(t, topics, topic)
		default:
			return
		}
	}
}
