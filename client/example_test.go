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

// The README's example: take a lock, waiting in its queue for at most 10 s,
// work under it, and release it. Release returns ErrLeaseLost at once if the
// lease was lost meanwhile, so the caller learns that the work may have
// overlapped another holder's.
func ExampleClient_Acquire() {
	charge := func(ctx context.Context, token int64) error {
		fmt.Println("charging order 42 with a fencing token:", token > 0)
		return ctx.Err()
	}
	chargeOrder := func(ctx context.Context) error {
		c, err := client.New(ctx, client.Config{Requester: "billing"}) // brokers: KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:9092
		if err != nil {
			return err
		}
		defer c.Close()

		// Wait up to 10 s in the lock's FIFO queue; the lease keeps itself alive.
		lease, err := c.Acquire(ctx, "orders/42", client.WithWait(10*time.Second), client.WithLease(30*time.Second))
		if errors.Is(err, client.ErrLockTimeout) {
			return fmt.Errorf("order 42 is busy: %w", err) // someone else held it all along
		}
		if err != nil {
			return err
		}
		// lease.Context() is cancelled if the lease is lost (<-lease.Lost()),
		// not when ctx ends: give the work a context that ends with either, and
		// why (client.WithLock does so), and lease.Token to what the lock guards.
		work, stop := context.WithCancelCause(ctx)
		defer stop(nil)
		defer context.AfterFunc(lease.Context(), func() { stop(context.Cause(lease.Context())) })()
		err = charge(work, lease.Token)
		return errors.Join(err, lease.Release(ctx))
	}

	if err := chargeOrder(context.Background()); err != nil {
		log.Fatal(err)
	}
	// Output:
	// charging order 42 with a fencing token: true
}

// Typed results: Status constants and time.Time fields; Info keeps the wire
// form.
func ExampleClient_Query_held() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Requester: "ops"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	lease, err := c.Acquire(ctx, "report-42", client.WithLease(time.Minute))
	if err != nil {
		log.Fatal(err)
	}
	defer lease.Release(ctx)
	st, err := c.Query(ctx, "report-42")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(st.Status == client.StatusAcquired, st.Owner == lease.Owner, st.Token == lease.Token, st.LeaseDuration)
	fmt.Println("expires about a minute after it was acquired:", st.ExpiresAt.Sub(st.AcquiredAt) == time.Minute)
	// Output:
	// true true true 1m0s
	// expires about a minute after it was acquired: true
}

// Lifecycle events on this client's brokers, from the earliest retained
// (FromEnd for new ones only). The topics hold every lock's events.
func ExampleClient_Subscriber() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Requester: "tailer"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Subscriber(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, c.Topics().Acquired)
	if err != nil {
		log.Fatal(err)
	}
	lease, err := c.Acquire(ctx, "tailed")
	if err != nil {
		log.Fatal(err)
	}
	defer lease.Release(ctx)
	for msg := range msgs {
		ev, err := client.DecodeMessage(msg)
		msg.Ack()
		// The topics hold every lock's events, and every earlier lease's:
		// a fencing token is never reused.
		if err == nil && ev.LockInfo.LockName == "tailed" && ev.LockInfo.FencingToken == lease.Token {
			fmt.Println(ev.Type, "by the lease's owner:", ev.LockInfo.OwnerID == lease.Owner)
			break
		}
	}
	// Output:
	// lock.acquired by the lease's owner: true
}

// Only events published after the subscription starts. The end is looked up
// a moment after Subscribe returns, so an event published at once may be
// missed: for a lock's whole history, subscribe from the beginning.
func ExampleFromEnd() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Requester: "dashboard"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Subscriber(ctx, client.FromEnd())
	if err != nil {
		log.Fatal(err) // wraps client.ErrUnreachable when no broker answers
	}
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, c.Topics().Expired)
	if err != nil {
		log.Fatal(err)
	}
	for msg := range msgs {
		if ev, err := client.DecodeMessage(msg); err == nil {
			fmt.Println("expired:", ev.LockInfo.LockName, "held by", ev.LockInfo.OwnerID)
		}
		msg.Ack()
	}
}

