package main

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

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

	b := newClient(t, addr, "locks.replies.b")
	b.send(topics.Command{RequestID: "r2", Operation: "acquire", LockName: "other", OwnerID: "b", LeaseDuration: 300})
	require.Greater(t, b.await("r2", topics.TypeAcquired).LockInfo.FencingToken, held.LockInfo.FencingToken)
}

// The service's principal without Read on the lock.acquired topic: the
// check's fetch is refused TOPIC_AUTHORIZATION_FAILED. Under
// TOKEN_FLOOR_CHECK=require (the default) the start fails at once, naming
// the topic and the setting; under warn it logs that at error level and
// goes on.
func TestStartWithoutReadOnLockAcquired(t *testing.T) {
	acquired := topics.DefaultNames().Acquired
	kafka, external := externalKafka(t)
	p, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...))
	require.NoError(t, err)
	defer p.Close()
	_, err = kadm.NewClient(p).CreateTopic(context.Background(), 1, 1, nil, acquired)
	require.NoError(t, err)
	ev := topics.NewEvent(topics.TypeAcquired, topics.OpAcquire, "r0", time.Now())
	ev.LockInfo = &topics.LockInfo{LockName: "l", OwnerID: "o", Status: topics.StatusAcquired, FencingToken: 7}
	v, err := ev.Encode()
	require.NoError(t, err)
	require.NoError(t, p.ProduceSync(context.Background(), &kgo.Record{Topic: acquired, Value: v}).FirstErr())
	// As a broker without Read on the topic; the worker's own fetches go.
	kafka.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: acquired, Err: kerr.TopicAuthorizationFailed, Count: -1})

	t.Run("require", func(t *testing.T) {
		m := NewMain()
		m.Logger = zerolog.Nop()
		m.Config.Postgres.URL = testdb.NewSchema(t).URL
		m.Config.InstanceID = "e2e"
		m.Config.HTTPAddr = "127.0.0.1:0"
		external(&m.Config)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		began := time.Now()
		err := m.Run(ctx)
		m.Close()
		require.ErrorIs(t, err, kerr.TopicAuthorizationFailed)
		require.ErrorContains(t, err, `topic "`+acquired+`"`)
		require.ErrorContains(t, err, "TOKEN_FLOOR_CHECK")
		require.Less(t, time.Since(began), 25*time.Second, "refused at once, not after the check's 30 s bound")
	})
	t.Run("warn", func(t *testing.T) {
		var log testlog.Buffer
		m := NewMain()
		m.Logger = zerolog.New(&log)
		m.Config.Postgres.URL = testdb.NewSchema(t).URL
		m.Config.InstanceID = "e2e"
		m.Config.HTTPAddr = "127.0.0.1:0"
		m.Config.TokenFloorCheck = "warn"
		external(&m.Config)
		run, _ := runMain(t, m)
		run.await(t, m.Ready)
		require.Contains(t, log.String(), "TOKEN_FLOOR_CHECK=warn")
		require.Contains(t, log.String(), `"level":"error"`)
	})
}
