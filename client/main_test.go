package client_test

import (
	"os"
	"testing"

	"github.com/omninode/lockworker/internal/e2e"
)

// env is one real lockworker (kfake broker, fresh PostgreSQL schema, worker
// with its relay) shared by the tests and examples of this package. Each test
// uses its own lock names and requester.
var env *e2e.Env

func TestMain(m *testing.M) {
	os.Exit(e2e.RunMain(m, func(e *e2e.Env) {
		env = e
		// The examples connect as real programs do: through the
		// environment variable lockworker itself reads.
		os.Setenv("KAFKA_BOOTSTRAP_SERVERS", e.Brokers[0])
	}))
}
