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
	r := newRecreated(t)
	w := r.e.StartWorker(e2e.WorkerOpts{Name: "first"})
	r.send("old-1", "a")
	r.send("old-2", "b")
	r.watch.WaitEvent(t, "the old topic's second record applied", e2e.ByRequest(r.reply, "old-2", topics.TypeAcquired))
	w.Stop()
	r.recreate()
	r.e.StartWorker(e2e.WorkerOpts{Name: "second"})
	r.send("new-1", "c") // offset 0 of the new topic
	r.watch.WaitEvent(t, "the new topic's first record applied", e2e.ByRequest(r.reply, "new-1", topics.TypeAcquired))
}

// A replica running while the commands topic is deleted and created again
// takes the new topic on by itself (takeRecreatedTopic): kgo keeps
// fetching by the old topic ID and would apply nothing until a restart.
func TestCommandsTopicCreatedAgainWhileRunning(t *testing.T) {
	r := newRecreated(t)
	r.e.StartWorker(e2e.WorkerOpts{Name: "running"})
	r.send("old-1", "a")
	r.watch.WaitEvent(t, "the old topic's record applied", e2e.ByRequest(r.reply, "old-1", topics.TypeAcquired))
	r.recreate()
	r.send("new-1", "c") // offset 0 of the new topic
	r.watch.WaitEvent(t, "the new topic's first record applied by the running replica", e2e.ByRequest(r.reply, "new-1", topics.TypeAcquired))
}

// recreated is a test environment whose commands topic a test deletes and
// creates again (recreate), and a producer of acquires to its partition 5.
type recreated struct {
	t     *testing.T
	e     *e2e.Env
	reply string
	watch *e2e.Watcher
	cl    *kgo.Client
}

func newRecreated(t *testing.T) *recreated {
	e := e2e.New(t)
	r := &recreated{t: t, e: e, reply: "locks.replies.recreated"}
	r.watch = e.Watch(r.reply)
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.DefaultProduceTopic(e.Names.Commands),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	r.cl = cl
	return r
}

func (r *recreated) send(id, lock string) {
	r.t.Helper()
	rec := &kgo.Record{Key: []byte(lock), Partition: 5, Value: mustEncode(r.t, cmd("acquire", id, lock, "o", r.reply))}
	require.NoError(r.t, r.cl.ProduceSync(context.Background(), rec).FirstErr())
}

func (r *recreated) recreate() {
	r.t.Helper()
	adm := kadm.NewClient(r.e.Producer())
	_, err := adm.DeleteTopics(context.Background(), r.e.Names.Commands)
	require.NoError(r.t, err)
	_, err = adm.CreateTopic(context.Background(), 16, 1, nil, r.e.Names.Commands)
	require.NoError(r.t, err)
	r.cl.PurgeTopicsFromProducing(r.e.Names.Commands) // the producer learns the new topic
}
