package outbox

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// Run's hand-over waits for a call left behind while it waits, not only
// for those left before: a pass's publishes of one topic each are left
// behind as one call (startAll's), which returns once each publish has,
// as ctx ends, each leaving its own call to the publisher, still running,
// behind first. Waiting only for the calls there when it began, Run could
// return with a publish in flight, which the partition's next owner would
// then race (TestRunWaitsForAPublishLeftBehind, now and then).
func TestLeftBehindWaitsForCallsLeftWhileItWaits(t *testing.T) {
	for _, returns := range []bool{true, false} {
		synctest.Test(t, func(t *testing.T) {
			var l leftBehind
			pass, publish := make(chan struct{}), make(chan struct{})
			l.add(pass)
			waited := make(chan int, 1)
			go func() { waited <- l.wait(time.Minute) }()
			synctest.Wait() // waiting for the pass's call
			l.add(publish)
			close(pass)
			synctest.Wait()
			select {
			case n := <-waited:
				t.Fatalf("the hand-over ended with a publish still running (%d counted running)", n)
			default:
			}
			if returns {
				close(publish)
				require.Zero(t, <-waited)
			} else {
				require.Equal(t, 1, <-waited, "the publish still running after HandOverWait")
			}
		})
	}
}