func ExampleClient_TryAcquire() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Requester: "reports"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	first, err := c.Acquire(ctx, "nightly-report")
	if err != nil {
		log.Fatal(err)
	}
	defer first.Release(ctx)

	// Another owner (each call has its own unless WithOwner says otherwise).
	_, err = c.TryAcquire(ctx, "nightly-report")
	var refused *client.Error
	if errors.As(err, &refused) && errors.Is(err, client.ErrLockHeld) {
		fmt.Println("held by the first:", refused.Holder == first.Owner, "- free within 30s at the latest:", refused.RetryAfter <= 30*time.Second)
	}
	// Output:
	// held by the first: true - free within 30s at the latest: true
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
	if err := json.Unmarshal(info.Metadata, &md); err != nil {
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
	fmt.Println(info.Name, info.Status)
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
	sub, err := client.NewSubscriber(ctx, client.SubscriberConfig{})
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
	// The subscription reads from the earliest retained event, so the
	// router may start after the lease is acquired.
	lease, err := c.Acquire(ctx, "audited")
	if err != nil {
		log.Fatal(err)
	}
	type event struct{ typ, owner string }
	seen := make(chan event)
	for _, topic := range []string{c.Topics().Acquired, c.Topics().Released} {
		router.AddConsumerHandler("audit "+topic, topic, sub, func(msg *message.Message) error {
			ev, err := client.DecodeMessage(msg)
			if err != nil {
				return err
			}
			// The topics hold every lock's events, and every earlier
			// lease's: a fencing token is never reused.
			if ev.LockInfo.LockName == "audited" && ev.LockInfo.FencingToken == lease.Token {
				seen <- event{ev.Type, ev.LockInfo.OwnerID}
			}
			return nil
		})
	}
	go func() { _ = router.Run(ctx) }()
	defer router.Close()
	<-router.Running()

	ev := <-seen
	fmt.Println(ev.typ, "by the lease's owner:", ev.owner == lease.Owner)
	if err := lease.Release(ctx); err != nil {
		log.Fatal(err)
	}
	ev = <-seen
	fmt.Println(ev.typ, "by the lease's owner:", ev.owner == lease.Owner)
	// Output:
	// lock.acquired by the lease's owner: true
	// lock.released by the lease's owner: true
}

// Leader election: the first candidate leads; the next waits in line until
// the leader resigns (or, if its process dies, until its lease runs out).
func ExampleElection() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Requester: "scheduler"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	e := client.NewElection(c, "scheduler-leader")

	leader, err := e.Campaign(ctx, "host-a", client.WithLease(10*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	// leader.Context() is cancelled if the leadership is lost; leader.Token
	// is for whatever the leader acts on.
	current, err := e.Leader(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("leader:", current.Value, "with its token:", current.Token == leader.Token)

	leaders, err := e.Observe(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("observed:", (<-leaders).Value)
	next := make(chan *client.Leadership)
	go func() {
		l, err := e.Campaign(ctx, "host-b") // another process, in real life
		if err != nil {
			log.Fatal(err)
		}
		next <- l
	}()
	if err := leader.Resign(ctx); err != nil {
		log.Fatal(err)
	}
	successor := <-next
	fmt.Println("observed:", (<-leaders).Value, "with a greater token:", successor.Token > leader.Token)
	if err := successor.Resign(ctx); err != nil {
		log.Fatal(err)
	}
	_, err = e.Leader(ctx)
	fmt.Println("then:", errors.Is(err, client.ErrNoLeader))
	// Output:
	// leader: host-a with its token: true
	// observed: host-a
	// observed: host-b with a greater token: true
	// then: true
}
