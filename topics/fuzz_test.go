package topics

import (
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
