package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omninode/lockworker/client"
)

// These examples run against the lockworker started by TestMain; the client
// finds its broker through KAFKA_BOOTSTRAP_SERVERS, as a program would.

func Example() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Requester: "billing"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Waits in the lock's FIFO queue while someone else holds it.
	lease, err := c.Acquire(ctx, "orders/42", client.WithLease(10*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	// The lease keeps itself alive until released. Hand its fencing token to
	// whatever the lock guards, so a stale holder can be refused.
	fmt.Println("holding", lease.Name, "with a token:", lease.Token > 0)
	if err := lease.Release(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("released:", context.Cause(lease.Context()))
	// Output:
	// holding orders/42 with a token: true
	// released: lease released
}

func ExampleClient_TryAcquire() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Requester: "reports"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	first, err := c.Acquire(ctx, "nightly-report", client.WithOwner("reports-1"))
	if err != nil {
		log.Fatal(err)
	}
	defer first.Release(ctx)

	_, err = c.TryAcquire(ctx, "nightly-report", client.WithOwner("reports-2"))
	var refused *client.Error
	if errors.As(err, &refused) && errors.Is(err, client.ErrLockHeld) {
		fmt.Println("held by", refused.Holder, "- free within 30s at the latest:", refused.RetryAfter <= 30*time.Second)
	}
	// Output:
	// held by reports-1 - free within 30s at the latest: true
}

func ExampleWithLock() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Requester: "migrations"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	err = client.WithLock(ctx, c, "schema-migration", func(ctx context.Context, l *client.Lease) error {
		// ctx is cancelled if the lease is lost, so the work stops in time.
		fmt.Println("migrating under", l.Name)
		return nil
	}, client.WithWait(30*time.Second), client.WithMetadata(map[string]string{"version": "42"}))
	if err != nil {
		log.Fatal(err)
	}
	info, err := c.Query(ctx, "schema-migration")
	if err != nil {
		log.Fatal(err)
	}
	var md map[string]string
	if err := json.Unmarshal(info.OwnerMetadata, &md); err != nil {
		log.Fatal(err)
	}
	fmt.Println("afterwards:", info.Status, md)
	// Output:
	// migrating under schema-migration
	// afterwards: released map[version:42]
}

func ExampleLease_Lost() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Requester: "batch"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	lease, err := c.Acquire(ctx, "short-job", client.WithLease(500*time.Millisecond), client.WithoutKeepAlive())
	if err != nil {
		log.Fatal(err)
	}
	select {
	case <-lease.Lost():
		fmt.Println("lost:", errors.Is(context.Cause(lease.Context()), client.ErrLeaseLost))
	case <-time.After(5 * time.Second):
		fmt.Println("still held?")
	}
	// Output:
	// lost: true
}

func ExampleClient_Query() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Requester: "ops"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	info, err := c.Query(ctx, "never-taken")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.LockName, info.Status)
	// Output:
	// never-taken free
}

func ExampleClient_Cleanup() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Requester: "ops", Namespace: "example-cleanup"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	lease, err := c.Acquire(ctx, "temp")
	if err != nil {
		log.Fatal(err)
	}
	if err := lease.Release(ctx); err != nil {
		log.Fatal(err)
	}
	// Delete the lock's row if it is released or expired and idle for any
	// time at all (the worker's default is an hour). "*" would sweep every
	// lock of the namespace.
	res, err := c.Cleanup(ctx, "temp", 0)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Count, res.LockNames)
	// Output:
	// 1 [example-cleanup/temp]
}

// Lifecycle events as a watermill Subscriber, for Router handlers.
func ExampleNewSubscriber() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub, err := client.NewSubscriber(client.SubscriberConfig{})
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New(ctx, client.Config{Requester: "auditor"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	router, err := message.NewRouter(message.RouterConfig{}, nil)
	if err != nil {
		log.Fatal(err)
	}
	seen := make(chan string)
	for _, topic := range []string{c.Topics().Acquired, c.Topics().Released} {
		router.AddConsumerHandler("audit "+topic, topic, sub, func(msg *message.Message) error {
			ev, err := client.DecodeMessage(msg)
			if err != nil {
				return err
			}
			if ev.LockInfo.LockName == "audited" { // the topics hold every lock's events
				seen <- ev.Type + " by " + ev.LockInfo.OwnerID
			}
			return nil
		})
	}
	go func() { _ = router.Run(ctx) }()
	defer router.Close()
	<-router.Running()

	lease, err := c.Acquire(ctx, "audited", client.WithOwner("auditor-1"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-seen)
	if err := lease.Release(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-seen)
	// Output:
	// lock.acquired by auditor-1
	// lock.released by auditor-1
}
