package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/httpapi"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// TestWithdrawCutOff, with each group protocol: of two replicas, one cut off
// from PostgreSQL alone (its proxy forwards nothing and closes nothing, as a
// network partition does) gives its partitions to the other once
// POSTGRES_UNREACHABLE_TIMEOUT has passed, so every command is answered,
// those on its partitions included, while the cut lasts; once PostgreSQL
// answers it again it takes partitions again, and serves them.
func TestWithdrawCutOff(t *testing.T) {
	for _, protocol := range []string{config.GroupProtocolClassic, config.GroupProtocolConsumer} {
		t.Run(protocol, func(t *testing.T) { withdrawCutOff(t, protocol) })
	}
}

func withdrawCutOff(t *testing.T, protocol string) {
	brokers := groupCluster(t)
	direct := testdb.NewSchema(t).URL
	proxied, proxy := testdb.Proxied(t, direct)
	const unreachable = 3 * time.Second // the least allowed

	b, _ := startWith(t, direct, replicaOn("b", protocol, brokers))
	c, _ := startWith(t, proxied, func(cfg *config.Config) {
		replicaOn("c", protocol, brokers)(cfg)
		cfg.Postgres.UnreachableTimeout = unreachable
	})
	require.EventuallyWithT(t, func(ct *assert.CollectT) { shared(ct, b, c) }, 30*time.Second, 50*time.Millisecond,
		"the two replicas share the 16 partitions")
	r := newRounds(t, brokers[0], "withdraw-"+protocol)
	r.round(topics.OpAcquire, topics.TypeAcquired, 1)

	proxy.Hang()
	cut := time.Now()
	require.EventuallyWithT(t, func(ct *assert.CollectT) { assert.Len(ct, owned(ct, b)[0], 16) }, 30*time.Second, 50*time.Millisecond,
		"b takes the partitions of c, which PostgreSQL does not answer")
	t.Logf("b owned every partition %s after c was cut off (POSTGRES_UNREACHABLE_TIMEOUT %s)", time.Since(cut).Round(time.Millisecond), unreachable)
	var h httpapi.Health
	code, body := get(t, c, "/health", &h)
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Equal(t, "withdrawn", h.Status, body)
	r.round(topics.OpRelease, topics.TypeReleased, 1)
	r.round(topics.OpAcquire, topics.TypeAcquired, 2)

	proxy.Restore()
	require.EventuallyWithT(t, func(ct *assert.CollectT) { shared(ct, b, c) }, 30*time.Second, 50*time.Millisecond,
		"c takes partitions again once PostgreSQL answers it")
	r.round(topics.OpRelease, topics.TypeReleased, 2)
}

// A replica cut off from PostgreSQL past POSTGRES_UNREACHABLE_TIMEOUT
// withdraws; meanwhile PostgreSQL loses transactions (an asynchronous
// standby promoted: its fencing token sequence went back below carol's
// token, published). Once PostgreSQL answers, the replica checks the
// tokens against the lock.acquired topic before it takes partitions
// again, so dave's grant is above carol's token. Only the sequence goes
// back here, not the offsets, so that no partition's first batch finds
// its stored offset below the group's committed one and checks on its own:
// what is tested is the rejoin's check, which runs before any partition,
// and its expiry scheduler, grants.
func TestWithdrawnAcrossLostTransactions(t *testing.T) {
	brokers := groupCluster(t)
	sch := testdb.NewSchema(t)
	proxied, proxy := testdb.Proxied(t, sch.URL)
	c, _ := startWith(t, proxied, func(cfg *config.Config) {
		replicaOn("c", config.GroupProtocolClassic, brokers)(cfg)
		cfg.Postgres.UnreachableTimeout = 3 * time.Second // the least allowed
	})
	require.EventuallyWithT(t, func(ct *assert.CollectT) { assert.Len(ct, owned(ct, c)[0], 16) }, 30*time.Second, 50*time.Millisecond)

	cl := newClient(t, brokers[0], "locks.replies.lost")
	cl.send(topics.Command{RequestID: "c1", Operation: topics.OpAcquire, LockName: "x", OwnerID: "carol", LeaseDuration: 300})
	carol := cl.await("c1", topics.TypeAcquired).LockInfo.FencingToken
	newClient(t, brokers[0], topics.DefaultNames().Acquired).await("c1", topics.TypeAcquired) // published

	proxy.Hang()
	require.EventuallyWithT(t, func(ct *assert.CollectT) { assert.Empty(ct, owned(ct, c)[0]) }, 30*time.Second, 50*time.Millisecond, "withdrawn")
	direct := sch.Open(t, store.Config{})
	_, err := direct.Pool.Exec(context.Background(), `SELECT setval('fencing_tokens', 1, false)`)
	require.NoError(t, err)
	proxy.Restore()
	require.EventuallyWithT(t, func(ct *assert.CollectT) { assert.Len(ct, owned(ct, c)[0], 16) }, 30*time.Second, 50*time.Millisecond, "rejoined")

	cl.send(topics.Command{RequestID: "d1", Operation: topics.OpAcquire, LockName: "y", OwnerID: "dave", LeaseDuration: 300})
	dave := cl.await("d1", topics.TypeAcquired).LockInfo.FencingToken
	require.Greater(t, dave, carol, "dave's token is not carol's, published before the loss")
}
