package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

// TestSessionTimeoutRefused: a session timeout below another broker's
// group.min.session.timeout.ms (here Apache Kafka's 6 s) stops the service
// with ErrSessionTimeout instead of retrying forever; below the embedded
// broker's, which config knows, it is refused before anything starts, as
// a configuration (exit code 2).
func TestSessionTimeoutRefused(t *testing.T) {
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(config.ApacheMinSessionTimeout))
	require.NoError(t, err)
	defer kafka.Close()
	m := NewMain()
	m.Config.Postgres.URL = testdb.NewSchema(t).URL
	m.Config.HTTPAddr = "127.0.0.1:0"
	m.Config.Kafka.BootstrapServers = kafka.ListenAddrs()
	m.Config.Kafka.SessionTimeout = 2 * time.Second
	require.NoError(t, m.Config.Validate())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = m.Run(ctx)
	m.Close()
	require.ErrorIs(t, err, worker.ErrSessionTimeout)
	require.ErrorContains(t, err, "KAFKA_SESSION_TIMEOUT")

	m = NewMain()
	m.Config.Postgres.URL = "postgres://nobody@127.0.0.1:1/none" // never reached
	m.Config.HTTPAddr = "127.0.0.1:0"
	m.Config.Embedded.Addr, m.Config.Embedded.Dir = "127.0.0.1:0", t.TempDir()
	m.Config.Kafka.SessionTimeout = 2 * time.Second
	err = m.Run(ctx)
	m.Close()
	require.ErrorContains(t, err, "KAFKA_SESSION_TIMEOUT")
	require.ErrorContains(t, err, "EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT")
	require.Equal(t, 2, exitStatus(err, false))
	require.Nil(t, m.Embedded, "refused before the broker starts")
}

// TestStaticMemberLeavesOnStop: a static member that stops cleanly leaves
// the group at once, so its partitions move long before its (here 30 s)
// session timeout would have let them.
func TestStaticMemberLeavesOnStop(t *testing.T) {
	names := topics.DefaultNames()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(16, names.Commands),
		kfake.SeedTopics(1, names.Acquired, names.Released, names.Expired, names.DeadLetter))
	require.NoError(t, err)
	defer c.Close()
	url := testdb.NewSchema(t).URL
	static := func(name string) func(*config.Config) {
		return func(cfg *config.Config) {
			cfg.Kafka.BootstrapServers = c.ListenAddrs()
			cfg.Kafka.SessionTimeout = 30 * time.Second
			cfg.Kafka.StaticMembership, cfg.Kafka.GroupInstanceID, cfg.InstanceID = true, name, name
		}
	}
	_, stopA := startWith(t, url, static("a"))
	startWith(t, url, static("b"))

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	members := func(c *assert.CollectT) []string {
		gs, err := adm.DescribeGroups(context.Background(), "lockworker")
		require.NoError(c, err)
		var ids []string
		for _, m := range gs["lockworker"].Members {
			if m.InstanceID != nil {
				ids = append(ids, *m.InstanceID)
			}
		}
		return ids
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) { assert.Len(c, members(c), 2) }, 30*time.Second, 50*time.Millisecond)

	stopped := time.Now()
	stopA()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, []string{"b"}, members(c))
	}, 5*time.Second, 20*time.Millisecond, "a left the group on its clean stop")
	t.Logf("a was out of the group %s after its stop began", time.Since(stopped).Round(time.Millisecond))
}
