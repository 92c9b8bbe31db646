package worker_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

func mustEncode(t *testing.T, c topics.Command) []byte {
	v, err := c.Encode()
	require.NoError(t, err)
	return v
}

// Through Kafka: a tombstone, a record near the broker's size limit and
// garbage with headers reach the dead-letter topic (the large one cut to fit),
// and a command behind them on the same partition is answered.
func TestPoisonRecordsThroughKafka(t *testing.T) {
	e := e2e.New(t)
	e.StartWorker(e2e.WorkerOpts{Name: "poison"})
	reply := "locks.replies.poison-kafka"
	watch := e.Watch(e.Names.DeadLetter, reply)
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.DefaultProduceTopic(e.Names.Commands),
		kgo.ProducerBatchMaxBytes(1_040_000), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer cl.Close()
	recs := []*kgo.Record{
		{Key: []byte("p"), Value: nil},
		{Key: []byte("p"), Value: bytes.Repeat([]byte{'{'}, 1_000_000)},
		{Key: nil, Value: []byte{0xff, 0xfe}, Headers: []kgo.RecordHeader{{Key: "h", Value: []byte{0}}}},
		{Key: []byte("p"), Value: mustEncode(t, cmd("acquire", "behind-poison", "p", "o", reply))},
	}
	for _, r := range recs {
		r.Partition = 5
		require.NoError(t, cl.ProduceSync(context.Background(), r).FirstErr())
	}
	watch.WaitEvent(t, "the command behind the poison answered", e2e.ByRequest(reply, "behind-poison", topics.TypeAcquired))
	got := watch.WaitFor(t, 20*time.Second, "three dead-letter copies", func(rs []e2e.Received) bool {
		n := 0
		for _, r := range rs {
			if r.Record.Topic == e.Names.DeadLetter {
				n++
			}
		}
		return n == 3
	})
	var copies []e2e.Received
	for _, r := range got {
		if r.Record.Topic == e.Names.DeadLetter {
			copies = append(copies, r)
		}
	}
	require.Nil(t, copies[0].Record.Value, "the tombstone's copy is a tombstone")
	require.Equal(t, "5", copies[0].Header(topics.HeaderSourcePartition))
	require.Equal(t, worker.DefaultDeadLetterMaxBytes-2*len("p"), len(copies[1].Record.Value),
		"key (counted twice: it is the partition_key header too) and value within the bound")
	require.Equal(t, "value", copies[1].Header(topics.HeaderTruncated))
	require.Equal(t, "1000000", copies[1].Header(topics.HeaderOriginalValueSize))
	require.Equal(t, []byte{0xff, 0xfe}, copies[2].Record.Value)
	require.Nil(t, copies[2].Record.Key)
	require.Equal(t, "\x00", copies[2].Header("h"))
}
