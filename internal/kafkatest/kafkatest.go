// Package kafkatest holds what the tests of several packages ask a Kafka
// broker.
package kafkatest

import (
	"bytes"
	"context"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/topics"
)

// TopicConfigs is what the broker says topic's configs are, by name.
func TopicConfigs(t testing.TB, ctx context.Context, adm *kadm.Client, topic string) map[string]string {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	require.NoError(t, err)
	rc, err := rcs.On(topic, nil)
	require.NoError(t, err)
	require.NoError(t, rc.Err)
	out := map[string]string{}
	for _, c := range rc.Configs {
		out[c.Key] = c.MaybeValue()
	}
	return out
}

// Cluster starts a kfake broker with opts (one broker unless they say
// otherwise), closed when the test ends.
func Cluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// HoldFirst holds c's answer to the first request of key until release is
// called (kfake answers a connection's requests in order, so the later
// ones on that connection wait too); held is closed once it is held.
// release may be called more than once.
func HoldFirst(c *kfake.Cluster, key kmsg.Key) (held <-chan struct{}, release func()) {
	h, r := make(chan struct{}), make(chan struct{})
	// Kept, and acting once: a control runs for each request that comes
	// while it sleeps, not only the first. Not a sync.Once: a later
	// request's control would wait in Do for the sleeping one, and kfake,
	// waiting for that control, would never wake the sleeper.
	var first atomic.Bool
	var released sync.Once
	c.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if first.CompareAndSwap(false, true) {
			close(h)
			c.SleepControl(func() { <-r })
		}
		return nil, nil, false
	})
	return h, func() { released.Do(func() { close(r) }) }
}

// StateTopic starts a broker whose lock state topic has n partitions and
// holds recs (each on its Partition); produce adds records the same way.
func StateTopic(t testing.TB, n int32, recs ...*kgo.Record) (cluster *kfake.Cluster, produce func(...*kgo.Record)) {
	t.Helper()
	state := topics.DefaultNames().State
	cluster = Cluster(t, kfake.SeedTopics(n, state))
	kc, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.DefaultProduceTopic(state),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	t.Cleanup(kc.Close)
	produce = func(recs ...*kgo.Record) {
		t.Helper()
		require.NoError(t, kc.ProduceSync(context.Background(), recs...).FirstErr())
	}
	if len(recs) > 0 {
		produce(recs...)
	}
	return cluster, produce
}

// StateRecord is a record of the lock state topic: lock, released, at rev.
func StateRecord(t testing.TB, lock string, rev int64) *kgo.Record {
	t.Helper()
	b, err := topics.LockState{LockName: lock, Revision: rev, Status: topics.StatusReleased, Limit: 1}.Encode()
	require.NoError(t, err)
	return &kgo.Record{Key: []byte(lock), Value: b}
}

// ReplicationFactorsAsked observes c's CreateTopics requests (the cluster
// still creates the topics) and returns what they have asked for so far:
// each topic's replication factor.
func ReplicationFactorsAsked(c *kfake.Cluster) func() map[string]int16 {
	var mu sync.Mutex
	asked := map[string]int16{}
	c.ControlKey(int16(kmsg.CreateTopics), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		defer mu.Unlock()
		for _, rt := range r.(*kmsg.CreateTopicsRequest).Topics {
			asked[rt.Topic] = rt.ReplicationFactor
		}
		return nil, nil, false // observed, not handled
	})
	return func() map[string]int16 {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(asked)
	}
}

