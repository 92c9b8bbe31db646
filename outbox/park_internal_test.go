package outbox

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// A parked or backing-off topic does not make every pass read the table:
// passes publish the other topics' rows handed over, leaving its own in
// the table. The end of a backoff does: the topic is retried from there.
func TestWaitingTopicReadsTheTableOnlyToRetry(t *testing.T) {
	r := &Relay{cfg: Config{PollInterval: time.Hour}}
	now := time.Now()
	p := &partition{parked: map[string]bool{"p": true}, blocked: map[string]block{"b": {at: now, until: now.Add(time.Minute)}}, lastRead: now}
	require.False(t, r.mustRead(p), "parked, backing off")
	require.True(t, p.waits(row{topic: "p"}))
	require.True(t, p.waits(row{topic: "b"}))
	require.False(t, p.waits(row{topic: "other"}))
	p.blocked["b"] = block{at: now.Add(-time.Minute), until: now}
	require.True(t, r.mustRead(p), "backoff over")
	require.True(t, p.waits(row{topic: "b"}), "until the read retried it")
}

// Two topics failing one after the other for Kafka being away, with no
// success between, pause the partition, also when each failed in a pass
// of its own (as passes publishing one commit's rows handed over do). One
// topic failing again does not: it backs off alone. A success between
// forgets the failure.
func TestKafkaAwayPausesAcrossPasses(t *testing.T) {
	r := &Relay{cfg: Config{RetryBase: time.Second, RetryMax: time.Minute}, log: zerolog.Nop()}
	p := &partition{blocked: map[string]block{}}
	away := errors.New("dial tcp: connection refused")
	pass := func(topic string, err error) { // a pass of its own
		r.settle(context.Background(), p, unit{topic: topic, rows: []row{{id: 1, topic: topic}}}, err, &passState{failed: map[string]bool{}})
	}
	pass("x", away)
	pass("x", away)
	require.True(t, p.pauseUntil.IsZero(), "one topic")
	pass("y", nil)
	pass("z", away)
	require.True(t, p.pauseUntil.IsZero(), "a success between")
	pass("x", away)
	require.True(t, p.pauseUntil.After(time.Now()), "two topics in a row")
	require.Equal(t, 1, p.kafkaFailures)
}
