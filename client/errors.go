package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/omninode/lockworker/topics"
)

// Sentinels for every error code of lock.rejected (docs/design.md "Error
// codes"). An *Error with that code matches them with errors.Is.
var (
	// ErrLockHeld: another owner holds the lock and the acquire did not wait.
	ErrLockHeld = errors.New("lock held by another owner")
	// ErrLockTimeout: the acquire waited in the queue for its whole wait timeout.
	ErrLockTimeout = errors.New("timed out waiting for the lock")
	// ErrNotOwner: the lock is held by another owner; of a session
	// command (an acquire WithSession, a session's keep-alive or close),
	// the session is another owner's.
	ErrNotOwner = errors.New("not the owner of the lock")
	// ErrNotHeld: the lock is free, or the lease had already ended.
	ErrNotHeld = errors.New("lock not held")
	// ErrTokenMismatch: the fencing token is not the holder's.
	ErrTokenMismatch = errors.New("fencing token mismatch")
	// ErrInvalidRequest: the command breaks the contract. The client checks
	// every command with topics.Validate before sending it, so it usually
	// comes from the client itself, without a round trip.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrUnsupportedVersion: the worker does not speak the command's version.
	ErrUnsupportedVersion = errors.New("unsupported command version")
	// ErrRequestIDConflict: the request_id was used before with another
	// reply_to, or the outcome stored for it cannot be read back (damaged
	// in the database; the message says so). Nothing was applied. The SDK
	// makes a new request_id per call, so it means the latter, or two
	// requesters that share ids.
	ErrRequestIDConflict = errors.New("request_id used by another requester")
	// ErrUnauthenticated: the token is unusable. The client fails with it
	// before sending when the token is not a JWT or has expired, or one it
	// signs would be longer than the workers accept (a lease or session
	// whose keep-alive fails so is lost with it); a token the
	// workers refuse otherwise gets no answer (they cannot trust its
	// reply_to), so the command ends with ErrNoReply.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: the token does not allow the command (its namespace, or
	// a reply topic not the requester's own); or, from New, the reply topic
	// is missing and Kafka refused to create it.
	ErrForbidden = errors.New("forbidden")
	// ErrLimitMismatch: the lock's holders and waiters agreed on another
	// limit (WithLimit).
	ErrLimitMismatch = errors.New("lock limit mismatch")
	// ErrModeMismatch: the owner holds the lock in the other mode.
	ErrModeMismatch = errors.New("lock mode mismatch")
	// ErrMaxHoldExceeded: an extension (or renewal) would carry the lease
	// past its grant + max_hold (WithMaxHold). The lease is still held.
	ErrMaxHoldExceeded = errors.New("max_hold exceeded")
	// ErrSessionNotFound: the session is not open (never opened, closed,
	// or expired); or the command names an earlier life of the session ID,
	// which has ended, and the ID was opened again (see WithSessionID): the
	// open session is left as it is.
	ErrSessionNotFound = errors.New("session not found")
	// ErrSessionExists: a session with that id is open already.
	ErrSessionExists = errors.New("session exists")
	// ErrSessionBound: the lease is kept alive by its session, not by
	// extensions.
	ErrSessionBound = errors.New("lease kept alive by its session")
)