// RefuseTopicConfigs has c answer code to the creation of a topic asked
// with a config refuse names, as a managed Kafka's create-topic policy
// does ("Topic config <name> is not allowed"), and returns the configs
// each topic was asked with so far, by ask. A request refusing none is
// the cluster's; one refusing some of its topics answers the others
// REQUEST_TIMED_OUT, uncreated (a control answers whole requests).
func RefuseTopicConfigs(c *kfake.Cluster, code int16, refuse func(config string) bool) (asked func() map[string][]map[string]string) {
	var mu sync.Mutex
	got := map[string][]map[string]string{}
	c.ControlKey(int16(kmsg.CreateTopics), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.CreateTopicsRequest)
		resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
		mu.Lock()
		defer mu.Unlock()
		refused := false
		for _, rt := range req.Topics {
			configs := map[string]string{}
			st := kmsg.NewCreateTopicsResponseTopic()
			st.Topic, st.ErrorCode = rt.Topic, kerr.RequestTimedOut.Code
			for _, rc := range rt.Configs {
				configs[rc.Name] = *rc.Value
				if refuse(rc.Name) {
					refused = true
					st.ErrorCode, st.ErrorMessage = code, kmsg.StringPtr("Topic config "+rc.Name+" is not allowed")
				}
			}
			got[rt.Topic] = append(got[rt.Topic], configs)
			resp.Topics = append(resp.Topics, st)
		}
		if !refused {
			return nil, nil, false
		}
		return resp, nil, true
	})
	return func() map[string][]map[string]string {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(got)
	}
}

// KeyPartition is the partition among n that a producer with kgo's default
// partitioner (lockworker's relay; murmur2, as Kafka's) writes key to.
func KeyPartition(key string, n int) int32 {
	p := kgo.UniformBytesPartitioner(64<<10, true, true, nil).ForTopic("t").(kgo.TopicBackupPartitioner)
	return int32(p.PartitionByBackup(&kgo.Record{Key: []byte(key)}, n, nil))
}

// Bomb produces to partition part of topic on cluster one gzipped batch of
// one record, key key, whose value is n zero bytes (the batch takes about
// a thousandth of that), and returns its offset: a batch that decompresses
// past a reader's kgo.MaxDecompressBatchBytes when n exceeds it.
func Bomb(t testing.TB, cluster *kfake.Cluster, topic string, part int32, key string, n int) int64 {
	t.Helper()
	return produceBatch(t, cluster, topic, &kgo.Record{Partition: part, Key: []byte(key), Value: make([]byte, n)},
		kgo.ProducerBatchCompression(kgo.GzipCompression()), kgo.ProducerBatchMaxBytes(int32(n)+(1<<20)))
}

// Corrupt produces to partition part of topic on cluster one gzipped batch
// of one record, key key, that cannot be decompressed, and returns its
// offset: junk follows its gzip member (which Java's GZIPInputStream
// ignores, and klauspost's reader, kgo's, refuses), and its CRC, computed
// after, matches, so a broker that does not decompress what it is produced
// (kfake) stores it and readers fetch it whole. kgo's own decompressor
// fails on it on every fetch, and the partition stops there for good.
func Corrupt(t testing.TB, cluster *kfake.Cluster, topic string, part int32, key string) int64 {
	t.Helper()
	// Zeros, so that the batch compresses below its size and is sent
	// compressed.
	return produceBatch(t, cluster, topic, &kgo.Record{Partition: part, Key: []byte(key), Value: make([]byte, 4<<10)},
		kgo.WithCompressor(junkAfterGzip{}))
}

// junkAfterGzip gzips a batch as kgo does and appends junk.
type junkAfterGzip struct{}

func (junkAfterGzip) Compress(dst *bytes.Buffer, src []byte, flags ...kgo.CompressFlag) ([]byte, kgo.CompressionCodecType) {
	gz, err := kgo.DefaultCompressor(kgo.GzipCompression())
	if err != nil {
		panic(err)
	}
	out, codec := gz.Compress(dst, src, flags...)
	return append(bytes.Clone(out), "junk"...), codec
}

// produceBatch produces rec to topic on cluster, alone in its batch, with
// a producer of opts, and returns its offset.
func produceBatch(t testing.TB, cluster *kfake.Cluster, topic string, rec *kgo.Record, opts ...kgo.Opt) int64 {
	t.Helper()
	kc, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
	require.NoError(t, err)
	defer kc.Close()
	require.NoError(t, kc.ProduceSync(context.Background(), rec).FirstErr())
	return rec.Offset
}

// RandomBytes is n incompressible bytes, the same for every call.
func RandomBytes(n int) []byte {
	rng := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// ReservedGzipFlag is gzip member gz with a reserved FLG bit set, which
// Java's GZIPInputStream ignores and klauspost's reader refuses.
func ReservedGzipFlag(gz []byte) []byte {
	gz = bytes.Clone(gz)
	gz[3] |= 1 << 5
	return gz
}
