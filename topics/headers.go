package topics

import (
	"strings"
	"time"
)

// Header is one record header. It mirrors kgo.RecordHeader so this package
// stays free of I/O dependencies.
type Header struct {
	Key   string
	Value []byte
}

// Header names of docs/design.md ("Record headers", and the dead-letter
// headers of "Invalid records and the dead-letter topic").
const (
	HeaderCESpecVersion   = "ce_specversion"
	HeaderCEID            = "ce_id"
	HeaderCESource        = "ce_source"
	HeaderCEType          = "ce_type"
	HeaderCETime          = "ce_time"
	HeaderContentType     = "content-type"
	HeaderRequestID       = "request_id"
	HeaderError           = "error"
	HeaderSourceTopic     = "source_topic"
	HeaderSourcePartition = "source_partition"
	HeaderSourceOffset    = "source_offset"
	// Dead-letter copies cut to fit: HeaderTruncated lists what was cut
	// ("key", "value", "headers", comma-separated), and the others give the
	// original's sizes.
	HeaderTruncated           = "truncated"
	HeaderOriginalKeySize     = "original_key_size"
	HeaderOriginalValueSize   = "original_value_size"
	HeaderOriginalHeaderCount = "original_header_count"
	// HeaderAuthorization carries a command's requester token ("Bearer
	// <JWT>") when the workers require authentication. Dead-letter copies
	// carry it as RedactedToken: a valid token must not be replayable from
	// there.
	HeaderAuthorization = "authorization"
)

// BearerToken is the token of an authorization header's value: without
// its "Bearer" scheme, if it has one, whatever its case (RFC 7235), and
// trimmed.
func BearerToken(v string) string {
	v = strings.TrimSpace(v)
	if scheme, rest, ok := strings.Cut(v, " "); ok && strings.EqualFold(scheme, "Bearer") {
		v = strings.TrimSpace(rest)
	}
	return v
}

// RedactedToken replaces a token in dead-letter copies.
const RedactedToken = "(redacted)"

// EventHeaders returns the CloudEvents binary-mode headers of an event.
// source is "lockworker/<instance>".
func EventHeaders(e Event, source string) []Header {
	h := []Header{
		{HeaderCESpecVersion, []byte("1.0")},
		{HeaderCEID, []byte(e.EventID)},
		{HeaderCESource, []byte(source)},
		{HeaderCEType, []byte(e.Type)},
		{HeaderCETime, []byte(e.OccurredAt.UTC().Format(time.RFC3339Nano))},
		{HeaderContentType, []byte("application/json")},
	}
	if e.RequestID != "" {
		h = append(h, Header{HeaderRequestID, []byte(e.RequestID)})
	}
	return h
}
