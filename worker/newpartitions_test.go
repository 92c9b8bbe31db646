package worker

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/topics"
)

// Partitions added to the commands topic while the workers run are taken
// within metadataMaxAge and a rebalance, not at kgo's own metadata refresh
// (every 5 minutes by default), under either group protocol: a command
// produced to one is answered.
func TestAddedCommandsPartitionsAreTaken(t *testing.T) {
	for _, c := range []struct {
		name string
		opts []kgo.Opt
	}{
		{"classic", nil},
		{"consumer", []kgo.Opt{kgo.Balancers(kgo.StickyBalancer()), kgo.ServerSideBalancer()}},
	} {
		t.Run(c.name, func(t *testing.T) {
			was := metadataMaxAge
			metadataMaxAge = 500 * time.Millisecond
			t.Cleanup(func() { metadataMaxAge = was })
			cluster := kafkatest.Cluster(t)
			// kgo refuses a max age below the min age (5 s by default).
			w, st := runOneCommandsPartition(t, cluster, nil, append(c.opts, kgo.MetadataMinAge(100*time.Millisecond))...)

			ctx := context.Background()
			commands := topics.DefaultNames().Commands
			kopts := []kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...)}
			const reply = "locks.replies.newparts"
			send := func(id string, partition int32) {
				t.Helper()
				// A client made now, which knows the partitions there are.
				prod, err := kgo.NewClient(append(kopts, kgo.DefaultProduceTopic(commands), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
				require.NoError(t, err)
				defer prod.Close()
				rec := acquire(t, id, reply)
				rec.Partition = partition
				require.NoError(t, prod.ProduceSync(ctx, rec).FirstErr())
				require.Eventually(t, func() bool { return slices.Contains(answered(t, st, reply), id) },
					30*time.Second, 50*time.Millisecond, "%s answered", id)
			}
			// Past the metadata kgo loads as it starts fetching what it was
			// assigned, which would see a partition added before.
			send("on-the-first-partition", 0)

			admin, err := kgo.NewClient(kopts...)
			require.NoError(t, err)
			t.Cleanup(admin.Close)
			added, err := kadm.NewClient(admin).CreatePartitions(ctx, 1, commands)
			require.NoError(t, err)
			require.NoError(t, added.Error())
			send("on-the-added-partition", 1)
			require.Equal(t, []int32{0, 1}, w.Partitions())
		})
	}
}
