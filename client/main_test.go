package client_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/omninode/lockworker/internal/e2e"
)

// env is one real lockworker (kfake broker, fresh PostgreSQL schema, worker
// with its relay) shared by the tests and examples of this package. Each test
// uses its own lock names and requester.
var env *e2e.Env

func TestMain(m *testing.M) {
	tb := &mainTB{}
	code := func() int {
		defer tb.cleanup()
		env = e2e.New(tb)
		env.StartWorker(e2e.WorkerOpts{Name: "client-test"})
		// The examples connect as real programs do: through the
		// environment variable lockworker itself reads.
		os.Setenv("KAFKA_BOOTSTRAP_SERVERS", env.Brokers[0])
		return m.Run()
	}()
	os.Exit(code)
}

// mainTB lets TestMain use the e2e harness, which wants a testing.TB. Only
// the methods the harness calls are implemented; a failure before the
// tests start aborts the run.
type mainTB struct {
	testing.TB
	cleanups []func()
}

func (t *mainTB) Helper()             {}
func (t *mainTB) Name() string        { return "TestMain" }
func (t *mainTB) Cleanup(f func())    { t.cleanups = append(t.cleanups, f) }
func (t *mainTB) Logf(string, ...any) {}
func (t *mainTB) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "setting up lockworker: "+format+"\n", args...)
}
func (t *mainTB) Fatalf(format string, args ...any) { t.Errorf(format, args...); t.FailNow() }
func (t *mainTB) FailNow() {
	t.cleanup()
	os.Exit(1)
}

func (t *mainTB) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}
