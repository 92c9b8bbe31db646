package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/topics"
)

// A watch delivers the lock as it is, then each change of it. It reads the
// lock state topic, which the worker's relay writes a moment after each
// change: a change made just before the watch began may come first.
func ExampleClient_Watch() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel() // ends the watch
	c, err := client.New(ctx, client.Config{Requester: "dashboard"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	revs, err := c.Watch(ctx, "printer-3")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("watching", (<-revs).Name)

	lease, err := c.Acquire(ctx, "printer-3")
	if err != nil {
		log.Fatal(err)
	}
	// Revisions order a lock's changes: skip those before the grant.
	for lr := range revs {
		if lr.Revision >= lease.Info().Revision {
			fmt.Println(lr.Status, "by the lease's owner:", lr.Holders[0].Owner == lease.Owner)
			break
		}
	}
	if err := lease.Release(ctx); err != nil {
		log.Fatal(err)
	}
	for lr := range revs {
		if lr.Status != client.StatusAcquired {
			fmt.Println(lr.Status, "by a", lr.Operation)
			break
		}
	}
	// Output:
	// watching printer-3
	// acquired by the lease's owner: true
	// released by a release
}

// The table of every lock, of every namespace, read from the lock state
// topic. A record that cannot be decoded leaves its lock out, with an
// *UnreadableStateError: a caller that only cares for its own namespace
// keeps the table when none of its locks is left out, and no record batch
// was skipped unread (an error wrapping kgo.ErrMaxDecompress, which Locks
// joins to it): the locks of a skipped batch are unknown, maybe its own.
func ExampleClient_Locks() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const ns = "example-locks"
	c, err := client.New(ctx, client.Config{Requester: "ops", Namespace: ns})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	lease, err := c.Acquire(ctx, "inventory/7")
	if err != nil {
		log.Fatal(err)
	}
	defer lease.Release(ctx)
	// The worker's relay writes the topic a moment after each change: wait
	// for the lease's to show, as a dashboard would not need to.
	revs, err := c.Watch(ctx, "inventory/7")
	if err != nil {
		log.Fatal(err)
	}
	for lr := range revs {
		if lr.Revision >= lease.Info().Revision {
			break
		}
	}

	table, err := c.Locks(ctx)
	var ue *client.UnreadableStateError
	if errors.As(err, &ue) && !ue.AffectsNamespace(ns) && !errors.Is(err, kgo.ErrMaxDecompress) {
		err = nil // none of ours left out
	}
	if err != nil {
		log.Fatal(err)
	}
	for _, lr := range table {
		if lr.Namespace == ns && lr.Status == client.StatusAcquired {
			fmt.Println(lr.Name, "held by the lease's owner:", lr.Holders[0].Owner == lease.Owner)
		}
	}
	// Output:
	// inventory/7 held by the lease's owner: true
}

// A counting semaphore: up to two holders at once, each with its own
// fencing token. Every holder and waiter asks for the same limit.
func ExampleWithLimit() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Requester: "renderer"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	first, err := c.Acquire(ctx, "gpu-pool", client.WithLimit(2))
	if err != nil {
		log.Fatal(err)
	}
	second, err := c.Acquire(ctx, "gpu-pool", client.WithLimit(2))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("two holders, tokens differ:", first.Token != second.Token)

	_, err = c.Acquire(ctx, "gpu-pool", client.WithLimit(2), client.WithWait(0))
	fmt.Println("a third refused:", errors.Is(err, client.ErrLockHeld))
	if err := first.Release(ctx); err != nil {
		log.Fatal(err)
	}
	third, err := c.Acquire(ctx, "gpu-pool", client.WithLimit(2), client.WithWait(0))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("granted once a place was free")
	_ = second.Release(ctx)
	_ = third.Release(ctx)
	// Output:
	// two holders, tokens differ: true
	// a third refused: true
	// granted once a place was free
}

// A read lock: readers hold it together, a writer waits for them all (here
// it asks without waiting, and is refused).
func ExampleWithRLock() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Requester: "catalog"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	err = client.WithRLock(ctx, c, "price-list", func(ctx context.Context, l *client.Lease) error {
		// Another reader (another owner, as in another process).
		other, err := c.TryAcquire(ctx, "price-list", client.WithMode(client.Shared))
		if err != nil {
			return err
		}
		defer other.Release(ctx)
		fmt.Println("two readers at once:", other.Token != l.Token)
		_, err = c.TryAcquire(ctx, "price-list")
		fmt.Println("a writer refused:", errors.Is(err, client.ErrLockHeld))
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// two readers at once: true
	// a writer refused: true
}

// A client that only reads (a dashboard): it needs Kafka's Read on the
// topics it reads and nothing else, and sends no commands.
func ExampleConfig_readOnly() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	viewer, err := client.New(ctx, client.Config{ReadOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	defer viewer.Close()
	revs, err := viewer.Watch(ctx, "deploy")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("watching", (<-revs).Name)
	_, err = viewer.Acquire(ctx, "deploy")
	fmt.Println("acquire refused:", errors.Is(err, client.ErrReadOnly))
	// Output:
	// watching deploy
	// acquire refused: true
}

// Any command, with the fields the helpers do not send: here an operator
// releases a lease another process holds, by its owner and fencing token,
// as `lockctl release` does.
func ExampleClient_Do() {
	ctx := context.Background()
	holder, err := client.New(ctx, client.Config{Requester: "importer"})
	if err != nil {
		log.Fatal(err)
	}
	defer holder.Close()
	lease, err := holder.Acquire(ctx, "import-job", client.WithOwner("importer-host-7"))
	if err != nil {
		log.Fatal(err)
	}

	ops, err := client.New(ctx, client.Config{Requester: "ops"})
	if err != nil {
		log.Fatal(err)
	}
	defer ops.Close()
	token := lease.Token
	ev, err := ops.Do(ctx, topics.Command{Operation: topics.OpRelease, LockName: "import-job",
		OwnerID: "importer-host-7", FencingToken: &token})
	if err != nil {
		log.Fatal(err) // an *Error for a refusal (lock.rejected)
	}
	fmt.Println(ev.Type, ev.LockInfo.Status)
	// The worker tells the holder too.
	<-lease.Lost()
	fmt.Println("holder told:", errors.Is(lease.Err(), client.ErrLeaseLost))
	// Output:
	// lock.released released
	// holder told: true
}
