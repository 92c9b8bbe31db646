package main

import (
	"context"
	"math/rand/v2"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/httpapi"
	"github.com/omninode/lockworker/internal/testdb"
)

// TestParkedRowDegradesHealth: the faults issue's oversized dead-letter row
// (a 1,000,000-byte value, over the producer's 1 MB batch limit once headers
// are added) is parked at once by the running service, the row behind it on
// the same partition and topic is published, /health says degraded but
// ready, and the metric counts the parking.
func TestParkedRowDegradesHealth(t *testing.T) {
	sch := testdb.NewSchema(t)
	m := startMain(t, sch.URL)
	conn, err := pgx.Connect(context.Background(), sch.URL)
	require.NoError(t, err)
	defer conn.Close(context.Background())

	huge := make([]byte, 1_000_000)
	_, _ = rand.NewChaCha8([32]byte{}).Read(huge) // kgo compresses: zeros would fit
	const dlq = "locks.commands.dlq"
	_, err = conn.Exec(context.Background(), `
		INSERT INTO outbox (source_partition, topic, key, value) VALUES (0, $1, 'k', $2), (0, $1, 'k', 'after-huge')`, dlq, huge)
	require.NoError(t, err)

	var h httpapi.Health
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		code, body := get(c, m, "/health", &h)
		assert.Equal(c, http.StatusOK, code, body)
		assert.Equal(c, "degraded", h.Status, body)
	}, 30*time.Second, 50*time.Millisecond)
	require.True(t, h.Ready)
	require.EqualValues(t, 1, *h.OutboxParked)
	require.Equal(t, 1.0, values(scrape(t, m))["lockworker_outbox_rows_parked_total{reason=MESSAGE_TOO_LARGE}"])

	cl, err := kgo.NewClient(kgo.SeedBrokers(m.Brokers...), kgo.ConsumeTopics(dlq), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []string
	for !slices.Contains(got, "after-huge") && ctx.Err() == nil {
		for _, r := range cl.PollFetches(ctx).Records() {
			got = append(got, string(r.Value))
		}
	}
	require.Contains(t, got, "after-huge", "the row behind the parked one is published")

	var reason string
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT park_reason FROM outbox WHERE parked_until = 'infinity'`).Scan(&reason))
	require.Equal(t, "MESSAGE_TOO_LARGE", reason)
}
