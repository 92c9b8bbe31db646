package kafkapubsub

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
)

// waitingOnAnother counts the goroutines in ensure that wait for another
// caller's creation.
func waitingOnAnother() int {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	waiting := 0
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if strings.Contains(g, "(*topicCreator).ensure(") && !strings.Contains(g, "(*topicCreator).run(") {
			waiting++
		}
	}
	return waiting
}

// A caller that shares another's creation of a topic, which fails only
// because the other's context ended, makes its own rather than taking the
// other's context error.
func TestEnsureOutlivesAnotherCallersContext(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer c.Close()
	held, release := kafkatest.HoldFirst(c, kmsg.CreateTopics)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	tc := newTopicCreator(cl, 1, 1)

	first, cancel := context.WithCancel(context.Background())
	firstDone := make(chan []error, 1)
	go func() { firstDone <- tc.ensure(first, "t") }()
	<-held
	second := make(chan []error, 1)
	go func() { second <- tc.ensure(context.Background(), "t") }()
	require.Eventually(t, func() bool { return waitingOnAnother() == 1 }, 10*time.Second, time.Millisecond,
		"the second caller waits on the first's creation")
	cancel()
	require.ErrorIs(t, (<-firstDone)[0], context.Canceled)
	release() // the broker answers requests on a connection in order
	select {
	case errs := <-second:
		require.Equal(t, []error{nil}, errs, "created by a request of its own")
	case <-time.After(30 * time.Second):
		t.Fatal("the second caller did not create the topic")
	}
}
