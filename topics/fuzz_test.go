package topics

import (
	"errors"
	"testing"
	"time"
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
	} {
		f.Add([]byte(s))
	}
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
		if _, err := Decode(enc, "locks.replies."); err != nil {
			t.Fatalf("re-decoding %s: %v", enc, err)
		}
	})
}

func mustTime(t *testing.T, s string) time.Time {
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
