package outbox

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// blockingRun answers each request with its double, after the test lets
// the run go; it records the requests of every run.
type blockingRun struct {
	mu      sync.Mutex
	runs    [][]int
	started chan struct{} // a run started
	release chan struct{} // let one run end
	err     error
}

func newBlockingRun() *blockingRun {
	return &blockingRun{started: make(chan struct{}, 16), release: make(chan struct{}, 16)}
}

func (b *blockingRun) run(_ context.Context, reqs []int) ([]int, error) {
	b.mu.Lock()
	b.runs = append(b.runs, append([]int(nil), reqs...))
	b.mu.Unlock()
	b.started <- struct{}{}
	<-b.release
	out := make([]int, len(reqs))
	for i, r := range reqs {
		out[i] = 2 * r
	}
	return out, b.err
}

func (b *blockingRun) runCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.runs)
}

// waitWaiting waits until n calls wait behind the running one.
func waitWaiting[Req, Res any](t *testing.T, m *merger[Req, Res], n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.waiting) == n
	}, 5*time.Second, time.Millisecond)
}

// Calls that arrive while a run is in flight run together next, and each
// gets its own answer.
func TestMergerRunsWaitingCallsTogether(t *testing.T) {
	b := newBlockingRun()
	m := &merger[int, int]{run: b.run, timeout: time.Minute}
	got := make([]int, 4)
	var wg sync.WaitGroup
	wg.Go(func() { got[0], _ = m.do(t.Context(), 1) })
	<-b.started
	for i := 1; i < 4; i++ {
		wg.Go(func() { got[i], _ = m.do(t.Context(), i+1) })
	}
	waitWaiting(t, m, 3)
	b.release <- struct{}{} // the first run ends; one of the waiters leads the next
	<-b.started
	b.release <- struct{}{}
	wg.Wait()
	require.Equal(t, []int{2, 4, 6, 8}, got)
	require.Equal(t, 2, b.runCount())
	require.Len(t, b.runs[1], 3)
	require.False(t, m.busy, "idle again")
}

// A run's error answers every call of it.
func TestMergerErrorAnswersAll(t *testing.T) {
	b := newBlockingRun()
	b.err = errors.New("database away")
	m := &merger[int, int]{run: b.run, timeout: time.Minute}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	wg.Go(func() { _, errs[0] = m.do(t.Context(), 1) })
	<-b.started
	wg.Go(func() { _, errs[1] = m.do(t.Context(), 2) })
	waitWaiting(t, m, 1)
	b.release <- struct{}{}
	<-b.started
	b.release <- struct{}{}
	wg.Wait()
	require.ErrorIs(t, errs[0], b.err)
	require.ErrorIs(t, errs[1], b.err)
}

// A waiting caller whose context ends leaves at once and is not run; the
// others still are.
func TestMergerWaiterGivesUp(t *testing.T) {
	b := newBlockingRun()
	m := &merger[int, int]{run: b.run, timeout: time.Minute}
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = m.do(t.Context(), 1) })
	<-b.started
	ctx, cancel := context.WithCancel(t.Context())
	gaveUp := make(chan error, 1)
	go func() { _, err := m.do(ctx, 2); gaveUp <- err }()
	var third int
	wg.Go(func() { third, _ = m.do(t.Context(), 3) })
	waitWaiting(t, m, 2)
	cancel()
	require.ErrorIs(t, <-gaveUp, context.Canceled)
	b.release <- struct{}{}
	<-b.started
	b.release <- struct{}{}
	wg.Wait()
	require.Equal(t, 6, third)
	require.Equal(t, []int{3}, b.runs[1], "the caller that gave up is not run")
}
