package e2e

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/omninode/lockworker/topics"
)

// cleanupsTB records the cleanups registered with it instead of running
// them: it stands for RunMain's shared harness.
type cleanupsTB struct {
	testing.TB
	n int
}

func (t *cleanupsTB) Cleanup(func()) { t.n++ }

// A helper called on For(t) belongs to t: the watcher it starts is closed
// when t ends, and nothing is registered with the Env's own T.
func TestForClosesWithTheTest(t *testing.T) {
	names := topics.DefaultNames()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, names.Acquired))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	shared := &cleanupsTB{TB: t}
	env := &Env{T: shared, Cluster: c, Brokers: c.ListenAddrs(), Names: names}

	var w *Watcher
	t.Run("sub", func(t *testing.T) {
		w = env.For(t).Watch(names.Acquired)
		env.For(t).Producer()
		select {
		case <-w.done:
			t.Fatal("the watcher stopped before its test ended")
		default:
		}
	})
	select {
	case <-w.done:
	default:
		t.Fatal("the watcher still reads after its test ended")
	}
	require.Zero(t, shared.n, "cleanups registered with the Env's own T")
	require.Same(t, shared, env.T, "For changed the Env it was called on")
}

// Once the tests run, the shared harness refuses what would outlive or
// fail the wrong test, naming the fix.
func TestMainTBRefusesDuringTests(t *testing.T) {
	tb := &mainTB{}
	tb.Cleanup(func() {}) // while starting: kept
	require.Len(t, tb.cleanups, 1)
	tb.testing.Store(true)
	require.PanicsWithValue(t, "e2e: a helper of the shared Env registered a cleanup during the tests: call it on env.For(t)", func() { tb.Cleanup(func() {}) })
	require.PanicsWithValue(t, "e2e: a helper of the shared Env failed during the tests: call it on env.For(t)", tb.FailNow)
	require.Len(t, tb.cleanups, 1)
}
