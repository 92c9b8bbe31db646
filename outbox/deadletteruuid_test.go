package outbox_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/kafkapubsub"
)

// lostAnswer publishes, and fails the first call after Kafka wrote it (an
// answer lost, a produce timed out after the write): the relay publishes
// the rows again, a duplicate.
type lostAnswer struct {
	message.Publisher
	calls atomic.Int64
}

func (l *lostAnswer) Publish(topic string, msgs ...*message.Message) error {
	if err := l.Publisher.Publish(topic, msgs...); err != nil {
		return err
	}
	if l.calls.Add(1) == 1 {
		return errors.New("answer lost")
	}
	return nil
}

// A row without ce_id (a dead-letter copy of a record without one, a
// BATCH_TOO_LARGE marker) published twice, its first answer lost, carries
// the same message UUID both times: a consumer deduping on it keeps one.
func TestDuplicateOfARowWithoutCEIDKeepsItsUUID(t *testing.T) {
	const topic, p = "locks.commands.dlq", int32(0)
	c := newCluster(t, kfake.SeedTopics(1, topic))
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	relay := newRelay(t, st, &lostAnswer{Publisher: pub.Publisher}, nil)
	insert(t, st, p, rec{topic, "k", "copy", ""}, rec{topic, "k", "another copy", ""})
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
	require.Eventually(t, func() bool { return count(t, st, "true") == 0 }, 10*time.Second, 10*time.Millisecond)

	rs := consume(t, c.ListenAddrs(), topic, 4)
	uuids := map[string][]string{}
	for _, r := range rs {
		id, ok := header(r, kafkapubsub.UUIDHeader)
		require.True(t, ok)
		uuids[string(r.Value)] = append(uuids[string(r.Value)], id)
	}
	t.Logf("UUIDs: %v", uuids)
	require.Len(t, uuids["copy"], 2, "published twice")
	require.Equal(t, uuids["copy"][0], uuids["copy"][1], "one row's duplicates carry one UUID")
	require.Len(t, uuids["another copy"], 2, "published twice")
	require.Equal(t, uuids["another copy"][0], uuids["another copy"][1], "one row's duplicates carry one UUID")
	require.NotEqual(t, uuids["copy"][0], uuids["another copy"][0], "two rows carry two UUIDs")
}
