package topics

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// field is one field of a Command: how Decode reads it and how Validate
// judges it. A new field of the contract is one row of fields (and its
// member of Command); an operation that reads it lists it in its
// Operation.Fields.
type field struct {
	name string
	kind fieldKind
	// at points at the field's member of c: *int (kindVersion, kindCount), *string
	// (kindText), *float64 (kindSeconds), **float64 (kindOptionalSeconds),
	// **int64 (kindToken) or *json.RawMessage (kindJSON).
	at func(c *Command) any
	// common: every command's field, judged whatever the operation; the
	// others only for the operations that list them.
	common bool
	// check judges the field's value: why it is refused, or "". nil: any
	// value that reads is fine. A 0 reads as "not given" here, as it does
	// for a Go caller.
	check func(c Command, replyPrefix string) string
	// positive: only an absent field means the default; an explicit 0 (or
	// -0) is refused, as outside rng.
	positive bool
	rng      string
}

// fieldKind is how a field's JSON value is read.
type fieldKind int

const (
	kindVersion         fieldKind = iota // an integer
	kindText                             // a string of valid UTF-8
	kindSeconds                          // a number
	kindOptionalSeconds                  // a number, absent distinct from 0
	kindToken                            // a 64-bit integer, absent distinct from 0
	kindCount                            // an integer
	kindJSON                             // a JSON object (or null: absent), kept as written
)

// fields is every field of a Command, in the order Decode reports the first
// unreadable one.
var fields = [...]field{
	{name: "v", kind: kindVersion, at: func(c *Command) any { return &c.V }, common: true},
	{name: "request_id", kind: kindText, at: func(c *Command) any { return &c.RequestID }, common: true, check: checkRequestID},
	{name: "operation", kind: kindText, at: func(c *Command) any { return &c.Operation }, common: true},
	{name: "namespace", kind: kindText, at: func(c *Command) any { return &c.Namespace }, common: true, check: checkNamespace},
	{name: "lock_name", kind: kindText, at: func(c *Command) any { return &c.LockName }, common: true, check: checkLockName},
	// See checkOwner. Positive where the operation may leave it out
	// (revoke): there "" would name every holder, not one.
	{name: "owner_id", kind: kindText, at: func(c *Command) any { return &c.OwnerID }, common: true, positive: true, rng: ownerIDRange},
	{name: "lease_duration", kind: kindSeconds, at: func(c *Command) any { return &c.LeaseDuration }, positive: true, rng: leaseRange,
		check: func(c Command, _ string) string {
			return secondsProblem("lease_duration", c.LeaseDuration, MinLeaseSeconds, MaxLeaseSeconds, true)
		}},
	{name: "wait_timeout", kind: kindSeconds, at: func(c *Command) any { return &c.WaitTimeout },
		check: func(c Command, _ string) string {
			return secondsProblem("wait_timeout", c.WaitTimeout, 0, MaxWaitSeconds, false)
		}},
	{name: "owner_metadata", kind: kindJSON, at: func(c *Command) any { return &c.OwnerMetadata }, check: checkMetadata},
	{name: "extension_duration", kind: kindSeconds, at: func(c *Command) any { return &c.ExtensionDuration }, positive: true, rng: leaseRange,
		check: func(c Command, _ string) string {
			return secondsProblem("extension_duration", c.ExtensionDuration, MinLeaseSeconds, MaxLeaseSeconds, true)
		}},
	{name: "fencing_token", kind: kindToken, at: func(c *Command) any { return &c.FencingToken }},
	{name: "mode", kind: kindText, at: func(c *Command) any { return &c.Mode },
		check: func(c Command, _ string) string {
			if c.Mode != "" && c.Mode != ModeExclusive && c.Mode != ModeShared {
				return fmt.Sprintf("mode %q is not %s or %s", truncate(c.Mode), ModeExclusive, ModeShared)
			}
			return ""
		}},
	{name: "limit", kind: kindCount, at: func(c *Command) any { return &c.Limit }, positive: true, rng: limitRange,
		check: func(c Command, _ string) string {
			switch {
			case c.Limit == math.MaxInt || c.Limit == math.MinInt: // read past int's range
				return fmt.Sprintf("limit is past a 64-bit integer's range, outside %s", limitRange)
			case c.Limit != 0 && (c.Limit < 1 || c.Limit > MaxLimit):
				return fmt.Sprintf("limit %d is outside %s", c.Limit, limitRange)
			case c.Limit > 1 && c.Mode == ModeShared:
				// A read/write lock admits any number of readers; a limit
				// counts a semaphore's exclusive holders.
				return "limit is for exclusive holders (a counting semaphore): mode shared takes none"
			}
			return ""
		}},
	{name: "max_age_seconds", kind: kindOptionalSeconds, at: func(c *Command) any { return &c.MaxAgeSeconds },
		check: func(c Command, _ string) string {
			if c.MaxAgeSeconds != nil && !inRange(*c.MaxAgeSeconds, 0, MaxMaxAgeSeconds) {
				return fmt.Sprintf("max_age_seconds %s is outside 0..%d", seconds(*c.MaxAgeSeconds), MaxMaxAgeSeconds)
			}
			return ""
		}},
	{name: "lock_delay", kind: kindSeconds, at: func(c *Command) any { return &c.LockDelay },
		check: func(c Command, _ string) string {
			return secondsProblem("lock_delay", c.LockDelay, 0, MaxLockDelaySeconds, false)
		}},
	{name: "max_hold", kind: kindSeconds, at: func(c *Command) any { return &c.MaxHold },
		check: func(c Command, _ string) string {
			if c.MaxHold != 0 && c.SessionID != "" {
				// A session's lease has no expiry of its own to cap.
				return "max_hold is for a lease of its own: a session's lease ends with its session"
			}
			return secondsProblem("max_hold", c.MaxHold, MinLeaseSeconds, MaxMaxHoldSeconds, true)
		}},
	{name: "reason", kind: kindText, at: func(c *Command) any { return &c.Reason },
		check: func(c Command, _ string) string {
			switch {
			case c.Reason == "":
				return "reason is required for " + c.Operation
			case len(c.Reason) > MaxReasonBytes:
				return fmt.Sprintf("reason is %d bytes, over the limit of %d", len(c.Reason), MaxReasonBytes)
			case !storable(c.Reason):
				return "reason must be UTF-8 without NUL characters"
			}
			return ""
		}},
	// An explicit "" is refused: read as no session, an acquire would get a
	// lease of its own, which its owner, counting on the session, never
	// extends.
	{name: "session_id", kind: kindText, at: func(c *Command) any { return &c.SessionID }, check: checkSessionID,
		positive: true, rng: sessionIDRange},
	{name: "session_generation", kind: kindToken, at: func(c *Command) any { return &c.SessionGeneration },
		check: func(c Command, _ string) string {
			switch g := c.SessionGeneration; {
			case g == nil:
				return ""
			case *g < 1:
				return fmt.Sprintf("session_generation %d is outside 1..%d", *g, int64(math.MaxInt64))
			case c.SessionID == "":
				return "session_generation names a life of a session: it needs session_id"
			}
			return ""
		}},
	{name: "ttl", kind: kindSeconds, at: func(c *Command) any { return &c.TTL }, positive: true, rng: ttlRange,
		check: func(c Command, _ string) string {
			return secondsProblem("ttl", c.TTL, MinSessionTTLSeconds, MaxSessionTTLSeconds, true)
		}},
	{name: "reply_to", kind: kindText, at: func(c *Command) any { return &c.ReplyTo }, common: true,
		check: func(c Command, replyPrefix string) string {
			if c.ReplyTo != "" && !ValidReplyTo(c.ReplyTo, replyPrefix) {
				return fmt.Sprintf("reply_to %q is not a topic name under %q", truncate(c.ReplyTo), replyPrefix)
			}
			return ""
		}},
}

