package main

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/embedded"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/worker"
)

// devkafka makes the topics a worker would, under the names lockworker
// reads from the environment: the lock state topic compacted.
func TestTopicsAreTheWorkers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := map[string]string{
		"KAFKA_TOPIC_LOCK_STATE": "custom.state", "COMMANDS_PARTITIONS": "4",
		"LOG_LEVEL": "nonsense", // lockworker's alone: not devkafka's business
	}
	tc, err := topicsFromEnv(func(k string) string { return env[k] })
	require.NoError(t, err)
	require.EqualValues(t, 4, tc.CommandsPartitions)
	names := tc.Names()
	b, err := embedded.Start(ctx, brokerOptions("127.0.0.1:0", t.TempDir(), names, 3, time.Second, zerolog.Nop()))
	require.NoError(t, err)
	t.Cleanup(b.Close)

	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	listed, err := adm.ListTopics(ctx)
	require.NoError(t, err)
	want := map[string]int{}
	for _, s := range worker.Topics(names, 3) {
		want[s.Name] = int(s.Partitions)
	}
	have := map[string]int{}
	for name, d := range listed {
		have[name] = len(d.Partitions)
	}
	require.Equal(t, want, have)
	require.Equal(t, 3, have["custom.state"])

	configs := kafkatest.TopicConfigs(t, ctx, adm, "custom.state")
	require.Equal(t, "compact", configs["cleanup.policy"])
	for k, v := range worker.StateTopicConfigs() {
		require.Equal(t, v, configs[k], k)
	}
}

// A topic name lockworker would refuse stops devkafka, naming the variable.
func TestBadTopicName(t *testing.T) {
	_, err := topicsFromEnv(func(k string) string {
		if k == "KAFKA_TOPIC_COMMANDS" {
			return "no spaces"
		}
		return ""
	})
	require.ErrorContains(t, err, "KAFKA_TOPIC_COMMANDS")
}
