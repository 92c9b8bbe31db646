package kafkapubsub

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
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

	late := p.purgeCounts([]TopicMessages{{Topic: topic}})[0]                                                    // a Publish that began now
	require.ErrorIs(t, p.Publish(topic, message.NewMessage("2", []byte("fails"))), kerr.UnknownTopicOrPartition) // purges
	require.NoError(t, p.Publish(topic, message.NewMessage("3", []byte("first"))), "created again")
	p.forgetTopic(topic, late) // the late one's failure, on the same deletion
	require.NoError(t, p.Publish(topic, message.NewMessage("4", []byte("second"))))

	offs, err := kadm.NewClient(adm).ListEndOffsets(context.Background(), topic)
	require.NoError(t, err)
	end, _ := offs.Lookup(topic, 0)
	require.EqualValues(t, 2, end.Offset, "both records on the new topic are written")
}
