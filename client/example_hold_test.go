package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/omninode/lockworker/client"
)

// A lease that must never outlive a maintenance window, and whose holder's
// death (not a release) keeps the lock from the next holder for a moment,
// so work the dead holder left in flight cannot overlap the next one's.
func ExampleWithMaxHold() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Requester: "billing"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	l, err := c.Acquire(ctx, "invoice-run", client.WithLease(time.Second),
		client.WithMaxHold(2*time.Second), client.WithLockDelay(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	// The keep-alive extends the lease up to the cap; an extension past it
	// is refused and the lease kept.
	err = l.Extend(ctx, time.Minute)
	fmt.Println("extend past the cap:", errors.Is(err, client.ErrMaxHoldExceeded), "- still held:", l.Err() == nil)
	// A release starts no lock-delay: the next holder is granted at once.
	if err := l.Release(ctx); err != nil {
		log.Fatal(err)
	}
	next, err := c.TryAcquire(ctx, "invoice-run")
	fmt.Println("granted after the release:", err == nil)
	if err == nil {
		_ = next.Release(ctx)
	}
	// Output:
	// extend past the cap: true - still held: true
	// granted after the release: true
}

// An operator ends a lease by force: its holder is told (the lease is lost
// with ErrRevoked) and the lock goes to the next waiter. Under
// AUTH_REQUIRED only a token with the admin claim may revoke.
func ExampleClient_Revoke() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Requester: "ops"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	l, err := c.Acquire(ctx, "stuck-job")
	if err != nil {
		log.Fatal(err)
	}
	n, err := c.Revoke(ctx, "stuck-job", "", "runner hung: restarting it")
	if err != nil {
		log.Fatal(err)
	}
	<-l.Lost()
	fmt.Println("revoked", n, "lease(s); holder told:", errors.Is(l.Err(), client.ErrRevoked))
	// Output:
	// revoked 1 lease(s); holder told: true
}
