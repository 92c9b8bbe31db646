package realkafka

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/worker"
)

// testStateTopic: the broker took the lock state topic lockworker created as
// the compacted table it is meant to be, with its configs
// (worker.StateTopicConfigs) and a partition per commands partition.
func testStateTopic(ctx context.Context, t *testing.T, s *suite) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	configs := kafkatest.TopicConfigs(t, ctx, adm, s.names.State)
	for k, v := range worker.StateTopicConfigs() {
		require.Equal(t, v, configs[k], "%s of %s", k, s.names.State)
	}
	tds, err := adm.ListTopics(ctx, s.names.State)
	require.NoError(t, err)
	require.NoError(t, tds.Error())
	require.Len(t, tds[s.names.State].Partitions, partitions)
}
