package realkafka

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/chaos"
	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/topics"
)

// envBrokers names an existing Kafka cluster to run on instead of
// containers.
const envBrokers = "REALKAFKA_BROKERS"

// partitions of the commands topic (COMMANDS_PARTITIONS).
const partitions = 16

// TestRealKafka is the suite (package doc): one Kafka and one PostgreSQL for
// all subtests, which run in order on them.
func TestRealKafka(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts Kafka and PostgreSQL containers and lockworker processes for a few minutes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	s := setUp(ctx, t)
	w1 := s.replica("lockworker-1")
	s.start(ctx, t, w1)

	t.Run("contract", func(t *testing.T) {
		// EventRouting needs only the topics: the lockworker process has
		// the database.
		e2e.EventRouting(t, &e2e.Env{T: t, Brokers: s.brokers, Names: s.names, Group: s.group}, w1.Name)
	})
	t.Run("state topic", func(t *testing.T) { testStateTopic(ctx, t, s) })
	t.Run("sdk", func(t *testing.T) { testSDK(ctx, t, s) })
	t.Run("lockctl", func(t *testing.T) { testLockctl(ctx, t, s) })
	t.Run("failover", func(t *testing.T) { testFailover(ctx, t, s, w1) })
}

// suite is the broker and database of a run, the names lockworker uses on
// them, and the binaries.
type suite struct {
	brokers    []string
	dbURL      string
	names      topics.Names
	group      string
	lockworker string
	lockctl    string
	logs       *os.File // every lockworker process's log
}

// setUp finds or starts Kafka and PostgreSQL, or skips the test saying why
// it cannot, and builds lockworker and lockctl.
func setUp(ctx context.Context, t *testing.T) *suite {
	s := &suite{names: topics.DefaultNames(), group: "lockworker"}
	if b := os.Getenv(envBrokers); b != "" {
		s.brokers = strings.Split(b, ",")
		s.dbURL = testdb.NewSchema(t).URL
		s.ownNames(fmt.Sprintf("rk%08x", rand.Uint32()))
		t.Logf("%s: Kafka at %v, topics %s..., group %s", envBrokers, s.brokers, s.names.Commands, s.group)
	} else {
		if err := dockerAnswers(ctx); err != nil {
			t.Skipf("no Docker daemon answers (%v): this suite starts Apache Kafka and PostgreSQL in containers, "+
				"so it runs only where Docker does: go test -count=1 -v -timeout 20m ./internal/realkafka/ "+
				"(or set %s to an existing cluster's brokers)", err, envBrokers)
		}
		svcs, err := composeServices(ctx)
		require.NoError(t, err)
		s.brokers = startKafka(ctx, t, svcs["kafka"])
		s.dbURL = startPostgres(ctx, t, svcs["postgres"])
	}
	bins, err := chaos.Build(ctx, t.TempDir(), "lockworker", "lockctl")
	require.NoError(t, err)
	s.lockworker, s.lockctl = bins[0], bins[1]
	s.logs, err = os.Create(filepath.Join(t.TempDir(), "lockworker.log"))
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(s.logs.Name())
			t.Logf("lockworker logs (end):\n%s", testlog.LastLines(string(b), 200))
		}
		s.logs.Close()
	})
	return s
}

// ownNames gives the topics, the consumer group and the reply-topic prefix
// a suffix, so that runs on one cluster do not read each other's records.
func (s *suite) ownNames(suffix string) {
	n := &s.names
	for _, name := range []*string{&n.Commands, &n.Acquired, &n.Released, &n.Expired, &n.Revoked, &n.State, &n.DeadLetter} {
		*name += "." + suffix
	}
	n.ReplyPrefix += suffix + "."
	s.group += "-" + suffix
}

// env is the environment of lockworker and lockctl: the settings of the
// run's broker, database and names.
func (s *suite) env() []string {
	n := s.names
	return []string{
		"KAFKA_BOOTSTRAP_SERVERS=" + strings.Join(s.brokers, ","), "DATABASE_URL=" + s.dbURL,
		"KAFKA_CONSUMER_GROUP=" + s.group, fmt.Sprintf("COMMANDS_PARTITIONS=%d", partitions),
		"KAFKA_TOPIC_COMMANDS=" + n.Commands, "KAFKA_TOPIC_LOCK_ACQUIRED=" + n.Acquired,
		"KAFKA_TOPIC_LOCK_RELEASED=" + n.Released, "KAFKA_TOPIC_LOCK_EXPIRED=" + n.Expired, "KAFKA_TOPIC_LOCK_REVOKED=" + n.Revoked,
		"KAFKA_TOPIC_LOCK_STATE=" + n.State, "KAFKA_TOPIC_DEAD_LETTER=" + n.DeadLetter, "REPLY_TOPIC_PREFIX=" + n.ReplyPrefix,
		"HTTP_ADDR=127.0.0.1:0", "LOG_LEVEL=info", "POSTGRES_MAX_CONNECTIONS=5",
	}
}

// replica is a lockworker process slot named name (its INSTANCE_ID).
func (s *suite) replica(name string) *chaos.Replica {
	return chaos.NewReplica(name, s.lockworker, s.env(), s.logs)
}

// start runs r until the test ends and waits until it consumes.
func (s *suite) start(ctx context.Context, t *testing.T, r *chaos.Replica) {
	t.Helper()
	require.NoError(t, r.Start())
	t.Cleanup(func() {
		if err := r.Kill(); errors.Is(err, chaos.ErrExitedUnasked) {
			t.Errorf("lockworker %s crashed during the test: %v", r.Name, err)
		}
	})
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	require.NoError(t, r.Ready(ctx), "lockworker %s did not start consuming (its log follows)", r.Name)
}
