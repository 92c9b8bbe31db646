package topics

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Event types.
const (
	TypeAcquired  = "lock.acquired"
	TypeQueued    = "lock.queued"
	TypeWithdrawn = "lock.withdrawn"
	TypeReleased  = "lock.released"
	TypeExtended  = "lock.extended"
	TypeExpired   = "lock.expired"
	TypeRevoked   = "lock.revoked"
	TypeStatus    = "lock.status"
	TypeCleaned   = "lock.cleaned"
	TypeRejected  = "lock.rejected"
	// Session events (docs/design.md "Sessions"): the answers to the
	// session commands, and session.expired to the session's reply_to when
	// it missed its ttl.
	TypeSessionOpened    = "session.opened"
	TypeSessionKeptAlive = "session.kept_alive"
	TypeSessionClosed    = "session.closed"
	TypeSessionExpired   = "session.expired"
)

// Reasons an event gives (Event.Reason) for a lease or wait that ended with
// its session rather than by its own command or expiry.
const (
	ReasonSessionClosed  = "session_closed"
	ReasonSessionExpired = "session_expired"
)

// Error codes of lock.rejected.
const (
	CodeLockHeld           = "LOCK_HELD"
	CodeLockTimeout        = "LOCK_TIMEOUT"
	CodeNotOwner           = "NOT_OWNER"
	CodeNotHeld            = "NOT_HELD"
	CodeTokenMismatch      = "TOKEN_MISMATCH"
	CodeInvalidRequest     = "INVALID_REQUEST"
	CodeUnsupportedVersion = "UNSUPPORTED_VERSION"
	// CodeRequestIDConflict: the request_id was already used with another
	// reply_to; the stored outcome is not disclosed.
	CodeRequestIDConflict = "REQUEST_ID_CONFLICT"
	// CodeUnauthenticated: authentication is required and the command has
	// no valid token. Only dead-lettered: its reply_to cannot be trusted.
	CodeUnauthenticated = "UNAUTHENTICATED"
	// CodeForbidden: the requester may not do this (another requester's
	// reply topic, a namespace its token does not allow).
	CodeForbidden = "FORBIDDEN"
	// CodeLimitMismatch: the acquire's limit is not the one the lock's
	// holders and waiters agreed on.
	CodeLimitMismatch = "LIMIT_MISMATCH"
	// CodeModeMismatch: the owner holds the lock in the other mode (an
	// upgrade or downgrade is a release and a new acquire).
	CodeModeMismatch = "MODE_MISMATCH"
	// CodeMaxHoldExceeded: an extend or renewal would carry the lease past
	// its acquired_at + max_hold.
	CodeMaxHoldExceeded = "MAX_HOLD_EXCEEDED"
	// CodeSessionNotFound: the session_id names no live session (never
	// opened, closed, or past its expiry).
	CodeSessionNotFound = "SESSION_NOT_FOUND"
	// CodeSessionExists: a session_open of a session_id that is in use.
	CodeSessionExists = "SESSION_EXISTS"
	// CodeSessionBound: an extend of a lease its session keeps alive.
	CodeSessionBound = "SESSION_BOUND"
)

// ErrorCodes is every error code of lock.rejected.
var ErrorCodes = []string{CodeLockHeld, CodeLockTimeout, CodeNotOwner, CodeNotHeld, CodeTokenMismatch,
	CodeInvalidRequest, CodeUnsupportedVersion, CodeRequestIDConflict,
	CodeUnauthenticated, CodeForbidden, CodeLimitMismatch, CodeModeMismatch,
	CodeSessionNotFound, CodeSessionExists, CodeSessionBound, CodeMaxHoldExceeded}

// Lock statuses of LockInfo.
const (
	StatusAcquired = "acquired"
	StatusReleased = "released"
	StatusExpired  = "expired"
	StatusRevoked  = "revoked"
	StatusFree     = "free"
)