// Errors of the client itself.
var (
	// ErrLeaseLost is the cause of a lost lease: its Lost channel is closed
	// and its Context cancelled with an error wrapping it.
	ErrLeaseLost = errors.New("lease lost")
	// ErrReleased is the cause of a lease's Context after Release (or
	// Session.Close of its session).
	ErrReleased = errors.New("lease released")
	// ErrRevoked: an administrator revoked the lease (lock.revoked); the
	// lost lease's error wraps it and ErrLeaseLost.
	ErrRevoked = errors.New("lease revoked")
	// ErrSessionLost is the cause of a lost session: its Lost channel is
	// closed and its Context cancelled with an error wrapping it; each of
	// its leases is lost with an error wrapping both it and ErrLeaseLost.
	ErrSessionLost = errors.New("session lost")
	// ErrSessionClosed is the cause of a session's Context after Close.
	ErrSessionClosed = errors.New("session closed")
	// ErrWithdrawn: a waiting acquire was taken out of the queue by what
	// this call did not send: a release for its owner, a later acquire of
	// the same owner taking its place, or the end of the session it waited
	// in (the session is then lost too: ErrSessionLost).
	ErrWithdrawn = errors.New("acquire withdrawn from the queue")
	// ErrNoReply: a command was sent (and re-sent) but no reply came before
	// the request timeout (Config.RequestTimeout, which says from when).
	// Either no lockworker answered, or the brokers stopped answering
	// after New reached them (the producer keeps retrying an unreachable
	// broker until the request timeout): the command may or may not have
	// been applied.
	ErrNoReply = errors.New("no reply from lockworker")
	// ErrUndecodableReply: a command was answered with a reply this client
	// cannot read: one of a later version than it reads (upgrade it), or
	// one that does not decode as an event (damaged, or reshaped by a
	// later version: docs/design.md "Compatibility"). A worker had the
	// command, so it may have been applied. Such a record whose
	// request_id could not be read fails no command: it is named in the
	// ErrNoReply of one left unanswered.
	ErrUndecodableReply = errors.New("undecodable reply")
	// ErrUnreachable: the brokers could not be reached, or refused the
	// command.
	ErrUnreachable = errors.New("kafka unreachable")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("client closed")
	// ErrInvalidConfig: New refused its Config before reaching Kafka (a
	// requester that is not the token's subject, a topic name Kafka
	// refuses, credentials it cannot read or that conflict, a reply topic
	// replication factor out of range, options kgo refuses, a
	// kgo.RecordPartitioner in KafkaOpts, a consuming option in KafkaOpts
	// or Config.Client). A malformed token matches ErrUnauthenticated as
	// well.
	ErrInvalidConfig = errors.New("invalid client configuration")
	// ErrReadOnly: a command was asked of a client made with
	// Config.ReadOnly, which has no reply topic to hear the answer on.
	ErrReadOnly = errors.New("read-only client: it sends no commands")
)

// unreadableReply is the error of a command answered by a reply the client
// cannot read (ErrUndecodableReply): err says what the reply was and why;
// typ is the type it gives ("" when unreadable), which may tell enough (an
// acquire answered lock.queued is withdrawn).
type unreadableReply struct {
	typ string
	err error
}

func (e *unreadableReply) Error() string   { return e.err.Error() }
func (e *unreadableReply) Unwrap() []error { return []error{ErrUndecodableReply, e.err} }

var codeErrors = map[string]error{
	topics.CodeLockHeld:           ErrLockHeld,
	topics.CodeLockTimeout:        ErrLockTimeout,
	topics.CodeNotOwner:           ErrNotOwner,
	topics.CodeNotHeld:            ErrNotHeld,
	topics.CodeTokenMismatch:      ErrTokenMismatch,
	topics.CodeInvalidRequest:     ErrInvalidRequest,
	topics.CodeUnsupportedVersion: ErrUnsupportedVersion,
	topics.CodeRequestIDConflict:  ErrRequestIDConflict,
	topics.CodeUnauthenticated:    ErrUnauthenticated,
	topics.CodeForbidden:          ErrForbidden,
	topics.CodeLimitMismatch:      ErrLimitMismatch,
	topics.CodeModeMismatch:       ErrModeMismatch,
	topics.CodeMaxHoldExceeded:    ErrMaxHoldExceeded,
	topics.CodeSessionNotFound:    ErrSessionNotFound,
	topics.CodeSessionExists:      ErrSessionExists,
	topics.CodeSessionBound:       ErrSessionBound,
}

