package outbox

import (
	"testing"
	"time"

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
