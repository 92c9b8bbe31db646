package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkaretry"
)

// Every worker client (the relay's producer, the group consumer, the admin
// clients, all built from KafkaOpts) refreshes metadata at most a second
// after a failed refresh, so a record produced during a broker's outage is
// sent about a second after it is back (kafkaretry.Opts), and waits at
// most a second between retries.
func TestKafkaOptsRetryWithinASecond(t *testing.T) {
	opts, err := Default().KafkaOpts()
	require.NoError(t, err)
	cl, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	defer cl.Close()
	assert.Equal(t, kafkaretry.MaxWait, cl.OptValue(kgo.MetadataMinAge))
	backoff, ok := cl.OptValue(kgo.RetryBackoffFn).(func(int) time.Duration)
	require.True(t, ok)
	for fails := 1; fails <= 10; fails++ {
		assert.LessOrEqual(t, backoff(fails), kafkaretry.MaxWait, "after %d failures", fails)
	}
}
