package topics

import "encoding/json"

// Operations a Command can ask for.
const (
	OpAcquire = "acquire"
	OpRelease = "release"
	OpExtend  = "extend"
	OpQuery   = "query"
	OpCleanup = "cleanup"
	OpRevoke  = "revoke"
	// Sessions (docs/design.md "Sessions"): open one, keep it alive, close it.
	OpSessionOpen      = "session_open"
	OpSessionKeepAlive = "session_keepalive"
	OpSessionClose     = "session_close"
	// OpExpire is the operation of events no command asked for: a lease the
	// worker ended, or a waiter whose deadline passed.
	OpExpire = "expire"
)

// Command is one record value on the commands topic. Durations are seconds,
// as in the original node. Zero values mean "not given"; the handler applies
// the contract's defaults. On the wire only an absent field means that:
// Decode refuses an explicit 0 lease_duration or extension_duration.
type Command struct {
	// V is the schema version; 0 is read as 1, anything above 1 is refused.
	V         int    `json:"v,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	Operation string `json:"operation"`
	Namespace string `json:"namespace,omitempty"`
	LockName  string `json:"lock_name,omitempty"` // absent from the session operations
	OwnerID   string `json:"owner_id,omitempty"`
	// LeaseDuration of an acquire; 0: the worker's DEFAULT_LEASE_DURATION.
	LeaseDuration float64 `json:"lease_duration,omitempty"`
	// WaitTimeout of an acquire; 0: fail fast with LOCK_HELD.
	WaitTimeout   float64         `json:"wait_timeout,omitempty"`
	OwnerMetadata json.RawMessage `json:"owner_metadata,omitempty"`
	// ExtensionDuration of an extend; 0: the lock's lease_duration.
	ExtensionDuration float64 `json:"extension_duration,omitempty"`
	// Mode of an acquire: ModeExclusive (""), or ModeShared for a read lock.
	Mode string `json:"mode,omitempty"`
	// Limit of an acquire: how many exclusive holders the lock admits at
	// once (a counting semaphore); 0: 1. Every holder and waiter of a lock
	// agrees on it.
	Limit int `json:"limit,omitempty"`
	// FencingToken, when given, must equal the holder's token.
	FencingToken *int64 `json:"fencing_token,omitempty"`
	// LockDelay of an acquire: seconds the lock grants nothing after the
	// lease ends otherwise than by its holder's release; 0: none.
	LockDelay float64 `json:"lock_delay,omitempty"`
	// MaxHold of an acquire: the lease never runs past acquired_at +
	// MaxHold seconds; 0: no cap.
	MaxHold float64 `json:"max_hold,omitempty"`
	// Reason of a revoke, told to each holder it ends.
	Reason string `json:"reason,omitempty"`
	// MaxAgeSeconds of a cleanup; nil: DefaultMaxAgeSeconds.
	MaxAgeSeconds *float64 `json:"max_age_seconds,omitempty"`
	ReplyTo       string   `json:"reply_to,omitempty"`
	// SessionID names the session of a session command, or the session an
	// acquire ties its lease and wait to.
	SessionID string `json:"session_id,omitempty"`
	// SessionGeneration, when given, names the life of SessionID that the
	// command is for: its session.opened's session_info.generation. A
	// session_id may be opened again once its session ended, and a command
	// of an earlier life applied late (a lagging partition) must not act on
	// the new one: the worker refuses it SESSION_NOT_FOUND unless the live
	// session's generation is this one. nil: whatever life is live.
	SessionGeneration *int64 `json:"session_generation,omitempty"`
	// TTL of a session_open: how long the session lives without a
	// keep-alive, in seconds; 0: DefaultSessionTTLSeconds.
	TTL float64 `json:"ttl,omitempty"`
}

// Modes of an acquire.
const (
	ModeExclusive = "exclusive"
	ModeShared    = "shared"
)

// Key is the record key for this command's lock, or for a session command
// (which names no lock) its session's: all of a session's commands reach
// one partition.
func (c Command) Key() string {
	if c.LockName == "" && c.SessionID != "" {
		return SessionKey(c.SessionID)
	}
	return LockKey(c.Namespace, c.LockName)
}

// Encode returns the command's JSON record value.
func (c Command) Encode() ([]byte, error) { return Marshal(c) }
