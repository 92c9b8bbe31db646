package kafkapubsub_test

import (
	"context"
	"fmt"
	"log"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/omninode/lockworker/kafkapubsub"
)

// A message published with a key and metadata, and received by a
// subscription, here on kfake, franz-go's in-process broker; a real cluster
// takes its brokers' addresses instead.
func Example() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()

	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
		Brokers:          cluster.ListenAddrs(),
		AutoCreateTopics: true,
		TopicPartitions:  3,
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()

	msg := message.NewMessage("order-42-paid", []byte(`{"amount":1200}`))
	// The record key: messages of one order land on one partition, in order.
	msg.Metadata.Set(kafkapubsub.DefaultKeyMetadata, "order-42")
	msg.Metadata.Set("source", "billing")
	if err := pub.Publish("orders", msg); err != nil {
		log.Fatal(err)
	}

	// No ConsumerGroup: the subscription reads every partition from the
	// earliest record.
	sub, err := kafkapubsub.NewSubscriber(kafkapubsub.SubscriberConfig{Brokers: cluster.ListenAddrs()}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, err := sub.Subscribe(ctx, "orders")
	if err != nil {
		log.Fatal(err)
	}

	got := <-msgs
	record, _ := kafkapubsub.RecordFromContext(got.Context())
	fmt.Println(got.UUID, string(got.Payload))
	fmt.Println(got.Metadata.Get(kafkapubsub.DefaultKeyMetadata), got.Metadata.Get("source"))
	fmt.Println(string(record.Key), record.Topic)
	got.Ack() // the subscription delivers its next message only after this

	// Output:
	// order-42-paid {"amount":1200}
	// order-42 billing
	// order-42 orders
}
