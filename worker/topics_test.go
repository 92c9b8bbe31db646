package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

// topicConfigs is what the broker says a topic's configs are.
func topicConfigs(t *testing.T, ctx context.Context, adm *kadm.Client, topic string) map[string]string {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	require.NoError(t, err)
	rc, err := rcs.On(topic, nil)
	require.NoError(t, err)
	require.NoError(t, rc.Err)
	out := map[string]string{}
	for _, c := range rc.Configs {
		out[c.Key] = c.MaybeValue()
	}
	return out
}

// EnsureTopics creates each of Topics with its partitions and configs, under
// the names configured: the lock state topic compacted.
func TestEnsureTopicsCreatesTopics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	names := topics.DefaultNames()
	names.State = "custom.state"
	w, err := worker.New(worker.Config{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, Names: names,
		CommandsPartitions: 4, Store: testdb.New(t), Relay: idleRelay{}})
	require.NoError(t, err)
	t.Cleanup(w.Close)
	require.NoError(t, w.EnsureTopics(ctx))

	adm := kadm.NewClient(w.Client())
	listed, err := adm.ListTopics(ctx)
	require.NoError(t, err)
	specs := worker.Topics(names, 4)
	require.Len(t, specs, 7)
	for _, s := range specs {
		require.Len(t, listed[s.Name].Partitions, int(s.Partitions), s.Name)
		have := topicConfigs(t, ctx, adm, s.Name)
		for k, v := range s.Configs {
			require.Equal(t, v, have[k], "%s: %s", s.Name, k)
		}
	}
	state := topicConfigs(t, ctx, adm, "custom.state")
	require.Equal(t, "compact", state["cleanup.policy"])
	require.Equal(t, "67108864", state["segment.bytes"], "64 MiB")
	require.Equal(t, "3600000", state["segment.ms"], "an hour")
	require.Len(t, listed["custom.state"].Partitions, 4)
}
