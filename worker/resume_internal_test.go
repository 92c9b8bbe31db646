package worker

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/topics"
)

// Resuming assigned partitions retries a failure that may pass by itself
// (here the broker answers the listing of the log ends LEADER_NOT_AVAILABLE,
// as during an election): failing the assignment would end the client's
// group session, losing every partition of the replica and rebalancing the
// whole group. A failure that cannot pass still fails it.
func TestResumeRetriesTransientFailures(t *testing.T) {
	ctx := context.Background()
	names := topics.DefaultNames()
	c := kafkatest.Cluster(t, kfake.SeedTopics(2, names.Commands))
	w, _ := newApplierOn(t, c)
	assigned := func() map[string]map[int32]kgo.Offset {
		return map[string]map[int32]kgo.Offset{names.Commands: {0: kgo.NewOffset(), 1: kgo.NewOffset()}}
	}

	election := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.ListOffsets}, Topic: names.Commands, Err: kerr.LeaderNotAvailable})
	offsets, err := w.resumeFromStore(ctx, assigned())
	require.NoError(t, err)
	require.Equal(t, 1, election.Hits())
	require.Equal(t, kgo.NewOffset().AtStart(), offsets[names.Commands][1], "nothing stored: from the log's start")

	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.ListOffsets}, Topic: names.Commands, Err: kerr.PolicyViolation})
	_, err = w.resumeFromStore(ctx, assigned())
	require.ErrorIs(t, err, kerr.PolicyViolation)
}
