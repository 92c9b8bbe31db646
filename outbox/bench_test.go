package outbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/kafkapubsub"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/topics"
)

// BenchmarkRelay publishes one batch of outbox rows to kfake and deletes
// them (DrainOnce), as the relay does after each worker batch. Rows are
// written as a closed loop of clients causes them: a reply to the
// requester's topic then a lifecycle event, alternating, so runs of one
// topic are one row long with OrderAcrossTopics; by default a topic's rows go together.
func BenchmarkRelay(b *testing.B) {
	names := topics.DefaultNames()
	reply := names.ReplyTopic("bench")
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, reply, names.Acquired, names.Released))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordDeliveryTimeout(30*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Close)
	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{Client: cl}, nil)
	if err != nil {
		b.Fatal(err)
	}
	st := testdb.New(b)
	ctx := context.Background()
	value := []byte(`{"v":1,"event_id":"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","type":"lock.acquired","request_id":"svc-7-000123",` +
		`"operation":"acquire","success":true,"lock_info":{"lock_name":"orders/42","owner_id":"billing-7","status":"acquired",` +
		`"fencing_token":17,"acquired_at":"2026-11-25T20:00:00.000000Z","expires_at":"2026-11-25T20:00:30.000000Z",` +
		`"lease_duration":30,"acquisition_count":1,"extension_count":0},"duration_ms":2.1,"occurred_at":"2026-11-25T20:00:00.000000Z"}`)
	write := func(n int, topicsCycle []string) {
		err := st.InTx(ctx, func(tx pgx.Tx) error {
			batch := handlers.NewBatch(tx, handlers.Env{Names: names, Partition: 0})
			for i := range n {
				h := []topics.Header{{Key: topics.HeaderCEID, Value: fmt.Appendf(nil, "id-%d", i)},
					{Key: topics.HeaderCEType, Value: []byte(topics.TypeAcquired)}, {Key: topics.HeaderContentType, Value: []byte("application/json")}}
				batch.Publish(topicsCycle[i%len(topicsCycle)], fmt.Appendf(nil, "lock-%d", i), value, h)
			}
			return batch.Flush(ctx)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name       string
		topics     []string
		concurrent bool
	}{
		{"interleaved", []string{reply, names.Acquired}, false},
		{"interleaved/concurrent-topics", []string{reply, names.Acquired}, true},
		{"one-topic", []string{reply}, false},
	} {
		for _, rows := range []int{10, 500} {
			b.Run(fmt.Sprintf("%s/rows=%d", tc.name, rows), func(b *testing.B) {
				relay, err := outbox.New(outbox.Config{Publisher: pub, Pool: st.Pool, OrderAcrossTopics: !tc.concurrent})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					b.StopTimer()
					write(rows, tc.topics)
					b.StartTimer()
					n, err := relay.DrainOnce(ctx, 0)
					if err != nil || n != rows {
						b.Fatalf("published %d of %d: %v", n, rows, err)
					}
				}
				b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
			})
		}
	}
}
