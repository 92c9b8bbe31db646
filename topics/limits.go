package topics

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

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
	// MaxLeaseAheadSeconds bounds how far past now an extend may carry a
	// lease's expiry (366 days): extends stack, and without a max_hold
	// nothing else bounds them, while the contract's timestamps (RFC 3339)
	// end with year 9999. An extend beyond it is refused INVALID_REQUEST,
	// the lease unchanged. A renewal sets the expiry from now, within
	// MaxLeaseSeconds, and a session's lease its session's, so neither
	// reaches it.
	MaxLeaseAheadSeconds = 366 * 86400
	DefaultMaxAgeSeconds = 3600
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
	// MinHMACSecretBytes is the shortest HMAC secret taken (HMACSecret).
	MinHMACSecretBytes = 32
	// MinSessionTTLSeconds and MaxSessionTTLSeconds bound a session's ttl;
	// DefaultSessionTTLSeconds is the ttl of a session_open without one.
	MinSessionTTLSeconds     = 1
	MaxSessionTTLSeconds     = 3600
	DefaultSessionTTLSeconds = 10
	// CleanupAll is the lock_name of a cleanup over every lock.
	CleanupAll = "*"
)

// ErrHMACSecretPEM is a PEM file given as an HMAC secret (HMACSecret).
var ErrHMACSecretPEM = errors.New("a PEM file is no HMAC secret")

// HMACSecret takes the contents of an HMAC secret file, the workers'
// AUTH_HMAC_KEY_FILE or an SDK's signing key file: trimmed of spaces and
// newlines, at least MinHMACSecretBytes. A PEM file is refused
// (ErrHMACSecretPEM): a public key (a requester's .pem given by mistake)
// would make public text an issuer secret, with which anyone could sign as
// any requester, admin included; a private key is no shared secret either.
func HMACSecret(b []byte) ([]byte, error) {
	if strings.Contains(string(b), "-----BEGIN") {
		return nil, ErrHMACSecretPEM
	}
	secret := []byte(strings.TrimSpace(string(b)))
	if len(secret) < MinHMACSecretBytes {
		return nil, fmt.Errorf("an HMAC secret must be at least %d bytes", MinHMACSecretBytes)
	}
	return secret, nil
}

// MaxSubjectBytes bounds a requester name (a token's sub), so that its
// reply topic (REPLY_TOPIC_PREFIX + name) stays within Kafka's 249
// characters: with AUTH_REQUIRED, the workers' config refuses a
// REPLY_TOPIC_PREFIX over 249 - 200 = 49 bytes.
const MaxSubjectBytes = 200

// SubjectProblem says what is wrong with a requester name as a token's
// sub, or "": the workers refuse a token whose sub has one, and the SDK
// refuses to sign or send such a token. It must be usable as the end of a
// Kafka topic name.
func SubjectProblem(sub string) string {
	switch {
	case sub == "":
		return "the token has no sub (the requester's name)"
	case len(sub) > MaxSubjectBytes:
		return fmt.Sprintf("sub is longer than %d bytes", MaxSubjectBytes)
	}
	for i := 0; i < len(sub); i++ {
		c := sub[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return "sub may hold only letters, digits, '.', '_' and '-' (it names the reply topic)"
		}
	}
	return ""
}

// DefaultLeaseDuration is the lease of an acquire without lease_duration
// unless the worker's DEFAULT_LEASE_DURATION says otherwise.
const DefaultLeaseDuration = 30 * time.Second

// DevelopmentBroker is where lockworker's embedded development broker listens
// by default (EMBEDDED_KAFKA_ADDR), so a client and a worker on one machine
// find each other without configuration.
const DevelopmentBroker = "127.0.0.1:9092"
