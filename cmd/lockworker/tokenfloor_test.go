package main

import (
	"context"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// PostgreSQL loses the transactions of a grant Kafka published (a restore,
// an asynchronous failover): its fencing token sequence goes back. The next
// start finds the grant on the lock.acquired topic, says so at error level,
// and the next grant's token is above it.
func TestRestartAfterLostTransactions(t *testing.T) {
	sch := testdb.NewSchema(t)
	addr, dir := freeAddr(t), t.TempDir()
	_, stop := start(t, sch.URL, addr, dir)
	a := newClient(t, addr, "locks.replies.a")
	a.send(topics.Command{RequestID: "r1", Operation: "acquire", LockName: "job", OwnerID: "a", LeaseDuration: 300})
	held := a.await("r1", topics.TypeAcquired)
	lifecycle := newClient(t, addr, topics.DefaultNames().Acquired) // read only
	lifecycle.await("r1", topics.TypeAcquired)
	stop()

	db := sch.Open(t, store.Config{})
	_, err := db.Pool.Exec(context.Background(), `SELECT setval('fencing_tokens', 1, false)`)
	require.NoError(t, err)

	var log testlog.Buffer
	m := NewMain()
	m.Logger = zerolog.New(&log)
	m.Config.Postgres.URL = sch.URL
	m.Config.InstanceID = "e2e"
	m.Config.HTTPAddr = "127.0.0.1:0"
	m.Config.Embedded.Addr, m.Config.Embedded.Dir = addr, dir
	run, _ := runMain(t, m)
	run.await(t, m.Ready)
	require.Contains(t, log.String(), `"level":"error"`)
	require.Contains(t, log.String(), "PostgreSQL is behind Kafka")
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.Contains(l, "behind Kafka") {
			t.Log(l)
		}
	}

	b := newClient(t, addr, "locks.replies.b")
	b.send(topics.Command{RequestID: "r2", Operation: "acquire", LockName: "other", OwnerID: "b", LeaseDuration: 300})
	require.Greater(t, b.await("r2", topics.TypeAcquired).LockInfo.FencingToken, held.LockInfo.FencingToken)
}
