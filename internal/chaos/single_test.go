package chaos

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/internal/testport"
)

// single is one broker process, its data in dir so that a restart finds
// it, and one lockworker replica on it, for the tests that restart the
// broker; both stop with the test, and the replica's logs are shown if it
// failed.
type single struct {
	addr, dir string
	broker    *Broker
	replica   *Replica
	logs      *testlog.Buffer
}

func startSingle(t *testing.T, ctx context.Context, partitions int) *single {
	t.Helper()
	bins, err := Build(ctx, t.TempDir(), "lockworker", "devkafka")
	require.NoError(t, err)
	s := &single{addr: testport.Addr(t), dir: t.TempDir(), logs: &testlog.Buffer{}}
	s.broker, err = StartBrokerAt(ctx, bins[1], s.addr, s.dir, partitions, time.Second)
	require.NoError(t, err)
	t.Cleanup(s.broker.Close)
	s.replica = NewReplica("w0", bins[0], []string{"DATABASE_URL=" + testdb.NewSchema(t).URL, "KAFKA_BOOTSTRAP_SERVERS=" + s.addr,
		"HTTP_ADDR=127.0.0.1:0", "KAFKA_SESSION_TIMEOUT=3", "POSTGRES_MAX_CONNECTIONS=5"}, s.logs)
	require.NoError(t, s.replica.Start())
	t.Cleanup(func() {
		if err := s.replica.Kill(); errors.Is(err, ErrExitedUnasked) {
			t.Errorf("the replica crashed during the test: %v", err) // after the test's last assertion, say
		}
		if t.Failed() {
			t.Logf("replica logs:\n%s", testlog.LastLines(s.logs.String(), 100))
		}
	})
	require.NoError(t, s.replica.Ready(ctx))
	return s
}
