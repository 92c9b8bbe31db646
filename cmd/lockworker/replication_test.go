package main

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
)

// The service creates its topics with KAFKA_TOPIC_REPLICATION_FACTOR
// replicas and, on brokers of KAFKA_BOOTSTRAP_SERVERS, warns of its topics
// with a single replica; not on the embedded broker, which has one.
func TestTopicReplicationFactor(t *testing.T) {
	const warning = "have a single replica"
	run := func(t *testing.T, brokers []string, factor int16) string {
		logs := &testlog.Buffer{}
		m := NewMain()
		m.Logger = zerolog.New(logs)
		m.Config.Postgres.URL = testdb.NewSchema(t).URL
		m.Config.HTTPAddr = "127.0.0.1:0"
		m.Config.Kafka.BootstrapServers = brokers
		m.Config.Topics.ReplicationFactor = factor
		if brokers == nil {
			m.Config.Embedded.Addr, m.Config.Embedded.Dir = freeAddr(t), t.TempDir()
		}
		r, stop := runMain(t, m)
		r.await(t, m.Ready)
		stop()
		return logs.String()
	}
	cluster := func(t *testing.T, n int) *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(n))
		require.NoError(t, err)
		t.Cleanup(c.Close)
		return c
	}

	t.Run("one broker", func(t *testing.T) {
		c := cluster(t, 1)
		logs := run(t, c.ListenAddrs(), -1)
		assert.Contains(t, logs, "topics locks.commands, locks.lock.acquired.v1, locks.lock.released.v1, locks.lock.expired.v1, locks.lock.revoked.v1, locks.commands.dlq, locks.state.v1 "+warning)
	})
	t.Run("replicated", func(t *testing.T) {
		c := cluster(t, 3)
		logs := run(t, c.ListenAddrs(), 2)
		assert.NotContains(t, logs, warning)
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
		require.NoError(t, err)
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		listed, err := kadm.NewClient(cl).ListTopics(ctx, "locks.commands", "locks.state.v1")
		require.NoError(t, err)
		for _, topic := range []string{"locks.commands", "locks.state.v1"} {
			require.NotEmpty(t, listed[topic].Partitions, topic)
			for _, p := range listed[topic].Partitions {
				assert.Len(t, p.Replicas, 2, "%s partition %d", topic, p.Partition)
			}
		}
	})
	t.Run("embedded", func(t *testing.T) {
		logs := run(t, nil, -1)
		assert.NotContains(t, logs, warning)
	})
}
