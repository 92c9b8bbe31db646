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
// connection error names the variable: each retry's warn line, and the
// error Run gives up with.
func TestSaysWhichBrokerAndWhy(t *testing.T) {
	const fromVariable = "from KAFKA_BOOTSTRAP_SERVERS, which turns the embedded broker off"
	ctx, cancel := context.WithCancel(t.Context())
	m, run, nobody, logs := waitingForKafka(t, ctx)
	cancel()
	<-run.done
	m.Close()
	require.Error(t, run.err)
	t.Logf("error: %v", run.err)
	assert.ErrorContains(t, run.err, "talking to Kafka at ["+nobody+"] ("+fromVariable)
	assert.Contains(t, logs.String(), "using Kafka at "+nobody+": "+fromVariable)
	assert.Contains(t, logLine(t, logs.String(), kafkaRetryMsg), `"brokers_source":"`+fromVariable+`"`)

	logs = &testlog.Buffer{}
	m = NewMain()
	m.Logger = zerolog.New(logs)
	m.Config.Postgres.URL = testdb.NewSchema(t).URL
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