// zero reports whether the field's member of c is 0 (kindSeconds or
// kindCount) or "" (kindText).
func (f field) zero(c *Command) bool {
	switch p := f.at(c).(type) {
	case *float64:
		return *p == 0
	case *int:
		return *p == 0
	case *string:
		return *p == ""
	}
	return false
}

// clear sets the field's member of c to its zero value.
func (f field) clear(c *Command) {
	switch p := f.at(c).(type) {
	case *int:
		*p = 0
	case *string:
		*p = ""
	case *float64:
		*p = 0
	case **float64:
		*p = nil
	case **int64:
		*p = nil
	case *json.RawMessage:
		*p = nil
	}
}

// Ranges of the positive fields, for their messages.
var (
	leaseRange = secondsRange(MinLeaseSeconds, MaxLeaseSeconds)
	limitRange = fmt.Sprintf("1..%d", MaxLimit)
	ttlRange   = secondsRange(MinSessionTTLSeconds, MaxSessionTTLSeconds)

	sessionIDRange = fmt.Sprintf("1..%d bytes", MaxSessionIDBytes)
	ownerIDRange   = fmt.Sprintf("1..%d bytes", MaxOwnerIDBytes)
)

// fieldIndex finds a row of fields by name.
var fieldIndex = func() map[string]int {
	m := make(map[string]int, len(fields))
	for i, f := range fields {
		m[f.name] = i
	}
	return m
}()

func checkRequestID(c Command, _ string) string {
	switch {
	case len(c.RequestID) > MaxRequestIDBytes:
		return fmt.Sprintf("request_id is %d bytes, over the limit of %d", len(c.RequestID), MaxRequestIDBytes)
	case !storable(c.RequestID):
		return "request_id must be UTF-8 without NUL characters"
	}
	return ""
}

