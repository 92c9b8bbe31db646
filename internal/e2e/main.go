package e2e

import (
	"fmt"
	"os"
	"testing"
)

// RunMain starts one Env with one worker for a whole test binary, calls
// setup with it, runs the tests and tears everything down. It is for
// TestMain of packages whose examples need a running lockworker: examples
// get no *testing.T to start one. Tests sharing the Env must use their own
// lock names and reply topics.
func RunMain(m *testing.M, setup func(*Env)) int {
	tb := &mainTB{}
	defer tb.cleanup()
	env := New(tb)
	env.StartWorker(WorkerOpts{Name: "shared"})
	if setup != nil {
		setup(env)
	}
	return m.Run()
}

// mainTB is the testing.TB of a shared Env. It implements the methods the
// harness calls; a failure while starting aborts the test binary, and later
// failures inside the harness's goroutines are reported by the tests' own
// WaitFor calls.
type mainTB struct {
	testing.TB
	cleanups []func()
}

func (t *mainTB) Helper()             {}
func (t *mainTB) Name() string        { return "TestMain" }
func (t *mainTB) Cleanup(f func())    { t.cleanups = append(t.cleanups, f) }
func (t *mainTB) Logf(string, ...any) {}
func (t *mainTB) Failed() bool        { return false }
func (t *mainTB) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", args...)
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
