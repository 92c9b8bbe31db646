package e2e

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
)

// RunMain starts one Env with one worker for a whole test binary, calls
// setup with it, runs the tests and tears everything down. It is for
// TestMain of packages whose examples need a running lockworker: examples
// get no *testing.T to start one. Tests sharing the Env must use their own
// lock names and reply topics, and call its helpers on env.For(t).
func RunMain(m *testing.M, setup func(*Env)) int {
	tb := &mainTB{}
	env := New(tb)
	env.StartWorker(WorkerOpts{Name: "shared"})
	if setup != nil {
		setup(env)
	}
	tb.testing.Store(true)
	code := m.Run()
	tb.cleanup()
	if code == 0 && tb.failed.Load() {
		code = 1 // the shared worker died during the tests (StartWorker's cleanup)
	}
	return code
}

// mainTB is the testing.TB of a shared Env. It implements the methods the
// harness calls; a failure while starting aborts the test binary, and later
// failures inside the harness's goroutines are reported by the tests' own
// WaitFor calls.
//
// Once the tests run, registering a cleanup with it or failing it panics:
// a helper was called on the shared Env instead of env.For(t). Its cleanup
// would wait for the end of the binary, and its failure exit the binary
// without naming the test; the panic names the test.
type mainTB struct {
	testing.TB
	cleanups []func()
	testing  atomic.Bool // set once m.Run starts
	failed   atomic.Bool // Errorf was called: the binary fails
}

func (t *mainTB) Helper()      {}
func (t *mainTB) Name() string { return "TestMain" }
func (t *mainTB) Cleanup(f func()) {
	t.notTesting("registered a cleanup")
	t.cleanups = append(t.cleanups, f)
}
func (t *mainTB) Logf(string, ...any) {}
func (t *mainTB) Failed() bool        { return false }
func (t *mainTB) Errorf(format string, args ...any) {
	t.failed.Store(true)
	fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", args...)
}
func (t *mainTB) Fatalf(format string, args ...any) { t.Errorf(format, args...); t.FailNow() }

func (t *mainTB) FailNow() {
	t.notTesting("failed")
	t.cleanup()
	os.Exit(1)
}

// notTesting panics once the tests run: see mainTB.
func (t *mainTB) notTesting(what string) {
	if t.testing.Load() {
		panic("e2e: a helper of the shared Env " + what + " during the tests: call it on env.For(t)")
	}
}

func (t *mainTB) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}
