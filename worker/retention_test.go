package worker_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/internal/metrics"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

// runWorker starts a worker of group on e with m and a logger writing to
// log, and returns it and the channel Run's error arrives on; unlike
// e2e.StartWorker it takes Metrics and does not wait for a partition (Run
// may refuse to start).
func runWorker(t *testing.T, e *e2e.Env, group string, m worker.Metrics, log *testlog.Buffer) (*worker.Worker, <-chan error) {
	t.Helper()
	kopts := []kgo.Opt{kgo.SeedBrokers(e.Brokers...)}
	pub, pubClient, err := outbox.NewKafkaPublisher(kopts, 5*time.Second, e.Names.ReplyPrefix, true, -1)
	require.NoError(t, err)
	t.Cleanup(pubClient.Close)
	relay, err := outbox.New(outbox.Config{Publisher: pub, Pool: e.Store.Pool})
	require.NoError(t, err)
	w, err := worker.New(worker.Config{KafkaOpts: kopts, Group: group, Names: e.Names, Store: e.Store, Relay: relay,
		Instance: group, Metrics: m, Logger: zerolog.New(log)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done, stopped := make(chan error, 1), make(chan struct{})
	go func() { defer close(stopped); done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-stopped
		w.Close()
	})
	return w, done
}

// counted is the value of the counter family name with label value label
// in m (0: absent).
func counted(t *testing.T, m *metrics.Metrics, name, label string) float64 {
	t.Helper()
	fams, err := m.Registry.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetValue() == label {
					return s.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// Commands the commands topic's retention deleted before any replica
// applied them (here DeleteRecords, after a worker stopped with two applied
// and three more sent) cannot be applied: a worker resuming the partition
// below its log start logs them at error level, naming the partition, the
// stored offset, the log start and how many, counts them
// (lockworker_commands_lost_total{reason="retention"}), moves the stored
// offset to the log start and applies the commands from there.
func TestResumeBelowTheLogStartReportsTheCommandsRetentionDeleted(t *testing.T) {
	e := e2e.New(t)
	ctx := context.Background()
	reply := "locks.replies.retained"
	watch := e.Watch(reply)
	const partition = 5
	send := sendTo(t, e, partition)
	w := e.StartWorker(e2e.WorkerOpts{Name: "before"})
	send(cmd("acquire", "kept-a", "a", "o1", reply))
	send(cmd("acquire", "kept-b", "b", "o1", reply))
	watch.WaitEvent(t, "the second applied", e2e.ByRequest(reply, "kept-b", topics.TypeAcquired))
	w.Stop()
	require.Equal(t, int64(2), storedNext(t, w, partition))

	// Offsets 2 and 3 are deleted unapplied; 4 remains.
	send(cmd("acquire", "deleted-c", "c", "o1", reply))
	send(cmd("acquire", "deleted-d", "d", "o1", reply))
	send(cmd("acquire", "remaining-e", "e", "o1", reply))
	var to kadm.Offsets
	to.Add(kadm.Offset{Topic: e.Names.Commands, Partition: partition, At: 4})
	deleted, err := kadm.NewClient(e.Producer()).DeleteRecords(ctx, to)
	require.NoError(t, err)
	require.NoError(t, deleted.Error())
	starts, err := kadm.NewClient(e.Producer()).ListStartOffsets(ctx, e.Names.Commands)
	require.NoError(t, err)
	start, _ := starts.Lookup(e.Names.Commands, partition)
	require.Equal(t, int64(4), start.Offset, "kfake's log starts where DeleteRecords put it")

	m := metrics.New(metrics.Config{})
	logs := &testlog.Buffer{}
	runWorker(t, e, e.Group, m, logs)
	watch.WaitEvent(t, "the command after the log start applied", e2e.ByRequest(reply, "remaining-e", topics.TypeAcquired))
	send(cmd("acquire", "later-f", "f", "o1", reply))
	watch.WaitEvent(t, "the partition goes on", e2e.ByRequest(reply, "later-f", topics.TypeAcquired))
	for _, r := range watch.All() {
		require.NotContains(t, []string{"deleted-c", "deleted-d"}, r.Event.RequestID, "a deleted command answered")
	}

	var lost []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var l map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &l))
		if msg, _ := l["message"].(string); strings.Contains(msg, "deleted by the topic's retention before any replica applied them") {
			lost = append(lost, l)
		}
	}
	require.Len(t, lost, 1, "logged once:\n%s", logs.String())
	require.Equal(t, "error", lost[0]["level"])
	require.Equal(t, e.Names.Commands, lost[0]["topic"])
	require.EqualValues(t, partition, lost[0]["partition"])
	require.EqualValues(t, 2, lost[0]["stored"])
	require.EqualValues(t, 4, lost[0]["log_start"])
	require.EqualValues(t, 2, lost[0]["lost"])
	require.Equal(t, float64(2), counted(t, m, "lockworker_commands_lost_total", "retention"))

	offs, err := e.Store.Offsets(ctx, e.Group, e.Names.Commands)
	require.NoError(t, err)
	require.Equal(t, int64(6), offs[partition].Next)
}
