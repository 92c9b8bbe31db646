package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	sdk "github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/topics"
)

// TestSessionSurvivesRestart: a session and its leases outlive a restart
// of the worker (its partitions move to the new one); the keep-alives go on
// to the new worker, whose expiry scheduler then ends the session when its
// owner dies, within ttl + 1 s, and grants the locks to their waiters.
func TestSessionSurvivesRestart(t *testing.T) {
	sch := testdb.NewSchema(t)
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "locks.commands"))
	require.NoError(t, err)
	t.Cleanup(kafka.Close)
	brokers := kafka.ListenAddrs()
	external := func(c *config.Config) { c.Kafka.BootstrapServers = brokers }
	_, stop := startWith(t, sch.URL, external)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	owner, err := sdk.New(ctx, sdk.Config{Brokers: brokers, Requester: "owner"})
	require.NoError(t, err)
	defer owner.Close()
	next, err := sdk.New(ctx, sdk.Config{Brokers: brokers, Requester: "next"})
	require.NoError(t, err)
	defer next.Close()
	const ttl = 5 * time.Second
	s, err := owner.NewSession(ctx, ttl)
	require.NoError(t, err)
	locks := []string{"job-1", "job-2", "job-3", "job-4"}
	for _, lock := range locks {
		_, err := owner.Acquire(ctx, lock, sdk.WithSession(s))
		require.NoError(t, err)
	}
	granted := make(chan string, len(locks))
	for _, lock := range locks {
		queued := make(chan int, 1)
		go func() {
			l, err := next.Acquire(ctx, lock, sdk.OnQueued(func(p int) { queued <- p }))
			if err == nil {
				granted <- l.Name
			}
		}()
		<-queued
	}

	stop()
	startWith(t, sch.URL, external)
	first := s.ExpiresAt()
	require.Eventually(t, func() bool { return s.ExpiresAt().After(first.Add(time.Second)) }, 2*ttl, 20*time.Millisecond,
		"the new worker keeps the session alive")
	require.NoError(t, s.Err())
	require.Empty(t, granted, "the session's locks are still held")

	killed := time.Now()
	require.NoError(t, owner.Close()) // the owner dies: no close, no keep-alive
	for range locks {
		select {
		case <-granted:
		case <-time.After(ttl + time.Second - time.Since(killed)):
			t.Fatal("a lock of the dead owner's session was not granted within ttl + 1 s")
		}
	}
}

// TestSessionAuthenticated: a session's owner is scoped by its requester,
// like a lock's; another requester can neither close it nor acquire in it.
func TestSessionAuthenticated(t *testing.T) {
	keys := t.TempDir()
	aliceKey, _ := keyPair(t, keys, "alice")
	malloryKey, _ := keyPair(t, keys, "mallory")
	addr := freeAddr(t)
	startWith(t, testdb.NewSchema(t).URL, func(c *config.Config) {
		c.Embedded.Addr, c.Embedded.Dir = addr, t.TempDir()
		c.Auth = config.AuthConfig{Required: true, Keys: keys}
	})
	t.Setenv(sdk.EnvToken, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	alice, err := sdk.New(ctx, sdk.Config{Brokers: []string{addr}, Requester: "alice", SigningKeyFile: aliceKey})
	require.NoError(t, err)
	defer alice.Close()
	mallory, err := sdk.New(ctx, sdk.Config{Brokers: []string{addr}, Requester: "mallory", SigningKeyFile: malloryKey})
	require.NoError(t, err)
	defer mallory.Close()

	s, err := alice.NewSession(ctx, 10*time.Second, sdk.WithSessionOwner("worker-1"))
	require.NoError(t, err)
	require.Equal(t, "alice:worker-1", s.Owner, "owners are scoped by requester")
	l, err := alice.Acquire(ctx, "doc", sdk.WithSession(s))
	require.NoError(t, err)
	require.Equal(t, s.Owner, l.Owner)

	for _, cmd := range []topics.Command{
		{Operation: topics.OpSessionClose, SessionID: s.ID, OwnerID: s.Owner},
		{Operation: topics.OpSessionKeepAlive, SessionID: s.ID, OwnerID: "worker-1"},
		{Operation: topics.OpAcquire, LockName: "other", SessionID: s.ID, OwnerID: s.Owner},
	} {
		ev, err := mallory.Do(ctx, cmd)
		require.ErrorIs(t, err, sdk.ErrNotOwner, cmd.Operation)
		require.True(t, strings.Contains(ev.ErrorMessage, "another owner"), ev.ErrorMessage)
	}
	require.NoError(t, s.Close(ctx))
	require.ErrorIs(t, l.Err(), sdk.ErrReleased)
}
