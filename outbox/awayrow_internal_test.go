package outbox

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
)

// The two-topics pause rule (settle): Kafka away for two topics in a row,
// with nothing acknowledged between them, pauses the partition. These
// tests run one pass over topics in order (OrderAcrossTopics) with a
// batch of topic t that Kafka refuses for a3 between them, so that setAside
// publishes it again in halves.

// awayRow returns a relay over pub and its store, with rows x1, t's a1 to
// a8, then a row of each of topics.
func awayRow(t *testing.T, pub message.Publisher, topics ...string) (*Relay, *store.Store) {
	t.Helper()
	st := testdb.New(t)
	r, err := New(Config{Publisher: pub, Pool: st.Pool, PollInterval: time.Hour, OrderAcrossTopics: true, Logger: zerolog.Nop()})
	require.NoError(t, err)
	insert := func(topic, value string) {
		_, err := st.Pool.Exec(context.Background(), `INSERT INTO outbox (source_partition, topic, key, value) VALUES (0, $1, $2, $3)`, topic, value[:1], value)
		require.NoError(t, err)
	}
	insert("x", "x1")
	setAsideRows(t, st, []string{"a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"})
	for _, topic := range topics {
		insert(topic, topic+"1")
	}
	return r, st
}

// Rows setAside got acknowledged are Kafka's answer, as any
// acknowledgement is, so Kafka away for its topic later (a4) is the
// topic's own failure, not a second topic in a row after x's: the
// partition does not pause, and y1 is published in the same pass.
func TestSetAsideAcknowledgementsShowKafkaThere(t *testing.T) {
	t.Parallel()
	pub := &kafkaLog{refused: map[string]bool{"a3": true}, away: func(call []string) bool { return call[0] == "x1" || call[0] == "a4" }}
	r, _ := awayRow(t, pub, "y")

	_, err := r.DrainOnce(context.Background(), 0)
	require.ErrorContains(t, err, "connection refused")
	require.Equal(t, [][]string{{"x1"}, {"a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"}, {"a1", "a2", "a3", "a4"}, {"a1", "a2"}, {"a3", "a4"}, {"a3"}, {"a4"}, {"y1"}}, pub.calls)
	require.Equal(t, []string{"a1", "a2", "y1"}, pub.written)
	p := r.part(0)
	require.True(t, p.pauseUntil.IsZero(), "Kafka acknowledged a1 a2 between x's failure and t's")
	require.Zero(t, p.kafkaFailures)
}

// When setAside's halves get nothing acknowledged before Kafka is away,
// x's failure then t's pause the partition: y1 is not tried.
func TestSetAsideWithoutAcknowledgementsPauses(t *testing.T) {
	t.Parallel()
	pub := &kafkaLog{refused: map[string]bool{"a3": true}, away: func(call []string) bool {
		return call[0] == "x1" || call[0] == "a1" && len(call) == 4
	}}
	r, _ := awayRow(t, pub, "y")

	_, err := r.DrainOnce(context.Background(), 0)
	require.ErrorContains(t, err, "connection refused")
	require.Equal(t, [][]string{{"x1"}, {"a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"}, {"a1", "a2", "a3", "a4"}}, pub.calls)
	require.Empty(t, pub.written)
	p := r.part(0)
	require.False(t, p.pauseUntil.IsZero(), "nothing acknowledged between x's failure and t's")
	require.EqualValues(t, 1, p.kafkaFailures)
}

// topicRefusing is kafkaLog, but a call starting with a value of refuse
// fails as for a topic Kafka refuses (TopicRefused), nothing of it
// written.
type topicRefusing struct {
	kafkaLog
	refuse map[string]bool
}

func (k *topicRefusing) Publish(topic string, msgs ...*message.Message) error {
	if len(msgs) > 0 && k.refuse[string(msgs[0].Payload)] {
		k.mu.Lock()
		defer k.mu.Unlock()
		var call []string
		for _, m := range msgs {
			call = append(call, string(m.Payload))
		}
		k.calls = append(k.calls, call)
		return fmt.Errorf("record timeout: %w", kerr.UnknownTopicOrPartition)
	}
	return k.kafkaLog.Publish(topic, msgs...)
}

// setAside's acknowledgements end the row of away topics however the unit
// ends, here its last half refused as for its topic (a record timeout
// wrapping UNKNOWN_TOPIC_OR_PARTITION, as in a broker's restart): y away
// after it is the first topic of a new row, and z is tried.
func TestSetAsideAcknowledgementsEndTheRowWhateverFollows(t *testing.T) {
	t.Parallel()
	pub := &topicRefusing{kafkaLog: kafkaLog{refused: map[string]bool{"a3": true}, away: func(call []string) bool {
		return call[0] == "x1" || call[0] == "y1"
	}}, refuse: map[string]bool{"a4": true}}
	r, _ := awayRow(t, pub, "y", "z")

	_, err := r.DrainOnce(context.Background(), 0)
	require.Error(t, err)
	require.Equal(t, []string{"a1", "a2", "z1"}, pub.written)
	require.True(t, r.part(0).pauseUntil.IsZero(), "a1 a2 acknowledged between x's failure and y's")
}

// A unit whose rows setAside parked without asking Kafka (headers that
// cannot be read) is no answer from Kafka: x then y away pause the
// partition, and z is not tried.
func TestRowsParkedUnaskedAreNoAnswer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pub := &kafkaLog{away: func(call []string) bool { return call[0] == "x1" || call[0] == "y1" }}
	st := testdb.New(t)
	r, err := New(Config{Publisher: pub, Pool: st.Pool, PollInterval: time.Hour, OrderAcrossTopics: true, Logger: zerolog.Nop()})
	require.NoError(t, err)
	for _, v := range []string{"x1", "bad", "y1", "z1"} {
		headers := []byte{} // none
		if v == "bad" {
			headers = []byte{0, 0, 0, 5, 0x61} // a header's length, then too few bytes
		}
		_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, key, value, headers) VALUES (0, $1, $2, $3, $4)`, v[:1], v[:1], v, headers)
		require.NoError(t, err)
	}

	_, err = r.DrainOnce(ctx, 0)
	require.ErrorContains(t, err, "connection refused")
	var parked int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE park_reason = 'UNREADABLE_HEADERS' AND parked_until = 'infinity'`).Scan(&parked))
	require.Equal(t, 1, parked, "b's row parked for good")
	require.Equal(t, [][]string{{"x1"}, {"y1"}}, pub.calls)
	p := r.part(0)
	require.False(t, p.pauseUntil.IsZero(), "x then y away with nothing acknowledged between")
	require.EqualValues(t, 1, p.kafkaFailures)
}
