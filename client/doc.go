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
// consumer group, from where it ended when New returned; partitions added to
// it, or the topic deleted and created again (as the workers' relay does
// when it has a reply for it), are read from their start once the client
// noticed (see New). Replies are matched to commands by request_id. A command whose reply does not come within
// Config.ReplyTimeout is sent again with the same request_id: the worker
// applies a request_id once and answers every copy with the stored outcome,
// so retries never take a lock twice. A client made with Config.ReadOnly
// only reads the lock state and lifecycle topics: it has no reply topic and
// sends no commands.
//
// # Leases
//
// Acquire waits in the lock's FIFO queue on the worker; TryAcquire fails fast
// with an *Error saying who holds the lock and until when. Every error code
// of the contract has a sentinel (ErrLockHeld, ErrLockTimeout, ...) that
// errors.Is matches. The Lease extends itself every third of its duration;
// every release and extension carries its fencing token as a guard. When the
// lease is lost (the worker reports lock.expired or lock.revoked for it, or
// lock.released by a release it did not send, or refuses an extension, or
// its expiry passes unconfirmed) Lease.Lost is closed and Lease.Context
// cancelled, so work under the lock can stop. Release of a lost
// lease returns the loss (ErrLeaseLost) at once, without sending anything.
// By hand, as in the README:
//
//	lease, err := c.Acquire(ctx, "orders/42", client.WithWait(10*time.Second))
//	if errors.Is(err, client.ErrLockTimeout) {
//		return fmt.Errorf("order 42 is busy: %w", err)
//	}
//	if err != nil {
//		return err
//	}
//	// lease.Context() ends if the lease is lost, not with ctx: the work
//	// gets a context that ends with either, and why (WithLock does so).
//	work, stop := context.WithCancelCause(ctx)
//	defer stop(nil)
//	defer context.AfterFunc(lease.Context(), func() { stop(context.Cause(lease.Context())) })()
//	err = charge(work, lease.Token)
//	return errors.Join(err, lease.Release(ctx))
//
// Query returns a LockState with a typed Status and time.Time fields.
//
// WithLockDelay keeps the lock from the next holder for a while after a
// lease ends without its Release (Chubby's and Consul's lock-delay), so a
// holder that lost its lease unawares cannot overlap the next one, unless
// its process or host was paused past the lease's end (a suspend, a VM
// pause, Ctrl-Z: docs/design.md, "The holder's deadline"; only fencing
// tokens cover that);
// WithMaxHold caps a lease's total hold time, keep-alive included. Revoke
// (an administrative operation) ends other owners' leases; a revoked Lease
// is lost with ErrRevoked.
//
// An acquire that is given up (its context ends while it waits) sends a
// release for its owner, which withdraws it from the queue, so the worker
// never grants a lock nobody waits for. The exceptions are where the
// release could end a lease of the same owner (see Acquire): an acquire
// WithOwner given up before it was seen queued, one whose owner holds the
// lock by a lease of this client (a renewal), and one given up while
// another acquire of the lock by the same owner is in flight in this client,
// whose release waits for the last of them. A grant refused because its
// reply breaks the contract is released the same way, by its fencing token
// when the reply shows the owner's lease of the lock with one.
//
// # Sessions
//
// A Session is one keep-alive for many locks, as an etcd lease or a Consul
// session: NewSession opens it, Acquire WithSession takes a lock in it
// (without a keep-alive of its own), Session.Close releases every lock and
// withdraws every wait of the session at once, and Session.Lost (and each
// lease's Lost) closes when the session is lost. If the process dies, the
// worker frees all its locks within the session's TTL + 1 s (plus the
// group's session timeout, 6 s by default, and a rebalance, if the worker
// replica watching the session died too: docs/design.md, "Sessions").
//
//	func ship(ctx context.Context, c *client.Client) (err error) {
//		s, err := c.NewSession(ctx, 10*time.Second)
//		if err != nil {
//			return err
//		}
//		defer func() { err = errors.Join(err, s.Close(context.WithoutCancel(ctx))) }()
//		a, err := c.Acquire(ctx, "orders/42", client.WithSession(s))
//		if err != nil {
//			return err
//		}
//		b, err := c.Acquire(ctx, "orders/43", client.WithSession(s))
//		if err != nil {
//			return err
//		}
//		return pack(ctx, a.Token, b.Token) // Close's error joins its answer
//	}
//
// # Lifecycle events
//
// NewSubscriber gives the lifecycle topics (lock.acquired, lock.released,
// lock.expired, lock.revoked) as a watermill message.Subscriber, for message.Router
// handlers; Client.Subscriber does on the client's brokers, with options
// (FromEnd). Like New, both fail with ErrUnreachable when no broker answers.
//
// # Leader election
//
// NewElection gives a leader election in the shape of etcd's
// concurrency.Election, on a lock named after the election: Campaign waits
// in line until it leads and returns a Leadership (its Lease: fencing
// Token, Lost, Context, kept alive) with Resign; Leader says who leads now
// (ErrNoLeader when nobody does); Observe reports each new leader in
// fencing-token order, from the lock state topic. The leader's value is
// its lease's owner_metadata, {"value": ...}. docs/design.md ("Leader
// election") gives the convention, for requesters in other languages.
//
// It differs from etcd's: each Campaign is a new candidate (with its own
// generated owner) unless given WithOwner, so a leader that campaigns again
// without resigning waits in line behind itself; there is no Proclaim, and
// a resumed leadership (WithOwner) keeps the value it first led with;
// Observe reports new leaders only, not changes of a leader's value; and
// Resign of a leadership lost already returns ErrLeaseLost, where etcd's
// returns nil.
//
// # Examples
//
// The Example functions of example*_test.go run against a real lockworker in
// the package's tests, with their output checked, all but ExampleFromEnd,
// which tails the topic for ever and is only compiled;
// ExampleClient_Acquire is the README's example.
// `go doc -http` shows them (text `go doc` prints none).
//
// # Exported names
//
// Every exported name is the SDK's public API.
package client
