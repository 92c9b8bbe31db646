package topics

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzDecode feeds untrusted bytes to the decoder and validator: it must never
// panic, and whatever it accepts must survive a round trip unchanged in meaning.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":1,"wait_timeout":2,"owner_metadata":{"a":[1,2]},"reply_to":"locks.replies.x"}`,
		`{"operation":"release","lock_name":"a","owner_id":"o","fencing_token":-5}`,
		`{"operation":"extend","lock_name":"a","owner_id":"o","extension_duration":1e2}`,
		`{"operation":"cleanup","lock_name":"*","max_age_seconds":1e308}`,
		`{"v":2}`, `{"owner_metadata": null, "operation":"acquire"}`, `{"lock_name":"\ud800"}`,
		``, `null`, `[]`, `{`, `{"operation":1}`, " \n{}",
		// Poison PostgreSQL refuses on every retry, and keys encoding/json folds.
		`{"operation":"acquire","lock_name":"a","owner_id":"o\u0000","request_id":"\u0000","reply_to":"locks.replies.\u0000"}`,
		`{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"a":[{"\u0000":"\u0000"}]}}`,
		`{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"k":"\ud83d","j":"\ud83d\ude00","n":[1e131072,0e-99999,1e308]}}`,
		"{\"operation\":\"acquire\",\"lock_name\":\"a\xff\",\"owner_id\":\"\xc3\",\"owner_metadata\":{\"\xed\xa0\x80\":1}}",
		`{"v":2,"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":"30s"}`,
		`{"v":99999999999999999999}`, `{"v":1.5}`, `{"v":"1"}`, `{"v":null,"V":2}`,
		`{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":0}`,
		`{"operation":"extend","lock_name":"a","owner_id":"o","extension_duration":-0.0}`,
		"{\"OPERATION\":\"acquire\",\"Lock_Name\":\"a\",\"loc\u212a_name\":\"b\",\"lock\\u005fname\":\"c\",\"lock_name\":\"d\"}",
		`{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":" "}`,
		`{"operation":"query","lock_name":"a\\u0000\\","x":{"y":["}",{"z":"]\""}]}}`,
		// Fields the operation does not read: dropped, not judged.
		`{"operation":"query","lock_name":"a","lease_duration":1e400,"max_age_seconds":-1e999}`,
		`{"operation":"query","lock_name":"a","owner_metadata":{"k":"\u0000","s":"\ud800"},"session_id":"\u0000"}`,
		`{"operation":"revoke","lock_name":"a","owner_id":"","reason":"r"}`,
		`{"operation":"acquire","lock_name":"a","owner_id":"o","session_id":""}`,
	} {
		f.Add([]byte(s))
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
