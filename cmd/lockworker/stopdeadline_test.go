package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/tcpproxy"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/topics"
)

// serving is m run by serve (as main does) on a fresh schema behind a
// proxy and a kfake broker of its own, with the stop's deadline given;
// signal sends it a signal, exited gives its exit code.
type serving struct {
	m      *Main
	logs   *testlog.Buffer
	pg     *tcpproxy.Proxy
	kafka  *kfake.Cluster
	sigs   chan os.Signal
	exited chan int
}

func serveForTest(t *testing.T, deadline time.Duration) *serving {
	dbURL, pg := testdb.Proxied(t, testdb.NewSchema(t).URL)
	kafka, external := externalKafka(t)
	s := &serving{m: NewMain(), logs: &testlog.Buffer{}, pg: pg, kafka: kafka, sigs: make(chan os.Signal, 2), exited: make(chan int, 1)}
	s.m.Logger = zerolog.New(s.logs).Level(zerolog.InfoLevel)
	s.m.Config.Postgres.URL = dbURL
	s.m.Config.InstanceID = "e2e"
	s.m.Config.HTTPAddr = "127.0.0.1:0"
	external(&s.m.Config)
	go func() { s.exited <- s.m.serve(s.sigs, deadline) }()
	select {
	case <-s.m.Ready:
	case code := <-s.exited:
		t.Fatalf("lockworker exited %d while starting:\n%s", code, s.logs)
	case <-time.After(runWait):
		t.Fatalf("lockworker did not start in %s", runWait)
	}
	awaitReady(t, s.m)
	return s
}

// stop sends the first signal, and returns the exit code and how long after
// the signal it came.
func (s *serving) stop(t *testing.T) (int, time.Duration) {
	t.Helper()
	signalled := time.Now()
	s.sigs <- syscall.SIGTERM
	select {
	case code := <-s.exited:
		return code, time.Since(signalled)
	case <-time.After(2 * runWait):
		t.Fatalf("serve did not return in %s of the signal", 2*runWait)
		return 0, 0
	}
}

// A stop that hangs ends at its deadline with exit code 1, and an error
// line that says at which step it was: PostgreSQL hung (a network that
// drops its packets) holds the drain when a batch of the commands sent was
// in flight at the signal, else the pool's close (which step depends on
// whether the poll loop took the records before the signal: either way the
// stop hangs on PostgreSQL); Kafka holding the LeaveGroup, Close's leave
// (10 s each at least, past the deadline here).
func TestStopOutlastingItsDeadline(t *testing.T) {
	const deadline = 2 * time.Second
	for _, tc := range []struct {
		name  string
		hang  func(*serving) (release func())
		steps []string
	}{
		{"PostgreSQL hung", func(s *serving) func() {
			// Hung before the partitions resumed from their stored
			// offsets (ready comes before), the worker would fetch
			// nothing.
			await := func(fetched <-chan struct{}, what string) {
				select {
				case <-fetched:
				case <-time.After(runWait):
					t.Fatalf("the worker did not fetch %s in %s", what, runWait)
				}
			}
			await(fetchedFrom(s.kafka, 0), "its partitions")
			s.pg.Hang()
			polled := fetchedFrom(s.kafka, 1)
			c := newClient(t, s.kafka.ListenAddrs()[0], "locks.replies.deadline")
			for i := range 10 {
				c.send(topics.Command{RequestID: fmt.Sprint("a", i), Operation: "acquire", LockName: fmt.Sprint("x", i), OwnerID: "o", LeaseDuration: 60})
			}
			// The stop hangs on a batch in flight: one signalled before
			// the worker fetched the commands found nothing to drain, and
			// a pool whose reads the stop cancels closes at once.
			await(polled, "the commands")
			return s.pg.Restore
		}, []string{draining, "closing the PostgreSQL pool"}},
		{"Kafka holding the LeaveGroup", func(s *serving) func() {
			_, release := kafkatest.HoldFirst(s.kafka, kmsg.LeaveGroup)
			return release
		}, []string{leavingGroup}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := serveForTest(t, deadline)
			release := tc.hang(s)
			defer release() // before the broker and the proxy close
			code, took := s.stop(t)
			assert.Equal(t, 1, code)
			assert.GreaterOrEqual(t, took, deadline)
			assert.Less(t, took, deadline+3*time.Second, "the hang lasts 10 s at least")
			line := logLine(t, s.logs.String(), stopOverdueLine)
			assert.Contains(t, line, `"level":"error"`)
			assert.Condition(t, func() bool {
				for _, step := range tc.steps {
					if strings.Contains(line, `"step":"`+step+`"`) {
						return true
					}
				}
				return false
			}, "the step is one of %q: %s", tc.steps, line)
			assert.Contains(t, line, "the stop did not end within 2s of the signal")
			assert.NotContains(t, s.logs.String(), drainedLine)

			// The process would exit here; Run and Close go on in the
			// test, and must end before its PostgreSQL and Kafka do.
			release()
			require.Eventually(t, func() bool { return strings.Contains(s.logs.String(), drainedLine) }, runWait, 20*time.Millisecond,
				"Run and Close did not end once PostgreSQL and Kafka answered")
		})
	}
}

// A stop that ends within its deadline is what it was without one: exit 0,
// the drained line last, nothing at error level.
func TestStopWithinItsDeadline(t *testing.T) {
	s := serveForTest(t, stopDeadline)
	code, _ := s.stop(t)
	require.Equal(t, 0, code)
	out := strings.TrimRight(s.logs.String(), "\n")
	assert.Contains(t, out[strings.LastIndexByte(out, '\n')+1:], drainedLine)
	assert.NotContains(t, out, `"level":"error"`)
}

// Stopped while starting, the stop is at the start's step.
func TestStopAtWhileStarting(t *testing.T) {
	m := NewMain()
	assert.Equal(t, "starting", m.stopAt())
	m.starting("checking the Kafka topics")
	assert.Equal(t, "starting: checking the Kafka topics", m.stopAt())
	m.stopping(leavingGroup)
	assert.Equal(t, leavingGroup, m.stopAt())
}

// fetchedFrom is closed once a fetch of the cluster asks a partition from
// offset from or later: 0, a partition is fetched; 1, the records before
// were fetched.
func fetchedFrom(c *kfake.Cluster, from int64) <-chan struct{} {
	past := make(chan struct{})
	var once sync.Once
	c.ControlKey(int16(kmsg.Fetch), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		for _, tp := range kr.(*kmsg.FetchRequest).Topics {
			for _, p := range tp.Partitions {
				if p.FetchOffset >= from {
					once.Do(func() { close(past) })
				}
			}
		}
		return nil, nil, false
	})
	return past
}
