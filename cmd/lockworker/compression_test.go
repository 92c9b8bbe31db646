package main

import (
	"context"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/topics"
)

// KAFKA_COMPRESSION is the codec of the batches the relay writes: a worker
// started with gzip writes an acquire's reply, its lifecycle event and the
// lock's state gzipped, which a client library without snappy (kafkajs)
// reads.
func TestKafkaCompressionReachesTheRelay(t *testing.T) {
	kafka, _ := externalKafka(t)
	addr := kafka.ListenAddrs()[0]
	m := NewMain()
	require.NoError(t, m.ParseEnv(lookup(map[string]string{"DATABASE_URL": testdb.NewSchema(t).URL, "KAFKA_BOOTSTRAP_SERVERS": addr,
		"HTTP_ADDR": "127.0.0.1:0", "INSTANCE_ID": "e2e", "KAFKA_COMPRESSION": "gzip"})))
	m.Logger = zerolog.Nop()
	run, _ := runMain(t, m)
	run.await(t, m.Ready)

	a := newClient(t, addr, "locks.replies.a")
	a.send(topics.Command{RequestID: "r1", Operation: "acquire", LockName: "job", OwnerID: "a"})
	a.await("r1", topics.TypeAcquired)

	names := m.Config.Topics
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(a.reply, names.LockAcquired, names.LockState),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), runWait)
	defer cancel()
	codecs := []string{"none", "gzip", "snappy", "lz4", "zstd"}
	got := map[string]string{} // topic: the codec of its first batch
	for len(got) < 3 {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "records read: %v", got)
		fs.EachRecord(func(r *kgo.Record) {
			if _, ok := got[r.Topic]; !ok {
				got[r.Topic] = codecs[r.Attrs.CompressionType()]
			}
		})
	}
	require.Equal(t, map[string]string{a.reply: "gzip", names.LockAcquired: "gzip", names.LockState: "gzip"}, got)
}

// A KAFKA_COMPRESSION the relay's producer has no codec for is refused as
// any bad setting is: exit 2, the setting and its values named.
func TestKafkaCompressionRefusedExit2(t *testing.T) {
	err := NewMain().ParseEnv(lookup(map[string]string{"KAFKA_COMPRESSION": "brotli"}))
	require.ErrorIs(t, err, errRefused)
	require.ErrorContains(t, err, `KAFKA_COMPRESSION: "brotli" is not snappy, none, gzip or lz4`)
	require.Equal(t, 2, exitStatus(err, false))
}
