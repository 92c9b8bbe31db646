package main

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/httpapi"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
)

// The worker says which broker it uses and why: KAFKA_BOOTSTRAP_SERVERS,
// exported for an SDK program, turns the embedded broker off, and the first
// connection error names the variable.
func TestSaysWhichBrokerAndWhy(t *testing.T) {
	sch := testdb.NewSchema(t)
	logs := &testlog.Buffer{}
	m := NewMain()
	m.Logger = zerolog.New(logs)
	m.Config.Postgres.URL = sch.URL
	m.Config.HTTPAddr = "127.0.0.1:0"
	nobody := freeAddr(t)
	m.Config.Kafka.BootstrapServers = []string{nobody}
	// Kafka is tried until Run's context ends: end it once Run talks to
	// Kafka, after the migrations (which wait their turn behind other
	// tests' on a busy machine).
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func(m *Main, ctx context.Context, cancel context.CancelFunc) {
		select {
		case <-m.Serving:
		case <-ctx.Done():
			return
		}
		for ctx.Err() == nil && *m.step.Load() != "checking the Kafka topics" {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}(m, ctx, cancel)
	err := m.Run(ctx)
	m.Close()
	require.Error(t, err)
	t.Logf("error: %v", err)
	assert.ErrorContains(t, err, "talking to Kafka at ["+nobody+"] (from KAFKA_BOOTSTRAP_SERVERS, which turns the embedded broker off")
	assert.Contains(t, logs.String(), "using Kafka at "+nobody+": from KAFKA_BOOTSTRAP_SERVERS, which turns the embedded broker off")

	logs = &testlog.Buffer{}
	m = NewMain()
	m.Logger = zerolog.New(logs)
	m.Config.Postgres.URL = sch.URL
	m.Config.HTTPAddr = "127.0.0.1:0"
	m.Config.Embedded.Addr, m.Config.Embedded.Dir = freeAddr(t), t.TempDir()
	run, stop := runMain(t, m)
	run.await(t, m.Ready)
	stop()
	assert.Contains(t, logs.String(), "using Kafka at "+m.Config.Embedded.Addr+": the embedded broker, started because KAFKA_BOOTSTRAP_SERVERS is unset")
}

// The embedded broker, started when KAFKA_BOOTSTRAP_SERVERS is unset (a
// deployment that forgot or misspelt it too), is hard to miss: a warn line
// says nothing outside the process shares it, and /health says
// embedded_kafka, while the replica starts too (here it waits for
// PostgreSQL); on a Kafka cluster /health has no such field.
func TestEmbeddedBrokerIsHardToMiss(t *testing.T) {
	sch := testdb.NewSchema(t)
	proxy, dbURL, _ := cutPostgres(t)
	health := func(t *testing.T, m *Main) string {
		var body string
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			var code int
			code, body = get(c, m, "/health", nil)
			assert.Equal(c, http.StatusOK, code, "joined: %s", body)
		}, runWait, 50*time.Millisecond)
		return body
	}

	logs := &testlog.Buffer{}
	m := NewMain()
	m.Logger = zerolog.New(logs)
	m.Config.Postgres.URL = dbURL
	m.Config.HTTPAddr = "127.0.0.1:0"
	m.Config.Embedded.Addr, m.Config.Embedded.Dir = freeAddr(t), t.TempDir()
	run, stop := runMain(t, m)
	awaitStartRetries(t, m, run, logs, "connecting to PostgreSQL", startRetryMsg)
	var starting httpapi.Health
	code, body := get(t, m, "/health", &starting)
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	assert.True(t, starting.EmbeddedKafka, body)
	proxy.Restore()
	run.await(t, m.Ready)
	line := logLine(t, logs.String(), "nothing outside this process shares it")
	assert.Contains(t, line, `"level":"warn"`)
	assert.Contains(t, line, "only clients of "+m.Config.Embedded.Addr+" reach")
	assert.Contains(t, line, "set KAFKA_BOOTSTRAP_SERVERS")
	var h httpapi.Health
	require.NoError(t, json.Unmarshal([]byte(health(t, m)), &h))
	assert.True(t, h.EmbeddedKafka)
	stop()

	_, external := externalKafka(t)
	m, stop = startWith(t, sch.URL, external)
	defer stop()
	assert.NotContains(t, health(t, m), "embedded_kafka")
}
