package config

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/fetchbound"
	"github.com/omninode/lockworker/internal/kafkaretry"
	"github.com/omninode/lockworker/topics"
)

// Every worker client (the relay's producer, the group consumer, the admin
// clients, all built from KafkaOpts) waits at most a second between
// retries; their metadata age is kgo's (the relay's producer adds
// kafkaretry.MetadataOpt in cmd/lockworker: a consumer refreshing more
// often costs CPU in steady state).
func TestKafkaOptsRetryWithinASecond(t *testing.T) {
	opts, err := Default().KafkaOpts()
	require.NoError(t, err)
	cl, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	defer cl.Close()
	assert.Equal(t, 5*time.Second, cl.OptValue(kgo.MetadataMinAge), "kgo's default")
	backoff, ok := cl.OptValue(kgo.RetryBackoffFn).(func(int) time.Duration)
	require.True(t, ok)
	for fails := 1; fails <= 10; fails++ {
		assert.LessOrEqual(t, backoff(fails), kafkaretry.MaxWait, "after %d failures", fails)
	}
}

// CompressionOpt gives the relay's producer KAFKA_COMPRESSION's codec: the
// batches it writes are compressed with it, as a broker stores them.
func TestCompressionOpt(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "events"))
	require.NoError(t, err)
	defer cluster.Close()
	// JSON of a few hundred bytes, as an event: every codec shrinks it (kgo
	// writes a batch that a codec would not shrink uncompressed).
	value := []byte(`{"v":1,"type":"lock.acquired","lock_info":{"lock_name":"orders/42","owner_id":"worker-1","owner_metadata":{"host":"worker-1","pid":4242}},"request_id":"0191f0c2-7d6e-7b3a-9c1e-2f4d5a6b7c8d","event_id":"0191f0c2-7d6e-7b3a-9c1e-2f4d5a6b7c8e"}`)
	offered := []string{"none", "gzip", "snappy", "lz4"}
	for _, name := range offered {
		c := Default()
		c.Kafka.Compression = name
		require.NoError(t, c.Validate())
		cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.DefaultProduceTopic("events"), c.CompressionOpt())
		require.NoError(t, err)
		err = cl.ProduceSync(context.Background(), &kgo.Record{Value: value}).FirstErr()
		cl.Close()
		require.NoError(t, err, name)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics("events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The record batch attribute's codec numbers.
	codecs := []string{"none", "gzip", "snappy", "lz4", "zstd"}
	var got []string
	for len(got) < len(offered) {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "records read: %v", got)
		fs.EachRecord(func(r *kgo.Record) { got = append(got, codecs[r.Attrs.CompressionType()]) })
	}
	assert.Equal(t, offered, got, "each record's batch, in the order KAFKA_COMPRESSION's values produced them")
}

// Why zstd is refused: the lock status of a shared lock whose holders, granted
// together, share their owner_metadata compresses with it past
// fetchbound.Ratio, where the SDK's readers skip a batch; with the codecs
// offered it stays below (snappy's and lz4's formats cannot pass it).
func TestCompressionWithinTheReadersRatio(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	metadata := []byte(`{"app":"billing","note":"` + strings.Repeat("x", 4000) + `"}`)
	var holders []topics.Holder
	for size := 0; ; {
		h := topics.Holder{OwnerID: "worker-" + strconv.Itoa(len(holders)), Mode: "shared", Status: "acquired", FencingToken: int64(1000 + len(holders)),
			AcquiredAt: topics.Time{Time: at}, ExpiresAt: topics.Time{Time: at.Add(30 * time.Second)}, LeaseDuration: 30, OwnerMetadata: metadata}
		if size += topics.HolderBytes(h); size > topics.MaxHoldersBytes {
			break
		}
		holders = append(holders, h)
	}
	status := topics.NewEvent(topics.TypeStatus, "query", "r1", at)
	status.LockInfo = &topics.LockInfo{LockName: "pool", Status: "acquired", Mode: "shared", Limit: 1000, HolderCount: len(holders), Holders: holders}
	value, err := status.Encode()
	require.NoError(t, err)

	fold := func(codec kgo.CompressionCodec) int {
		comp, err := kgo.DefaultCompressor(codec)
		require.NoError(t, err)
		out, _ := comp.Compress(new(bytes.Buffer), value)
		return len(value) / len(out)
	}
	for name, codec := range compressionCodecs {
		if name != "none" {
			assert.Less(t, fold(codec), fetchbound.Ratio, name)
		}
	}
	assert.Greater(t, fold(kgo.ZstdCompression()), fetchbound.Ratio, "zstd")
}
