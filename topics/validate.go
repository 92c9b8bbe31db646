package topics

import (
	"fmt"
	"slices"
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
	// Field is the wire name of the field whose value is refused, when it
	// is one field's ("" otherwise), for callers that tell it in their own
	// terms (lockctl's flags). It is not sent: Message says it too.
	Field string
}

func (r *Rejection) Error() string { return r.Code + ": " + r.Message }

// Validate checks a command against every limit of the contract: first
// what decides how the rest is judged (validateFirst), then the fields every
// command has, then the operation's own (topics.Operations), then owner_id.
// A zero lease_duration or extension_duration reads as "not given" here;
// Decode also refuses one written explicitly.
func Validate(c Command, replyPrefix string) error {
	op, err := validateFirst(c, replyPrefix)
	if err != nil {
		return err
	}
	return validateRest(c, op, replyPrefix)
}

// validateRest is Validate after validateFirst, which judged op known
// (Decode judges those fields itself, each as it reads it).
func validateRest(c Command, op Operation, replyPrefix string) error {
	bad := func(problem string) error { return reject(c, CodeInvalidRequest, "%s", problem) }
	for _, f := range fields {
		if f.common && f.check != nil && !judgedFirstNamed(f.name) {
			if p := f.check(c, replyPrefix); p != "" {
				return rejectField(c, f.name, "%s", p)
			}
		}
	}
	for _, name := range op.Fields {
		if f := fields[fieldIndex[name]]; f.check != nil {
			if p := f.check(c, replyPrefix); p != "" {
				return rejectField(c, f.name, "%s", p)
			}
		}
	}
	switch {
	case op.Session && c.SessionID == "":
		return bad("session_id is required for " + c.Operation)
	case op.Session && c.LockName != "":
		return bad(c.Operation + " names a session, not a lock: lock_name must be absent")
	}
	if c.LockName == CleanupAll && !op.AllLocks {
		return bad(fmt.Sprintf("lock_name %q is only for cleanup", CleanupAll))
	}
	if p := checkOwner(c, op); p != "" {
		return bad(p)
	}
	return nil
}

// judgedFirst are, in order, the fields judged before any other: the
// version (a later one may have changed every other field), reply_to (a
// command refused for it is answered nowhere, and its dead-letter copy
// must say why) and the operation, which says which fields the command has
// (a session command no lock_name). Decode reports one of them that cannot
// be read at its turn, before judging it.
var judgedFirst = []firstJudged{
	{"v", func(c Command, _ string) error {
		switch {
		case c.V > Version:
			return reject(c, CodeUnsupportedVersion, "schema version %d is not supported (this worker speaks %d)", c.V, Version)
		case c.V < 0:
			return reject(c, CodeInvalidRequest, "v must be 1, got %d", c.V)
		}
		return nil
	}},
	{"reply_to", func(c Command, replyPrefix string) error {
		if p := fields[fieldIndex["reply_to"]].check(c, replyPrefix); p != "" {
			return rejectField(c, "reply_to", "%s", p)
		}
		return nil
	}},
	{"operation", func(c Command, _ string) error {
		_, known := LookupOperation(c.Operation)
		switch {
		case c.Operation == "":
			return reject(c, CodeInvalidRequest, "operation is required")
		case !known:
			return reject(c, CodeInvalidRequest, "unknown operation %q (want %s)", truncate(c.Operation), operationList())
		}
		return nil
	}},
}

// firstJudged is a field of judgedFirst and its judge.
type firstJudged struct {
	name  string
	judge func(c Command, replyPrefix string) error
}

// judgedFirstNamed reports whether name is one of judgedFirst's fields.
func judgedFirstNamed(name string) bool {
	return slices.ContainsFunc(judgedFirst, func(j firstJudged) bool { return j.name == name })
}

// validateFirst judges judgedFirst's fields and returns the operation.
func validateFirst(c Command, replyPrefix string) (Operation, error) {
	for _, j := range judgedFirst {
		if err := j.judge(c, replyPrefix); err != nil {
			return Operation{}, err
		}
	}
	op, _ := LookupOperation(c.Operation)
	return op, nil
}

// ValidReplyTo reports whether topic may receive replies: a legal topic name
// under the allowed prefix.
func ValidReplyTo(topic, prefix string) bool {
	return len(topic) > len(prefix) && topic[:len(prefix)] == prefix && ValidTopicName(topic)
}

func reject(c Command, code, format string, args ...any) *Rejection {
	return &Rejection{Code: code, Message: fmt.Sprintf(format, args...), Command: c}
}

// rejectField is reject's INVALID_REQUEST of one field's value.
func rejectField(c Command, field, format string, args ...any) *Rejection {
	r := reject(c, CodeInvalidRequest, format, args...)
	r.Field = field
	return r
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

// truncate keeps error messages bounded when they quote input, and valid
// UTF-8 (they go into an event's error_message and the dead-letter error
// header): it cuts at a character's start, and invalid bytes (json.Valid
// lets them through inside strings) become U+FFFD.
func truncate(s string) string {
	if len(s) > 64 {
		s = CutUTF8(s, 64) + "..."
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// CutUTF8 is s cut to at most n bytes at a character's start, so that a
// cut never splits one.
func CutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
