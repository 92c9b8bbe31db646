package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/omninode/lockworker/internal/httpapi"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
)

// kafkaRetryMsg is the log line of a retry of Kafka at start.
const kafkaRetryMsg = "transient Kafka error while starting; retrying"

// waitingForKafka runs a replica whose Kafka, at a free address, does not
// listen yet, and waits until it retries Kafka.
func waitingForKafka(t *testing.T, ctx context.Context) (m *Main, run *running, addr string, logs *testlog.Buffer) {
	addr = freeAddr(t)
	logs = &testlog.Buffer{}
	m = NewMain()
	m.Logger = zerolog.New(logs)
	m.Config.Postgres.URL = testdb.NewSchema(t).URL
	m.Config.HTTPAddr = "127.0.0.1:0"
	m.Config.Kafka.BootstrapServers = []string{addr}
	run = &running{done: make(chan struct{})}
	go func() { run.err = m.Run(ctx); close(run.done) }()
	awaitStartRetries(t, m, run, logs, "checking the Kafka topics", kafkaRetryMsg)
	return m, run, addr, logs
}

// A replica started while Kafka does not listen (a broker restarting, its
// Service not created yet) waits for it, as for PostgreSQL, rather than
// exit and crash-loop: /health says it checks the Kafka topics, each
// retry is logged at warn with the brokers, and once a broker listens it
// becomes ready.
func TestStartWaitsForKafka(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	m, run, addr, logs := waitingForKafka(t, ctx)
	defer func() {
		cancel()
		<-run.done
		m.Close()
	}()
	line := logLine(t, logs.String(), kafkaRetryMsg)
	assert.Contains(t, line, `"level":"warn"`)
	assert.Contains(t, line, `"step":"checking the Kafka topics"`)
	assert.Contains(t, line, `"brokers":["`+addr+`"]`)
	assert.Contains(t, line, `"retry_in":`)
	assert.Contains(t, line, "connection refused")

	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	n, err := strconv.Atoi(port)
	require.NoError(t, err)
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(n))
	require.NoError(t, err)
	defer kafka.Close()
	run.await(t, m.Ready)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var h httpapi.Health
		code, _ := get(c, m, "/health", &h)
		assert.Equal(c, http.StatusOK, code, h.Status)
	}, runWait, 50*time.Millisecond)
}

// A signal while the start retries Kafka stops the replica with exit code
// 0, logged at warn with the step and the last error.
func TestStopWhileWaitingForKafka(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	m, run, _, logs := waitingForKafka(t, ctx)
	t.Cleanup(m.Close)
	line := stopWhileStarting(t, m, run, cancel, logs, "checking the Kafka topics")
	assert.Contains(t, line, "connection refused")
}

// A broker that accepts connections and never answers holds the start's
// attempt until the Kafka client gives up: a warn line says so while it
// waits, rather than nothing for 40 s.
func TestSilentKafkaIsLogged(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	logs := &testlog.Buffer{}
	m := NewMain()
	m.Logger = zerolog.New(logs)
	m.KafkaSilentWarn = 100 * time.Millisecond
	m.Config.Postgres.URL = testdb.NewSchema(t).URL
	m.Config.HTTPAddr = "127.0.0.1:0"
	m.Config.Kafka.BootstrapServers = []string{ln.Addr().String()}
	ctx, cancel := context.WithCancel(t.Context())
	run := &running{done: make(chan struct{})}
	go func() { run.err = m.Run(ctx); close(run.done) }()
	t.Cleanup(m.Close)
	const msg = "no answer from Kafka yet while starting"
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Contains(c, logs.String(), msg)
	}, runWait, 20*time.Millisecond)
	line := logLine(t, logs.String(), msg)
	assert.Contains(t, line, `"level":"warn"`)
	assert.Contains(t, line, `"step":"checking the Kafka topics"`)
	assert.Contains(t, line, `"brokers":["`+ln.Addr().String()+`"]`)
	assert.NotContains(t, logs.String(), kafkaRetryMsg, "the attempt still waits")
	cancel() // the signal ends the attempt
	select {
	case <-run.done:
	case <-time.After(runWait):
		t.Fatalf("Run still in its Kafka attempt %s after its context ended", runWait)
	}
	require.Equal(t, 0, m.exitCode(run.err, true))
}

// Only what a wait may cure is retried: no broker answering, or an error
// code Kafka calls retriable; not authentication, authorization or TLS.
// (TestSecurityTLSSASL runs the wrong password and the untrusted
// certificate against a broker: they fail at once, as before.)
func TestKafkaUnreachable(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	nxdomain := &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "kafka.invalid", IsNotFound: true}}
	wrap := func(err error) error {
		return fmt.Errorf("creating topic %q: unable to dial: %w", "locks.commands", err)
	}
	for err, want := range map[error]bool{
		wrap(refused):  true,
		wrap(nxdomain): true,
		wrap(&net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}): true,
		wrap(kerr.NotController):                                                        true,
		wrap(kerr.BrokerNotAvailable):                                                   true,
		wrap(kerr.SaslAuthenticationFailed):                                             false,
		wrap(kerr.TopicAuthorizationFailed):                                             false,
		wrap(kerr.ClusterAuthorizationFailed):                                           false,
		wrap(kerr.InvalidReplicationFactor):                                             false,
		wrap(x509.UnknownAuthorityError{}):                                              false,
		wrap(&net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}): false,
		wrap(io.EOF):           false,
		wrap(context.Canceled): false,
		errors.New("invalid large response size"): false,
	} {
		assert.Equal(t, want, kafkaUnreachable(err), "%v", err)
	}
}
