package worker

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/topics"
)

// The decompressor itself is tested in internal/fetchbound; here, the
// worker's skip of what it refuses.

// Through the worker and a broker: a zstd batch of one record with a
// million empty headers, within both byte bounds, is skipped unread as a
// batch past the bound is, with one marker and no copy, and the commands
// before and after it are answered.
func TestBatchOfEmptyHeadersIsSkippedAsTooLarge(t *testing.T) {
	c := kafkatest.Cluster(t)
	m := &skipMetrics{dead: map[string]int{}}
	_, st := runOneCommandsPartition(t, c, m)
	plain, _ := producers(t, c)
	zstdProducer, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic(topics.DefaultNames().Commands),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchCompression(kgo.ZstdCompression()),
		kgo.ProducerBatchMaxBytes(32<<20))
	require.NoError(t, err)
	t.Cleanup(zstdProducer.Close)
	reply := "locks.replies.empty-headers"
	before := produce(t, plain, acquire(t, "before", reply))
	bomb := produce(t, zstdProducer, &kgo.Record{Key: []byte("bomb"), Value: kafkatest.RandomBytes(16 << 10),
		Headers: make([]kgo.RecordHeader, 1<<20)})
	require.Equal(t, before[0]+1, bomb[0])
	after := produce(t, plain, acquire(t, "after", reply))

	requireSkipped(t, st, reply, after[0]+1, []string{"before", "after"}, bomb[0], bomb[0])
	dead, _ := m.counts()
	require.Equal(t, map[string]int{DeadLetterBatchTooLarge: 1}, dead)
}