func checkNamespace(c Command, _ string) string {
	switch {
	case len(c.Namespace) > MaxNamespaceBytes:
		return fmt.Sprintf("namespace is %d bytes, over the limit of %d", len(c.Namespace), MaxNamespaceBytes)
	case c.Namespace != "" && !printable(c.Namespace):
		return "namespace must be printable UTF-8"
	}
	return ""
}

// CheckLockName says what is wrong with a lock name ("": nothing), as a
// command's lock_name is judged.
func CheckLockName(name string) string { return checkLockName(Command{LockName: name}, "") }

func checkLockName(c Command, _ string) string {
	switch {
	case c.LockName == "":
		if op, _ := LookupOperation(c.Operation); op.Session {
			return "" // a session command names no lock
		}
		return "lock_name is required"
	case len(c.LockName) > MaxLockNameBytes:
		return fmt.Sprintf("lock_name is %d bytes, over the limit of %d", len(c.LockName), MaxLockNameBytes)
	case !printable(c.LockName):
		return "lock_name must be printable UTF-8"
	}
	return ""
}

// checkOwner judges owner_id once the operation is known: required (and
// bounded) where the operation needs an owner, bounded where it may name
// one, storable always.
func checkOwner(c Command, op Operation) string {
	switch {
	case op.NeedsOwner && c.OwnerID == "":
		return "owner_id is required for " + c.Operation
	case (op.NeedsOwner || op.OwnerOptional) && len(c.OwnerID) > MaxOwnerIDBytes:
		return fmt.Sprintf("owner_id is %d bytes, over the limit of %d", len(c.OwnerID), MaxOwnerIDBytes)
	}
	if !storable(c.OwnerID) {
		return "owner_id must be UTF-8 without NUL characters"
	}
	return ""
}

// checkSessionID judges a session_id where one is given; a session
// command's need of one is judged by Validate.
func checkSessionID(c Command, _ string) string {
	switch {
	case len(c.SessionID) > MaxSessionIDBytes:
		return fmt.Sprintf("session_id is %d bytes, over the limit of %d", len(c.SessionID), MaxSessionIDBytes)
	case !printable(c.SessionID):
		return "session_id must be printable UTF-8"
	}
	return ""
}

func checkMetadata(c Command, _ string) string {
	if len(c.OwnerMetadata) == 0 {
		return ""
	}
	if len(c.OwnerMetadata) > MaxOwnerMetadataBytes {
		return fmt.Sprintf("owner_metadata is %d bytes, over the limit of %d", len(c.OwnerMetadata), MaxOwnerMetadataBytes)
	}
	// Decode passes valid JSON, but a Go caller may pass anything.
	m := bytes.TrimSpace(c.OwnerMetadata)
	if len(m) == 0 || m[0] != '{' && string(m) != "null" || !json.Valid(m) {
		return "owner_metadata must be a JSON object"
	}
	if p := metadataProblem(m); p != "" {
		return "owner_metadata " + p
	}
	return ""
}

// SecondsProblem judges v, a duration in seconds of the field named field,
// against the contract's range for it, lo..hi seconds (both included; NaN
// is outside): "" within it, else the message saying so, as a rejection's
// error_message words it ("ttl 0.5 is outside 1..3600 seconds"). Commands
// are judged by it (where 0 means "not given", before it); the client
// judges by it the durations that replies give, with the same bounds
// (MinLeaseSeconds..MaxLeaseSeconds for lease_duration,
// MinSessionTTLSeconds..MaxSessionTTLSeconds for ttl).
func SecondsProblem(field string, v, lo, hi float64) string {
	if inRange(v, lo, hi) {
		return ""
	}
	return fmt.Sprintf("%s %s is outside %s", field, seconds(v), secondsRange(lo, hi))
}

// secondsProblem is SecondsProblem for a command's field, where 0 means
// "not given" when zeroIsDefault.
func secondsProblem(name string, v, lo, hi float64, zeroIsDefault bool) string {
	if v == 0 && zeroIsDefault {
		return ""
	}
	return SecondsProblem(name, v, lo, hi)
}

// secondsRange words a range of seconds for a message.
func secondsRange(lo, hi float64) string { return number(lo) + ".." + number(hi) + " seconds" }

// seconds quotes a number of seconds for an error message; one read past
// float64's range (±Inf), or below its smallest above 0 (as that), is not
// quoted as what it was read as.
func seconds(v float64) string {
	switch {
	case math.IsInf(v, 0):
		return "past a float64's range"
	case v == math.SmallestNonzeroFloat64:
		return "above 0 and under 1e-323"
	case v == -math.SmallestNonzeroFloat64:
		return "below 0 and over -1e-323"
	}
	return number(v)
}

// number writes v as the contract writes numbers, in full (86400, 40000000,
// 0.5), where that stays short; in exponent form only past 1e21 or below
// 1e-6, where the full form would run to dozens of digits.
func number(v float64) string {
	if a := math.Abs(v); a == 0 || a >= 1e-6 && a < 1e21 {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
