package topics

import (
	"bytes"
	"encoding/json"
	"fmt"
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

// Decode parses and validates one untrusted command record value. It never
// panics. The error, when not nil, is a *Rejection.
func Decode(value []byte, replyPrefix string) (Command, error) {
	var c Command
	if len(value) > MaxRecordBytes {
		return c, reject(c, CodeInvalidRequest, "record value is %d bytes, over the limit of %d", len(value), MaxRecordBytes)
	}
	trimmed := bytes.TrimLeft(value, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return c, reject(c, CodeInvalidRequest, "record value is not a JSON object")
	}
	// On a wrong type json.Unmarshal still fills the other fields, so a
	// reply_to can be read for the rejection.
	if err := json.Unmarshal(value, &c); err != nil {
		return c, reject(c, CodeInvalidRequest, "not a valid command: %v", err)
	}
	return c, Validate(c, replyPrefix)
}

// Validate checks a command against every limit of the contract.
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
		if c.LeaseDuration != 0 && (c.LeaseDuration < MinLeaseSeconds || c.LeaseDuration > MaxLeaseSeconds) {
			return bad("lease_duration %g is outside %g..%d seconds", c.LeaseDuration, MinLeaseSeconds, MaxLeaseSeconds)
		}
		if c.WaitTimeout < 0 || c.WaitTimeout > MaxWaitSeconds {
			return bad("wait_timeout %g is outside 0..%d seconds", c.WaitTimeout, MaxWaitSeconds)
		}
		if len(c.OwnerMetadata) > 0 {
			if len(c.OwnerMetadata) > MaxOwnerMetadataBytes {
				return bad("owner_metadata is %d bytes, over the limit of %d", len(c.OwnerMetadata), MaxOwnerMetadataBytes)
			}
			if m := bytes.TrimSpace(c.OwnerMetadata); m[0] != '{' && !bytes.Equal(m, []byte("null")) {
				return bad("owner_metadata must be a JSON object")
			}
		}
	case OpRelease:
		needsOwner = true
	case OpExtend:
		needsOwner = true
		if c.ExtensionDuration != 0 && (c.ExtensionDuration < MinLeaseSeconds || c.ExtensionDuration > MaxLeaseSeconds) {
			return bad("extension_duration %g is outside %g..%d seconds", c.ExtensionDuration, MinLeaseSeconds, MaxLeaseSeconds)
		}
	case OpQuery:
	case OpCleanup:
		if c.MaxAgeSeconds != nil && (*c.MaxAgeSeconds < 0 || *c.MaxAgeSeconds > MaxMaxAgeSeconds) {
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
