package topics

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Rejection is why a record cannot be applied. Code is INVALID_REQUEST or
// UNSUPPORTED_VERSION. Command holds whatever could be read of the record, so
// the caller can answer to a valid reply_to.
type Rejection struct {
	Code    string
	Message string
	Command Command
}

func (r *Rejection) Error() string { return r.Code + ": " + r.Message }

// Validate checks a command against every limit of the contract. A zero
// lease_duration or extension_duration reads as "not given" here; Decode also
// refuses one written explicitly.
func Validate(c Command, replyPrefix string) error {
	if c.V > 1 {
		return reject(c, CodeUnsupportedVersion, "schema version %d is not supported (this worker speaks 1)", c.V)
	}
	if c.V < 0 {
		return reject(c, CodeInvalidRequest, "v must be 1, got %d", c.V)
	}
	bad := func(format string, args ...any) error { return reject(c, CodeInvalidRequest, format, args...) }
	if c.ReplyTo != "" && !ValidReplyTo(c.ReplyTo, replyPrefix) {
		return bad("reply_to %q is not a topic name under %q", truncate(c.ReplyTo), replyPrefix)
	}
	if len(c.RequestID) > MaxRequestIDBytes {
		return bad("request_id is %d bytes, over the limit of %d", len(c.RequestID), MaxRequestIDBytes)
	}
	if !storable(c.RequestID) {
		return bad("request_id must be UTF-8 without NUL characters")
	}
	if len(c.Namespace) > MaxNamespaceBytes {
		return bad("namespace is %d bytes, over the limit of %d", len(c.Namespace), MaxNamespaceBytes)
	}
	if c.Namespace != "" && !printable(c.Namespace) {
		return bad("namespace must be printable UTF-8")
	}
	switch {
	case c.LockName == "":
		return bad("lock_name is required")
	case len(c.LockName) > MaxLockNameBytes:
		return bad("lock_name is %d bytes, over the limit of %d", len(c.LockName), MaxLockNameBytes)
	case !printable(c.LockName):
		return bad("lock_name must be printable UTF-8")
	}
	needsOwner := false
	switch c.Operation {
	case OpAcquire:
		needsOwner = true
		if c.LeaseDuration != 0 && !inRange(c.LeaseDuration, MinLeaseSeconds, MaxLeaseSeconds) {
			return bad("lease_duration %g is outside %g..%d seconds", c.LeaseDuration, MinLeaseSeconds, MaxLeaseSeconds)
		}
		if !inRange(c.WaitTimeout, 0, MaxWaitSeconds) {
			return bad("wait_timeout %g is outside 0..%d seconds", c.WaitTimeout, MaxWaitSeconds)
		}
		if len(c.OwnerMetadata) > 0 {
			if len(c.OwnerMetadata) > MaxOwnerMetadataBytes {
				return bad("owner_metadata is %d bytes, over the limit of %d", len(c.OwnerMetadata), MaxOwnerMetadataBytes)
			}
			// Decode passes valid JSON, but a Go caller may pass anything.
			m := bytes.TrimSpace(c.OwnerMetadata)
			if len(m) == 0 || m[0] != '{' && string(m) != "null" || !json.Valid(m) {
				return bad("owner_metadata must be a JSON object")
			}
			if p := metadataProblem(m); p != "" {
				return bad("owner_metadata %s", p)
			}
		}
	case OpRelease:
		needsOwner = true
	case OpExtend:
		needsOwner = true
		if c.ExtensionDuration != 0 && !inRange(c.ExtensionDuration, MinLeaseSeconds, MaxLeaseSeconds) {
			return bad("extension_duration %g is outside %g..%d seconds", c.ExtensionDuration, MinLeaseSeconds, MaxLeaseSeconds)
		}
	case OpQuery:
	case OpCleanup:
		if c.MaxAgeSeconds != nil && !inRange(*c.MaxAgeSeconds, 0, MaxMaxAgeSeconds) {
			return bad("max_age_seconds %g is outside 0..%d", *c.MaxAgeSeconds, MaxMaxAgeSeconds)
		}
	case "":
		return bad("operation is required")
	default:
		return bad("unknown operation %q (want acquire, release, extend, query or cleanup)", truncate(c.Operation))
	}
	if c.LockName == CleanupAll && c.Operation != OpCleanup {
		return bad("lock_name %q is only for cleanup", CleanupAll)
	}
	if needsOwner {
		switch {
		case c.OwnerID == "":
			return bad("owner_id is required for %s", c.Operation)
		case len(c.OwnerID) > MaxOwnerIDBytes:
			return bad("owner_id is %d bytes, over the limit of %d", len(c.OwnerID), MaxOwnerIDBytes)
		}
	}
	if !storable(c.OwnerID) {
		return bad("owner_id must be UTF-8 without NUL characters")
	}
	return nil
}

// ValidReplyTo reports whether topic may receive replies: a legal topic name
// under the allowed prefix.
func ValidReplyTo(topic, prefix string) bool {
	return len(topic) > len(prefix) && topic[:len(prefix)] == prefix && ValidTopicName(topic)
}

func reject(c Command, code, format string, args ...any) *Rejection {
	return &Rejection{Code: code, Message: fmt.Sprintf(format, args...), Command: c}
}

// inRange is false for NaN too, which a Go caller can pass.
func inRange(x, lo, hi float64) bool { return x >= lo && x <= hi }

// storable reports whether PostgreSQL text can hold s: it refuses NUL and
// invalid UTF-8 (SQLSTATE 22021), which no retry of the transaction cures.
func storable(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

// printable is for names people read; it also implies storable (NUL is not
// printable).
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// truncate keeps error messages bounded when they quote input.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