// Error is a command refused by lockworker (a lock.rejected reply) or, for
// INVALID_REQUEST, by the client's own validation. errors.Is matches it with
// the sentinel of its Code.
type Error struct {
	// Code is the contract's error code, e.g. LOCK_HELD.
	Code string
	// Message is the worker's (or the client's) explanation, for people.
	Message string
	// Holder is the owner holding the lock when the reply was written, if
	// any (lock_info.owner_id of a held lock): its newest holder, except
	// for MAX_HOLD_EXCEEDED, whose lock_info is the refused lease's (the
	// caller's own).
	Holder string
	// ExpiresAt is when the holder's lease ends, by the worker's clock; zero
	// when unknown.
	ExpiresAt time.Time
	// RetryAfter comes with LOCK_HELD: how long until the acquire could be
	// granted if no other command came (retry_after_seconds: the leases in
	// its way end, the waiters ahead of it are served, the lock-delay ends).
	RetryAfter time.Duration
	// Event is the lock.rejected reply; zero when the client refused the
	// command itself.
	Event topics.Event
}

func (e *Error) Error() string {
	s := e.Code + ": " + e.Message
	if e.Code != topics.CodeLockHeld {
		return s
	}
	if !e.ExpiresAt.IsZero() {
		s += " until " + e.ExpiresAt.Format(time.RFC3339Nano)
	}
	// Also without a holder's expiry: a lock-delay, or waiters ahead, with
	// no lease in the way. A reply's 0 (what is in the way is due to end
	// already) is said too.
	if e.RetryAfter > 0 || e.Event.RetryAfterSeconds != nil {
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return s
}

// Unwrap returns the sentinel of the error's code, so errors.Is works.
func (e *Error) Unwrap() error { return codeErrors[e.Code] }

// maxRetryAfterSeconds bounds a LOCK_HELD's retry_after_seconds: it comes
// no later than the end of the last lease in the way, which an extension
// carries at most MaxLeaseAheadSeconds past now, and of its lock-delay.
const maxRetryAfterSeconds = topics.MaxLeaseAheadSeconds + topics.MaxLockDelaySeconds

// rejection turns a lock.rejected event into an *Error; one whose
// retry_after_seconds is outside 0..maxRetryAfterSeconds is refused as any
// reply's duration out of range is (replySeconds): read, it would overflow
// RetryAfter.
func rejection(ev topics.Event) error {
	e := &Error{Code: ev.ErrorCode, Message: ev.ErrorMessage, Event: ev}
	if li := ev.LockInfo; li != nil && li.Status == topics.StatusAcquired {
		e.Holder = li.OwnerID
		if li.ExpiresAt != nil {
			e.ExpiresAt = li.ExpiresAt.Time
		}
	}
	if ev.RetryAfterSeconds != nil {
		if err := replySeconds(ev, "retry_after_seconds", *ev.RetryAfterSeconds, 0, maxRetryAfterSeconds); err != nil {
			return err
		}
		e.RetryAfter = seconds(*ev.RetryAfterSeconds)
	}
	return e
}

// validate checks a command with the contract's own validation before it is
// sent, so bad input fails at once with a clear error instead of a dead
// letter and a timeout.
func validate(cmd topics.Command, replyPrefix string) error {
	err := topics.Validate(cmd, replyPrefix)
	var rej *topics.Rejection
	if errors.As(err, &rej) {
		return &Error{Code: rej.Code, Message: rej.Message}
	}
	return err
}

// invalidRequest is a call the client refuses before it sends anything,
// as the worker would refuse its command: an *Error wrapping
// ErrInvalidRequest.
func invalidRequest(msg string) error {
	return &Error{Code: topics.CodeInvalidRequest, Message: msg}
}

func seconds(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond)
}

// replySeconds checks a duration a reply gives, which the contract bounds to
// lo..hi seconds, by topics.SecondsProblem. A reply outside them (no worker
// sends one) is refused, as one without its lock_info or session_info is:
// keep-alives pace themselves by it, and a 0 would make them spin, or panic
// a ticker.
func replySeconds(ev topics.Event, field string, v, lo, hi float64) error {
	if p := topics.SecondsProblem(field, v, lo, hi); p != "" {
		return fmt.Errorf("%s with %s", ev.Type, p)
	}
	return nil
}