// Event is one reply or lifecycle record value.
type Event struct {
	V            int    `json:"v"`
	EventID      string `json:"event_id"`
	Type         string `json:"type"`
	RequestID    string `json:"request_id,omitempty"`
	Operation    string `json:"operation"`
	Success      bool   `json:"success"`
	ErrorCode    string `json:"error_code,omitempty"`
	ErrorMessage string `json:"error_message,omitempty"`
	// RetryAfterSeconds comes with LOCK_HELD: seconds until the acquire could
	// be granted if no other command came (design.md, LOCK_HELD): the lease
	// in its way ends, the waiters ahead of it are served, the lock-delay ends.
	RetryAfterSeconds *float64  `json:"retry_after_seconds,omitempty"`
	LockInfo          *LockInfo `json:"lock_info,omitempty"`
	// QueuePosition comes with lock.queued: 1 is next in line.
	QueuePosition int  `json:"queue_position,omitempty"`
	CleanedCount  *int `json:"cleaned_count,omitempty"`
	// RevokedCount comes with the revoker's own lock.revoked: the leases it
	// ended.
	RevokedCount     int      `json:"revoked_count,omitempty"`
	CleanedLockNames []string `json:"cleaned_lock_names,omitempty"`
	// More comes with lock.cleaned when a statement of the cleanup reached
	// its bound (10,000; design.md, Cleanup): it selected that many holder
	// rows of ended leases, those of locks another transaction held
	// (skipped) counted too, or deleted that many idle rows. Each lock the
	// rows selected name is settled whole, so it may have ended more leases
	// than that. Its scope may hold more to clean: send it again, with a new
	// request_id. Each command reads every idle row and ended lease of its
	// scope to pick the oldest, so its time grows with the namespace. A
	// repeat may meet the same held locks, and say more again while they
	// are held: the caller's loop, bounded by its own patience. Without
	// more, its statements reached every ended lease and idle row of the
	// scope due when they ran, but the locks skipped are left to the
	// transactions holding them and the expiry scheduler.
	More bool `json:"more,omitempty"`
	// Reason says why a lease or wait ended when its session ended it
	// (ReasonSessionClosed, ReasonSessionExpired), on lock.released,
	// lock.expired and lock.withdrawn; on lock.revoked, the revoke's reason.
	Reason string `json:"reason,omitempty"`
	// SessionInfo comes with the session events.
	SessionInfo *SessionInfo `json:"session_info,omitempty"`
	// DurationMS is the time from the record being polled to its
	// transaction's commit; absent on events no command caused.
	DurationMS *float64 `json:"duration_ms,omitempty"`
	OccurredAt Time     `json:"occurred_at"`
}

// LockInfo describes a lock as the event saw it.
type LockInfo struct {
	Namespace        string          `json:"namespace,omitempty"`
	LockName         string          `json:"lock_name"`
	OwnerID          string          `json:"owner_id,omitempty"`
	Status           string          `json:"status"`
	FencingToken     int64           `json:"fencing_token,omitempty"`
	AcquiredAt       *Time           `json:"acquired_at,omitempty"`
	ExpiresAt        *Time           `json:"expires_at,omitempty"`
	LeaseDuration    float64         `json:"lease_duration,omitempty"`
	AcquisitionCount int64           `json:"acquisition_count"`
	ExtensionCount   int64           `json:"extension_count"`
	OwnerMetadata    json.RawMessage `json:"owner_metadata,omitempty"`
	// Mode is the lease's (exclusive or shared); Limit the lock's.
	Mode  string `json:"mode,omitempty"`
	Limit int    `json:"limit,omitempty"`
	// Revision is the lock's revision after the change the event is about
	// (for lock.status and rejections, the lock's current one): see
	// LockState.Revision.
	Revision int64 `json:"revision"`
	// HolderCount and Holders come with lock.status (query and
	// inspection): every lease of the lock, the first MaxHoldersShown in
	// grant order, within MaxHoldersBytes.
	HolderCount int      `json:"holder_count,omitempty"`
	Holders     []Holder `json:"holders,omitempty"`
	// SessionID is the session the lease is tied to; ExpiresAt is then
	// the session's expiry as of the event.
	SessionID string `json:"session_id,omitempty"`
	// DelayUntil comes with lock.status while the lock is in a lock-delay:
	// it grants nothing before then.
	DelayUntil *Time `json:"delay_until,omitempty"`
	// MaxHold (seconds) is the shown lease's cap, when it has one: no
	// extension or renewal carries it past AcquiredAt + MaxHold. It is the
	// cap of the lease's first grant, which a renewal keeps, so a holder
	// learns it here rather than from its own acquire. Absent: no cap, or
	// a worker from before the field, or a lease that ended before the
	// event's command (the lock's row keeps no cap of an ended lease).
	MaxHold float64 `json:"max_hold,omitempty"`
}

