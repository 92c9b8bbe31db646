package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	sdk "github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/topics"
)

// TestSessionSurvivesRestart: a session and its leases outlive a restart
// of the worker (its partitions move to the new one); the keep-alives go on
// to the new worker, whose expiry scheduler then ends the session when its
// owner dies and grants the locks to their waiters.
func TestSessionSurvivesRestart(t *testing.T) {
	sch := testdb.NewSchema(t)
	kafka, external := externalKafka(t)
	brokers := kafka.ListenAddrs()
	_, stop := startWith(t, sch.URL, external)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	owner, err := sdk.New(ctx, sdk.Config{Brokers: brokers, Requester: "owner"})
	require.NoError(t, err)
	defer owner.Close()
	next, err := sdk.New(ctx, sdk.Config{Brokers: brokers, Requester: "next"})
	require.NoError(t, err)
	defer next.Close()
	// Keep-alives come every ttl/3; the restart (drain, migrations behind
	// other tests', topics, the group's join) must fit in the rest.
	const ttl = 12 * time.Second
	s, err := owner.NewSession(ctx, ttl)
	require.NoError(t, err)
	locks := []string{"job-1", "job-2", "job-3", "job-4"}
	for _, lock := range locks {
		_, err := owner.Acquire(ctx, lock, sdk.WithSession(s))
		require.NoError(t, err)
	}
	granted, failed := e2e.QueueWaiters(t, ctx, next, locks)

	stop()
	startWith(t, sch.URL, external)
	first := s.ExpiresAt()
	require.Eventually(t, func() bool { return s.ExpiresAt().After(first.Add(time.Second)) }, 2*ttl, 20*time.Millisecond,
		"the new worker keeps the session alive")
	require.NoError(t, s.Err())
	require.Empty(t, granted, "the session's locks are still held")

	expired := newClient(t, brokers[0], "locks.lock.expired.v1")
	require.NoError(t, owner.Close()) // the owner dies: no close, no keep-alive
	grantedAfter(t, granted, failed, sessionEnds(t, expired, locks))
}

// sessionEnds reads, for each of locks, the lease that its lock.expired
// shows ended when a session's end ended it: its fencing token and its
// expires_at, the session's expiry by the database's clock.
func sessionEnds(t *testing.T, expired *client, locks []string) map[string]topics.LockInfo {
	ends := map[string]topics.LockInfo{}
	for len(ends) < len(locks) {
		if li := expired.await("", topics.TypeExpired).LockInfo; li != nil && slices.Contains(locks, li.LockName) {
			require.NotNil(t, li.ExpiresAt, "%s's lock.expired has no expires_at", li.LockName)
			ends[li.LockName] = *li
		}
	}
	return ends
}

// grantedAfter checks that each lock was granted to its waiter once its
// session's lease had ended (ends): at or after the session's expiry, by
// the database's clock, with a greater fencing token, and within the 20 s
// the waiters are given. How soon after the expiry (the contract's 1 s) is
// lockbench's to measure: a loaded machine stretches the expiry
// scheduler's pass, which a test must not fail for.
func grantedAfter(t *testing.T, granted <-chan *sdk.Lease, failed <-chan error, ends map[string]topics.LockInfo) {
	t.Helper()
	for range ends {
		select {
		case l := <-granted:
			end, ok := ends[l.Name]
			require.True(t, ok, "%s granted, not a lock of the session", l.Name)
			t.Logf("%s granted %s after its session's expiry", l.Name, l.Info().AcquiredAt.Time.Sub(end.ExpiresAt.Time).Round(time.Millisecond))
			require.False(t, l.Info().AcquiredAt.Time.Before(end.ExpiresAt.Time),
				"%s granted at %s, before its session expired at %s", l.Name, l.Info().AcquiredAt.Time, end.ExpiresAt.Time)
			require.Greater(t, l.Token, end.FencingToken, "%s's new lease has a greater token than the session's", l.Name)
		case err := <-failed:
			t.Fatal(err)
		case <-time.After(20 * time.Second):
			t.Fatal("a lock of the dead owner's session was not granted")
		}
	}
}

// TestSessionAuthenticated: a session's owner is scoped by its requester,
// like a lock's; another requester can neither close it nor acquire in it.
func TestSessionAuthenticated(t *testing.T) {
	keys := t.TempDir()
	aliceKey, _ := keyPair(t, keys, "alice")
	malloryKey, _ := keyPair(t, keys, "mallory")
	addr := startEmbedded(t, func(c *config.Config) { c.Auth = config.AuthConfig{Required: true, Keys: keys} })
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

// ownerEnv tells a copy of this test binary to be the session's owner
// process of TestSessionOwnerSIGKILL, on these brokers.
const ownerEnv = "LOCKWORKER_TEST_SESSION_OWNER"

// TestSessionOwnerSIGKILL: a process holding locks in a session is
// SIGKILLed: once its session expires every one of its locks is granted to
// the next waiter, by the worker alone (nothing tells it the owner died).
func TestSessionOwnerSIGKILL(t *testing.T) {
	if os.Getenv(ownerEnv) != "" {
		t.Skip("the owner process runs TestSessionOwnerProcess only")
	}
	addr := freeAddr(t)
	start(t, testdb.NewSchema(t).URL, addr, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	owner, ready := reexec(t, ctx, "TestSessionOwnerProcess", ownerEnv+"="+addr, "OWNER READY ")
	var ttl time.Duration
	fmt.Sscanf(ready, "%d", &ttl)
	require.NotZero(t, ttl, "the owner process never said it holds the locks")

	next, err := sdk.New(ctx, sdk.Config{Brokers: []string{addr}, Requester: "next"})
	require.NoError(t, err)
	defer next.Close()
	granted, failed := e2e.QueueWaiters(t, ctx, next, ownerLocks)

	expired := newClient(t, addr, "locks.lock.expired.v1")
	require.NoError(t, owner.Process.Kill()) // SIGKILL
	_ = owner.Wait()
	grantedAfter(t, granted, failed, sessionEnds(t, expired, ownerLocks))
}

var ownerLocks = []string{"proc-1", "proc-2", "proc-3"}

// TestSessionOwnerProcess is the owner process of TestSessionOwnerSIGKILL:
// it opens a session, takes the locks in it, says so and waits to be killed.
func TestSessionOwnerProcess(t *testing.T) {
	addr := os.Getenv(ownerEnv)
	if addr == "" {
		t.Skip("run by TestSessionOwnerSIGKILL")
	}
	ctx := context.Background()
	c, err := sdk.New(ctx, sdk.Config{Brokers: []string{addr}, Requester: "owner"})
	require.NoError(t, err)
	const ttl = 2 * time.Second
	s, err := c.NewSession(ctx, ttl)
	require.NoError(t, err)
	for _, lock := range ownerLocks {
		_, err := c.Acquire(ctx, lock, sdk.WithSession(s))
		require.NoError(t, err)
	}
	fmt.Printf("OWNER READY %d\n", ttl)
	select {}
}
