// Package client is the Go SDK for lockworker's requesters: it takes,
// keeps and releases distributed locks over lockworker's Kafka contract
// (docs/design.md), the way etcd's concurrency package or Curator do over theirs.
//
//	c, err := client.New(ctx, client.Config{Requester: "billing"})
//	...
//	err = client.WithLock(ctx, c, "orders/42", func(ctx context.Context, l *client.Lease) error {
//		return charge(ctx, l.Token) // ctx ends if the lease is lost
//	})
//
// # How it talks to lockworker
//
// A Client produces commands to the commands topic, keyed by lock key, and
// reads its own reply topic (locks.replies.<requester>) directly, without a
// consumer group, from where it ended when New returned. Replies are matched
// to commands by request_id. A command whose reply does not come within
// Config.ReplyTimeout is sent again with the same request_id: the worker
// applies a request_id once and answers every copy with the stored outcome,
// so retries never take a lock twice.
//
// # Leases
//
// Acquire waits in the lock's FIFO queue on the worker; TryAcquire fails fast
// with an *Error saying who holds the lock and until when. Every error code
// of the contract has a sentinel (ErrLockHeld, ErrLockTimeout, ...) that
// errors.Is matches. The Lease extends itself every third of its duration;
// every release and extension carries its fencing token as a guard. When the
// lease is lost (the worker reports lock.expired for it or refuses an
// extension, or its expiry passes unconfirmed) Lease.Lost is closed and
// Lease.Context cancelled, so work under the lock can stop.
//
// An acquire that is given up (its context ends while it waits) sends a
// release for its owner, which withdraws it from the queue, so the worker
// never grants a lock nobody waits for.
//
// # Lifecycle events
//
// NewSubscriber gives the lifecycle topics (lock.acquired, lock.released,
// lock.expired) as a watermill message.Subscriber, for message.Router
// handlers.
//
// # Exported names
//
// Every exported name is the SDK's public API.
package client