// SessionInfo describes a session as a session event saw it.
type SessionInfo struct {
	SessionID string  `json:"session_id"`
	OwnerID   string  `json:"owner_id"`
	TTL       float64 `json:"ttl"`
	// Generation tells this life of the session apart from every other
	// life of its session_id (opened again once it ended): a number the
	// worker never gives twice, at least 1, which its commands may carry
	// as session_generation. 0: a worker from before the field.
	Generation int64 `json:"generation,omitempty"`
	// ExpiresAt is when the session ends without another keep-alive (for
	// session.closed and session.expired: when it was to end).
	ExpiresAt Time `json:"expires_at"`
	// Leases and Waits count what the session's end released and
	// withdrew (session.closed, session.expired).
	Leases int `json:"leases,omitempty"`
	Waits  int `json:"waits,omitempty"`
}

// MaxHoldersShown bounds LockInfo.Holders.
const MaxHoldersShown = 1000

// MaxHoldersBytes bounds LockInfo.Holders by size too (each holder counted
// as HolderBytes says): a status of 1,000 holders with 4 KiB of
// owner_metadata each would be 4 MB, which Kafka's default 1 MiB record
// refuses, and the query would never be answered.
const MaxHoldersBytes = 640 << 10

// HolderBytes is at least the size of h in JSON, for MaxHoldersBytes: its
// fixed fields take under 400 bytes, an id's character at most six
// escaped (\u0001), and owner_metadata as stored (marshal leaves <, > and
// & as they are).
func HolderBytes(h Holder) int {
	return 400 + 6*len(h.OwnerID) + len(h.OwnerMetadata) + 6*len(h.SessionID)
}

// Holder is one lease of a lock, as lock.status lists them.
type Holder struct {
	OwnerID        string          `json:"owner_id"`
	Mode           string          `json:"mode"`
	Status         string          `json:"status"` // acquired, or expired when past expires_at and not ended yet
	FencingToken   int64           `json:"fencing_token"`
	AcquiredAt     Time            `json:"acquired_at"`
	ExpiresAt      Time            `json:"expires_at"`
	LeaseDuration  float64         `json:"lease_duration"`
	ExtensionCount int64           `json:"extension_count"`
	OwnerMetadata  json.RawMessage `json:"owner_metadata,omitempty"`
	SessionID      string          `json:"session_id,omitempty"`
}

// Version is the contract's v: of the commands this worker reads (a higher
// one is refused UNSUPPORTED_VERSION), and of the events and lock states
// it writes (a reader meeting a higher one does not read it as this one).
const Version = 1

// NewEvent returns an event of the given type with a fresh event_id.
// UUIDv7 ids sort by creation time, which helps people reading logs.
func NewEvent(typ, operation, requestID string, at time.Time) Event {
	return Event{
		V:          Version,
		EventID:    uuid.Must(uuid.NewV7()).String(),
		Type:       typ,
		RequestID:  requestID,
		Operation:  operation,
		Success:    typ != TypeRejected,
		OccurredAt: NewTime(at),
	}
}

// Encode returns the event's JSON record value.
func (e Event) Encode() ([]byte, error) { return Marshal(e) }

// DecodeEvent parses an event record value.
func DecodeEvent(b []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return Event{}, fmt.Errorf("decoding event: %w", err)
	}
	return e, nil
}

// TimeLayout is the contract's timestamp format: RFC 3339, UTC, microseconds.
const TimeLayout = "2006-01-02T15:04:05.000000Z07:00"

// Time is a timestamp encoded in TimeLayout.
type Time struct{ time.Time }

// NewTime truncates t to microseconds (PostgreSQL's precision) in UTC.
func NewTime(t time.Time) Time { return Time{t.UTC().Truncate(time.Microsecond)} }

// NewTimePtr is NewTime for optional fields.
func NewTimePtr(t time.Time) *Time { v := NewTime(t); return &v }

func (t Time) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.UTC().Format(TimeLayout) + `"`), nil
}

func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return err
	}
	t.Time = v.UTC()
	return nil
}
