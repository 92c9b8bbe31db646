package topics

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/omninode/lockworker/internal/fuzzseeds"
)

// FuzzDecode feeds untrusted bytes to the decoder and validator: it must never
// panic, and whatever it accepts must survive a round trip unchanged in meaning.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzseeds.Commands() {
		f.Add(s)
	}
	// Over MaxRecordBytes, a valid object: refused, but what answers it is read.
	f.Add([]byte(sized(`{"request_id":"r","operation":"acquire","lock_name":"a","owner_id":"o","reply_to":"locks.replies.x","pad":"`, `"}`, MaxRecordBytes+1)))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b, "locks.replies.")
		if err != nil {
			var r *Rejection
			if !errors.As(err, &r) {
				t.Fatalf("error is not a *Rejection: %v", err)
			}
			return
		}
		enc, err := c.Encode()
		if err != nil {
			t.Fatalf("encoding an accepted command: %v", err)
		}
		again, err := Decode(enc, "locks.replies.")
		if err != nil {
			t.Fatalf("re-decoding %s: %v", enc, err)
		}
		// The same command, up to the metadata's spacing and escapes.
		m1, m2 := c.OwnerMetadata, again.OwnerMetadata
		c.OwnerMetadata, again.OwnerMetadata = nil, nil
		if !reflect.DeepEqual(c, again) || !sameJSON(m1, m2) {
			t.Fatalf("round trip of %s changed it: %+v became %+v", b, c, again)
		}
		// Nothing accepted may be refused by PostgreSQL text or jsonb.
		for _, s := range []string{c.RequestID, c.Operation, c.Namespace, c.LockName, c.OwnerID, c.ReplyTo, c.SessionID, c.Reason, c.Mode} {
			if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
				t.Fatalf("accepted %q from %s", s, b)
			}
		}
		if len(m1) > 0 && (!utf8.Valid(m1) || hasNUL(m1)) {
			t.Fatalf("accepted metadata %s", m1)
		}
	})
}

// FuzzExpand feeds untrusted bytes to ExpandEvent and ExpandLockState and
// decodes what they give: the worker's token-floor check reads the
// lock.acquired topic's records this way, and any producer allowed to
// write to it (a buggy one, another principal) chooses them. Nothing may
// panic; a value not of the expander's form is given back as it is; one of
// it expands to at most maxCompacted bytes, or is refused as corrupt, and
// what it expands to is stored the same way again.
func FuzzExpand(f *testing.F) {
	at := NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ev := NewEvent(TypeAcquired, OpAcquire, "r", at.Time)
	ev.LockInfo = &LockInfo{Namespace: "ns", LockName: "a", OwnerID: "f:o", Status: "acquired", FencingToken: 7, AcquiredAt: &at, ExpiresAt: &at,
		LeaseDuration: 30, Mode: "exclusive", Limit: 2, Holders: []Holder{{OwnerID: "f:p", Mode: "shared", FencingToken: 6}}}
	plain, err := ev.Encode()
	if err != nil {
		f.Fatal(err)
	}
	compacted := CompactEvent(nil, plain)
	f.Add(plain)
	f.Add(compacted)
	f.Add(compacted[:len(compacted)/2])
	f.Add(CompactLockState(nil, []byte(`{"v":1,"lock_name":"a","holders":[]}`)))
	f.Add([]byte{compactEventForm})
	f.Add([]byte{compactEventForm, 0xff, 0xff, 0xff, 0xff, 0x0f})                         // a length of 4 GiB
	f.Add(append([]byte{compactStateForm}, binary.AppendUvarint(nil, maxCompacted+1)...)) // one byte past the bound
	f.Add([]byte(`{"v":1,"type":"lock.acquired","lock_info":{"fencing_token":-1,"holders":[{"fencing_token":9223372036854775807}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, x := range []struct {
			form    byte
			expand  func([]byte) ([]byte, error)
			compact func(dst, v []byte) []byte
		}{{compactEventForm, ExpandEvent, CompactEvent}, {compactStateForm, ExpandLockState, CompactLockState}} {
			v, err := x.expand(b)
			if len(b) == 0 || b[0] != x.form {
				if err != nil || !bytes.Equal(v, b) {
					t.Fatalf("a value of another form (%.20q) was not given back as it is: %q, %v", b, v, err)
				}
			} else if err != nil {
				if !errors.Is(err, errCorruptRecord) {
					t.Fatalf("refused with %v, not as corrupt", err)
				}
				continue
			} else if len(v) == 0 || len(v) > maxCompacted {
				t.Fatalf("expanded to %d bytes", len(v))
			} else if again, err := x.expand(x.compact(nil, v)); err != nil || !bytes.Equal(again, v) {
				t.Fatalf("what %.20q expands to is not stored the same way again: %v", b, err)
			}
			_, _ = DecodeEvent(v)
			_, _ = DecodeLockState(v)
		}
	})
}

func sameJSON(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

// hasNUL reports whether a decoded JSON value holds NUL in any key or string.
func hasNUL(m []byte) bool {
	var v any
	if err := json.Unmarshal(m, &v); err != nil {
		return true
	}
	var walk func(any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case string:
			return strings.ContainsRune(v, 0)
		case []any:
			for _, e := range v {
				if walk(e) {
					return true
				}
			}
		case map[string]any:
			for k, e := range v {
				if strings.ContainsRune(k, 0) || walk(e) {
					return true
				}
			}
		}
		return false
	}
	return walk(v)
}

func mustTime(t *testing.T, s string) time.Time {
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
