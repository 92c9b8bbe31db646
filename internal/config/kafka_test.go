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
// clients, all built from KafkaOpts) waits at most a second between
// retries; their metadata age is kgo's (the relay's producer adds
// kafkaretry.MetadataOpt in cmd/lockworker: a consumer refreshing more
// often costs CPU in steady state).
func TestKafkaOptsRetryWithinASecond(t *testing.T) {
	opts, err := Default().KafkaOpts()
	require.NoError(t, err)
	cl, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	defer cl.Close()
	assert.Equal(t, 5*time.Second, cl.OptValue(kgo.MetadataMinAge), "kgo's default")
	backoff, ok := cl.OptValue(kgo.RetryBackoffFn).(func(int) time.Duration)
	require.True(t, ok)
	for fails := 1; fails <= 10; fails++ {
		assert.LessOrEqual(t, backoff(fails), kafkaretry.MaxWait, "after %d failures", fails)
	}
}
