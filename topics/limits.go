package topics

import "time"

// Limits of the contract (the "Commands" table of docs/design.md).
const (
	MaxRecordBytes        = 64 << 10
	MaxRequestIDBytes     = 128
	MaxNamespaceBytes     = 64
	MaxLockNameBytes      = 255
	MaxOwnerIDBytes       = 255
	MaxOwnerMetadataBytes = 4 << 10
	MinLeaseSeconds       = 0.1
	MaxLeaseSeconds       = 86400
	MaxWaitSeconds        = 3600
	DefaultMaxAgeSeconds  = 3600
	// MaxLimit bounds an acquire's limit (the holders of a semaphore).
	MaxLimit = 10000
	// MaxMaxAgeSeconds bounds cleanup's max_age_seconds (ten years), so every
	// input has a bound; the contract names only the default.
	MaxMaxAgeSeconds = 10 * 365 * 86400
	// MaxLockDelaySeconds bounds an acquire's lock_delay (Consul's bound).
	MaxLockDelaySeconds = 60
	// MaxMaxHoldSeconds bounds an acquire's max_hold (a week).
	MaxMaxHoldSeconds = 7 * 86400
	// MaxReasonBytes bounds a revoke's reason.
	MaxReasonBytes = 1024
	// MaxSessionIDBytes bounds a session_id.
	MaxSessionIDBytes = 128
	// MaxTokenBytes bounds a requester token (the authorization header), without
	// its "Bearer " prefix.
	MaxTokenBytes = 8 << 10
	// MinSessionTTLSeconds and MaxSessionTTLSeconds bound a session's ttl;
	// DefaultSessionTTLSeconds is the ttl of a session_open without one.
	MinSessionTTLSeconds     = 1
	MaxSessionTTLSeconds     = 3600
	DefaultSessionTTLSeconds = 10
	// CleanupAll is the lock_name of a cleanup over every lock.
	CleanupAll = "*"
)

// DefaultLeaseDuration is the lease of an acquire without lease_duration
// unless the worker's DEFAULT_LEASE_DURATION says otherwise.
const DefaultLeaseDuration = 30 * time.Second

// DevelopmentBroker is where lockworker's embedded development broker listens
// by default (EMBEDDED_KAFKA_ADDR), so a client and a worker on one machine
// find each other without configuration.
const DevelopmentBroker = "127.0.0.1:9092"
