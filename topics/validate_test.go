package topics

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const prefix = "locks.replies."

func TestDecodeAccepts(t *testing.T) {
	for _, v := range []string{
		`{"operation":"acquire","lock_name":"a","owner_id":"o"}`,
		`{"v":1,"request_id":"r","operation":"acquire","namespace":"ns","lock_name":"a","owner_id":"o","lease_duration":0.1,"wait_timeout":3600,"owner_metadata":{"k":1},"reply_to":"locks.replies.svc","extra":true}`,
		`{"operation":"release","lock_name":"a","owner_id":"o","fencing_token":7}`,
		`{"operation":"extend","lock_name":"a","owner_id":"o","extension_duration":86400}`,
		`{"operation":"query","lock_name":"a"}`,
		`{"operation":"cleanup","lock_name":"*","max_age_seconds":0}`,
		`{"operation":"acquire","lock_name":"` + strings.Repeat("x", 255) + `","owner_id":"` + strings.Repeat("o", 255) + `","request_id":"` + strings.Repeat("r", 128) + `","namespace":"` + strings.Repeat("n", 64) + `"}`,
	} {
		_, err := Decode([]byte(v), prefix)
		require.NoError(t, err, v)
	}
}

func TestDecodeRejects(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	cases := []struct {
		name, value, code, msg string
	}{
		{"not json", `nope`, CodeInvalidRequest, "not a JSON object"},
		{"json array", `[1]`, CodeInvalidRequest, "not a JSON object"},
		{"json null", `null`, CodeInvalidRequest, "not a JSON object"},
		{"truncated", `{"operation":`, CodeInvalidRequest, "not a valid command"},
		{"too large", `{"x":"` + long(MaxRecordBytes) + `"}`, CodeInvalidRequest, "over the limit"},
		{"version 2", `{"v":2,"operation":"query","lock_name":"a"}`, CodeUnsupportedVersion, "version 2"},
		{"negative version", `{"v":-1,"operation":"query","lock_name":"a"}`, CodeInvalidRequest, "v must be 1"},
		{"wrong type", `{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":"30"}`, CodeInvalidRequest, "lease_duration"},
		{"token not integer", `{"operation":"release","lock_name":"a","owner_id":"o","fencing_token":1.5}`, CodeInvalidRequest, "fencing_token"},
		{"no operation", `{"lock_name":"a"}`, CodeInvalidRequest, "operation is required"},
		{"unknown operation", `{"operation":"steal","lock_name":"a"}`, CodeInvalidRequest, "unknown operation"},
		{"no lock name", `{"operation":"query"}`, CodeInvalidRequest, "lock_name is required"},
		{"lock name too long", `{"operation":"query","lock_name":"` + long(256) + `"}`, CodeInvalidRequest, "lock_name is 256 bytes"},
		{"lock name control char", `{"operation":"query","lock_name":"a\u0007"}`, CodeInvalidRequest, "printable"},
		{"star outside cleanup", `{"operation":"query","lock_name":"*"}`, CodeInvalidRequest, "only for cleanup"},
		{"namespace too long", `{"operation":"query","lock_name":"a","namespace":"` + long(65) + `"}`, CodeInvalidRequest, "namespace is 65 bytes"},
		{"request id too long", `{"operation":"query","lock_name":"a","request_id":"` + long(129) + `"}`, CodeInvalidRequest, "request_id is 129 bytes"},
		{"no owner", `{"operation":"acquire","lock_name":"a"}`, CodeInvalidRequest, "owner_id is required"},
		{"owner too long", `{"operation":"release","lock_name":"a","owner_id":"` + long(256) + `"}`, CodeInvalidRequest, "owner_id is 256 bytes"},
		{"lease too short", `{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":0.05}`, CodeInvalidRequest, "lease_duration"},
		{"lease too long", `{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":86401}`, CodeInvalidRequest, "lease_duration"},
		{"negative lease", `{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":-1}`, CodeInvalidRequest, "lease_duration"},
		{"wait too long", `{"operation":"acquire","lock_name":"a","owner_id":"o","wait_timeout":3601}`, CodeInvalidRequest, "wait_timeout"},
		{"negative wait", `{"operation":"acquire","lock_name":"a","owner_id":"o","wait_timeout":-1}`, CodeInvalidRequest, "wait_timeout"},
		{"metadata not object", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":[1]}`, CodeInvalidRequest, "JSON object"},
		{"metadata too large", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"k":"` + long(4096) + `"}}`, CodeInvalidRequest, "owner_metadata is"},
		{"extension too long", `{"operation":"extend","lock_name":"a","owner_id":"o","extension_duration":90000}`, CodeInvalidRequest, "extension_duration"},
		{"max age negative", `{"operation":"cleanup","lock_name":"*","max_age_seconds":-1}`, CodeInvalidRequest, "max_age_seconds"},
		{"reply outside prefix", `{"operation":"query","lock_name":"a","reply_to":"locks.commands"}`, CodeInvalidRequest, "reply_to"},
		{"reply bad chars", `{"operation":"query","lock_name":"a","reply_to":"locks.replies.a b"}`, CodeInvalidRequest, "reply_to"},
		{"reply is the bare prefix", `{"operation":"query","lock_name":"a","reply_to":"locks.replies."}`, CodeInvalidRequest, "reply_to"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.value), prefix)
			var r *Rejection
			require.ErrorAs(t, err, &r)
			require.Equal(t, tc.code, r.Code)
			require.Contains(t, r.Message, tc.msg)
		})
	}
}

func TestRejectionKeepsReplyTo(t *testing.T) {
	_, err := Decode([]byte(`{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":"x","reply_to":"locks.replies.me"}`), prefix)
	var r *Rejection
	require.ErrorAs(t, err, &r)
	require.Equal(t, "locks.replies.me", r.Command.ReplyTo)
}

func TestEventRoundTrip(t *testing.T) {
	ev := NewEvent(TypeAcquired, OpAcquire, "r1", mustTime(t, "2026-01-02T03:04:05.123456789Z"))
	ev.LockInfo = &LockInfo{LockName: "a", Status: StatusAcquired, FencingToken: 9}
	b, err := ev.Encode()
	require.NoError(t, err)
	require.Contains(t, string(b), `"occurred_at":"2026-01-02T03:04:05.123456Z"`)
	got, err := DecodeEvent(b)
	require.NoError(t, err)
	require.Equal(t, ev, got)
	h := EventHeaders(ev, "lockworker/x")
	require.Equal(t, Header{HeaderCEID, []byte(ev.EventID)}, h[1])
	require.Equal(t, Header{HeaderRequestID, []byte("r1")}, h[len(h)-1])
}
