package realkafka

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// testStateTopic: the broker took the lock state topic lockworker created as
// the compacted table it is meant to be, with a partition per commands
// partition.
func testStateTopic(ctx context.Context, t *testing.T, s *suite) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	cfgs, err := adm.DescribeTopicConfigs(ctx, s.names.State)
	require.NoError(t, err)
	rc, err := cfgs.On(s.names.State, nil)
	require.NoError(t, err)
	require.NoError(t, rc.Err)
	policy := ""
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" {
			policy = c.MaybeValue()
		}
	}
	require.Equal(t, "compact", policy, "cleanup.policy of %s", s.names.State)
	tds, err := adm.ListTopics(ctx, s.names.State)
	require.NoError(t, err)
	require.NoError(t, tds.Error())
	require.Len(t, tds[s.names.State].Partitions, partitions)
}
