package topics

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// EncodeHeaders appends to dst how outbox.headers stores a record's headers:
// for each, its key and its value as a 4-byte big-endian length followed by
// the bytes (the form migration 002 writes in SQL). Cheaper to write and
// read than JSON, for the database and for the relay.
func EncodeHeaders(dst []byte, hs []Header) []byte {
	n := 0
	for _, h := range hs {
		n += 8 + len(h.Key) + len(h.Value)
	}
	if cap(dst)-len(dst) < n {
		// Grown once, rather than as the appends need (and not with
		// slices.Grow, which allocates twice under the race detector).
		dst = append(make([]byte, 0, len(dst)+n), dst...)
	}
	for _, h := range hs {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(h.Value)))
		dst = append(dst, h.Value...)
	}
	return dst
}

// eventHeadersForm starts the headers column of an event's row: the column
// stores only the event's source, and the value the event in
// CompactEvent's form; the record is the event, expanded, with EventHeaders
// of it and that source. stateHeadersForm is the whole column of a lock
// state's row: its value is CompactLockState of the state, its headers
// LockStateHeaders. Such rows are most of the outbox, and take 100–200
// bytes instead of 750 (compact.go). EncodeHeaders' form never starts with
// either byte: it starts with a key's length, 4 bytes big-endian, and no
// key is 16 MiB long.
const (
	eventHeadersForm = 0x01
	stateHeadersForm = 0x02
)

// LockStateHeaders are the headers of every lock state record.
func LockStateHeaders() []Header {
	return []Header{{Key: HeaderContentType, Value: []byte("application/json")}}
}

// EncodeLockStateHeaders appends the headers column of a lock state's row
// whose value is CompactLockState of the state.
func EncodeLockStateHeaders(dst []byte) []byte { return append(dst, stateHeadersForm) }

// EncodeEventHeaders appends the headers column of an event's row (see
// eventHeadersForm): the row's value is CompactEvent of an event e, whose
// headers are EventHeaders(e, source).
func EncodeEventHeaders(dst []byte, source string) []byte {
	return append(append(dst, eventHeadersForm), source...)
}

// DecodeOutboxRow returns the record an outbox row's value and headers
// columns hold: an event's row (EncodeEventHeaders) or a lock state's
// (EncodeLockStateHeaders) expanded, any other as EncodeHeaders wrote it.
func DecodeOutboxRow(value, headers []byte) ([]byte, []Header, error) {
	switch {
	case len(headers) == 1 && headers[0] == stateHeadersForm:
		v, err := ExpandLockState(value)
		if err != nil {
			return nil, nil, err
		}
		return v, LockStateHeaders(), nil
	case len(headers) == 0 || headers[0] != eventHeadersForm:
		hs, err := DecodeHeaders(headers)
		return value, hs, err
	}
	v, err := ExpandEvent(value)
	if err != nil {
		return nil, nil, err
	}
	e, err := DecodeEvent(v)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: the value is not the event they are derived from: %v", errCorruptHeaders, err)
	}
	return v, EventHeaders(e, string(headers[1:])), nil
}

// errCorruptHeaders is a headers column EncodeHeaders did not write.
var errCorruptHeaders = errors.New("corrupt headers")

// DecodeHeaders reads what EncodeHeaders wrote. It reads b twice, to
// check it and count the headers, then to make them, so that it allocates
// their slice once; the values are b's bytes, not copies.
func DecodeHeaders(b []byte) ([]Header, error) {
	n := 0
	for rest := b; len(rest) > 0; n++ {
		k, after, err := headerField(rest)
		if err != nil {
			return nil, fmt.Errorf("header %d: key: %w", n, err)
		}
		if _, rest, err = headerField(after); err != nil {
			return nil, fmt.Errorf("header %d (%q): value: %w", n, k, err)
		}
	}
	if n == 0 {
		return nil, nil
	}
	hs := make([]Header, 0, n)
	for len(b) > 0 {
		k, after, _ := headerField(b) // checked above
		v, rest, _ := headerField(after)
		hs = append(hs, Header{Key: headerName(k), Value: v})
		b = rest
	}
	return hs, nil
}

// headerField splits b into the field EncodeHeaders wrote at its start and
// the rest.
func headerField(b []byte) (field, rest []byte, err error) {
	if len(b) < 4 {
		return nil, nil, errCorruptHeaders
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(len(b)-4) < uint64(n) {
		return nil, nil, errCorruptHeaders
	}
	return b[4 : 4+n], b[4+n:], nil
}

// headerName is k as a string: for the names every event's row carries
// (EventHeaders, LockStateHeaders), the constant, which costs no
// allocation (the switch compares k in place); any other, a copy.
func headerName(k []byte) string {
	switch string(k) {
	case HeaderCESpecVersion:
		return HeaderCESpecVersion
	case HeaderCEID:
		return HeaderCEID
	case HeaderCESource:
		return HeaderCESource
	case HeaderCEType:
		return HeaderCEType
	case HeaderCETime:
		return HeaderCETime
	case HeaderContentType:
		return HeaderContentType
	case HeaderRequestID:
		return HeaderRequestID
	}
	return string(k)
}
