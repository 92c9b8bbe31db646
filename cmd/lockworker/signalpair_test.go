package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
)

// TestSIGTERMPairs: serve, in process, given its signals on its channel: a
// SIGTERM's copy (timeout(1) and some CI cancels signal the process and
// its group: one stop's SIGTERM twice) lets the drain finish with 0; a SIGTERM
// pairedSignal or more after the first is an operator's second signal and
// forces exit 1 at once.
func TestSIGTERMPairs(t *testing.T) {
	hold := func(t *testing.T) (*serving, <-chan struct{}, func()) {
		s := serveForTest(t, stopDeadline)
		leaving, release := kafkatest.HoldFirst(s.kafka, kmsg.LeaveGroup)
		t.Cleanup(release)
		return s, leaving, release
	}
	await := func(t *testing.T, c <-chan struct{}) {
		select {
		case <-c:
		case <-time.After(runWait):
			t.Fatal("the drain never came to its leave")
		}
	}
	t.Run("copy", func(t *testing.T) {
		s, leaving, release := hold(t)
		s.sigs <- syscall.SIGTERM
		s.sigs <- syscall.SIGTERM
		await(t, leaving)
		release()
		select {
		case code := <-s.exited:
			assert.Equal(t, 0, code)
		case <-time.After(runWait):
			t.Fatal("serve did not return")
		}
		assert.NotContains(t, s.logs.String(), "second signal: exiting now")
	})
	t.Run("late SIGTERM forces exit", func(t *testing.T) {
		s, leaving, release := hold(t)
		defer release()
		first := time.Now()
		s.sigs <- syscall.SIGTERM
		await(t, leaving)
		time.Sleep(pairedSignal - time.Since(first) + 100*time.Millisecond) // the rule under test is time
		s.sigs <- syscall.SIGTERM
		select {
		case code := <-s.exited:
			assert.Equal(t, 1, code)
		case <-time.After(5 * time.Second):
			t.Fatal("a SIGTERM a second after the first did not force the exit")
		}
		require.True(t, strings.Contains(s.logs.String(), "second signal: exiting now"))
		release()
		require.Eventually(t, func() bool { return strings.Contains(s.logs.String(), drainedLine) }, runWait, 20*time.Millisecond)
	})
}
