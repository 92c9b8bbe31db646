package topics

import "strings"

// Operation is one operation of the contract, as producers, the worker and
// the SDK all see it: the table every list of operations is read from. The
// worker's handlers table (package handlers) adds how each is applied.
type Operation struct {
	// Name is the command's operation field.
	Name string
	// Fields are the command fields it reads besides those of every command
	// (v, request_id, operation, namespace, lock_name, owner_id, reply_to):
	// Validate judges them only for it.
	Fields []string
	// NeedsOwner: owner_id is required. OwnerOptional: it may be given,
	// and is then bounded as a required one.
	NeedsOwner, OwnerOptional bool
	// AllLocks: lock_name may be CleanupAll ("*").
	AllLocks bool
	// Session: a session command, which names a session (session_id,
	// required) and no lock (lock_name absent).
	Session bool
	// Answers are the event types of its final answer, Interim those that
	// may come before it (a queued acquire's lock.queued).
	Answers, Interim []string
	// Summary says what it does, for people.
	Summary string
}

// Operations is every operation of the contract, in the order people read
// them.
var Operations = []Operation{
	{Name: OpAcquire, Fields: []string{"mode", "limit", "lease_duration", "wait_timeout", "owner_metadata", "session_id", "session_generation", "lock_delay", "max_hold"},
		NeedsOwner: true,
		Answers:    []string{TypeAcquired, TypeWithdrawn, TypeRejected}, Interim: []string{TypeQueued},
		Summary: "take the lock (exclusive, shared, or one of a semaphore's places), renew it for its holder, or wait in its FIFO queue"},
	{Name: OpRelease, Fields: []string{"fencing_token"}, NeedsOwner: true,
		Answers: []string{TypeReleased, TypeWithdrawn, TypeRejected},
		Summary: "end the holder's lease (the next waiter is granted), or withdraw a waiting owner"},
	{Name: OpExtend, Fields: []string{"extension_duration", "fencing_token"}, NeedsOwner: true,
		Answers: []string{TypeExtended, TypeRejected},
		Summary: "lengthen the holder's lease from its current expiry"},
	{Name: OpRevoke, Fields: []string{"reason"}, OwnerOptional: true,
		Answers: []string{TypeRevoked, TypeRejected},
		Summary: "end the lock's leases, or owner_id's, with a reason (an administrative operation): each holder is told, waiters are granted"},
	{Name: OpQuery,
		Answers: []string{TypeStatus},
		Summary: "report the lock without changing it"},
	{Name: OpCleanup, Fields: []string{"max_age_seconds"}, AllLocks: true,
		Answers: []string{TypeCleaned},
		Summary: "end ended leases and delete idle released, expired or revoked rows, of one lock or all of a namespace"},
	{Name: OpSessionOpen, Fields: []string{"session_id", "ttl"}, NeedsOwner: true, Session: true,
		Answers: []string{TypeSessionOpened, TypeRejected},
		Summary: "open a session: one keep-alive for every lease and wait acquired with its session_id"},
	{Name: OpSessionKeepAlive, Fields: []string{"session_id", "session_generation"}, NeedsOwner: true, Session: true,
		Answers: []string{TypeSessionKeptAlive, TypeRejected},
		Summary: "keep the session alive for another ttl from now"},
	{Name: OpSessionClose, Fields: []string{"session_id", "session_generation"}, NeedsOwner: true, Session: true,
		Answers: []string{TypeSessionClosed, TypeRejected},
		Summary: "close the session: release every lease and withdraw every wait it has, in one transaction"},
}

// LookupOperation returns the operation named name.
func LookupOperation(name string) (Operation, bool) {
	for _, op := range Operations {
		if op.Name == name {
			return op, true
		}
	}
	return Operation{}, false
}

// OperationNames lists the names of Operations.
func OperationNames() []string {
	names := make([]string, len(Operations))
	for i, op := range Operations {
		names[i] = op.Name
	}
	return names
}

// operationList is "acquire, release, extend, query or cleanup".
func operationList() string {
	names := OperationNames()
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
