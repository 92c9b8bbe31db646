package worker_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/topics"
)

// A commands topic deleted and created again (an embedded broker's data
// directory removed, an operator recreating it) numbers its records from 0
// again: the offsets stored for the old topic are forgotten, so its first
// records are applied, not skipped as applied.
func TestCommandsTopicCreatedAgain(t *testing.T) {
	e := e2e.New(t)
	reply := "locks.replies.recreated"
	watch := e.Watch(reply)
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.DefaultProduceTopic(e.Names.Commands),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer cl.Close()
	send := func(id, lock string) {
		t.Helper()
		r := &kgo.Record{Key: []byte(lock), Partition: 5, Value: mustEncode(t, cmd("acquire", id, lock, "o", reply))}
		require.NoError(t, cl.ProduceSync(context.Background(), r).FirstErr())
	}

	w := e.StartWorker(e2e.WorkerOpts{Name: "first"})
	send("old-1", "a")
	send("old-2", "b")
	watch.WaitEvent(t, "the old topic's second record applied", e2e.ByRequest(reply, "old-2", topics.TypeAcquired))
	w.Stop()

	adm := kadm.NewClient(e.Producer())
	_, err = adm.DeleteTopics(context.Background(), e.Names.Commands)
	require.NoError(t, err)
	_, err = adm.CreateTopic(context.Background(), 16, 1, nil, e.Names.Commands)
	require.NoError(t, err)
	cl.PurgeTopicsFromProducing(e.Names.Commands) // the producer learns the new topic
	e.StartWorker(e2e.WorkerOpts{Name: "second"})
	send("new-1", "c") // offset 0 of the new topic
	watch.WaitEvent(t, "the new topic's first record applied", e2e.ByRequest(reply, "new-1", topics.TypeAcquired))
}
