package topics

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

const prefix = "locks.replies."

// sized pads a record, between head and tail, with x to exactly n bytes.
func sized(head, tail string, n int) string {
	return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
}

func TestDecodeAccepts(t *testing.T) {
	cases := []struct{ name, value string }{
		{"minimal acquire", `{"operation":"acquire","lock_name":"a","owner_id":"o"}`},
		{"every field", `{"v":1,"request_id":"r","operation":"acquire","namespace":"ns","lock_name":"a","owner_id":"o","lease_duration":0.1,"wait_timeout":3600,"owner_metadata":{"k":1},"reply_to":"locks.replies.svc","extra":true}`},
		{"release with token", `{"operation":"release","lock_name":"a","owner_id":"o","fencing_token":7}`},
		{"extension at the top", `{"operation":"extend","lock_name":"a","owner_id":"o","extension_duration":86400}`},
		{"extension at the bottom", `{"operation":"extend","lock_name":"a","owner_id":"o","extension_duration":0.1}`},
		{"query", `{"operation":"query","lock_name":"a"}`},
		{"cleanup max age 0", `{"operation":"cleanup","lock_name":"*","max_age_seconds":0}`},
		{"cleanup max age at the top", `{"operation":"cleanup","lock_name":"*","max_age_seconds":315360000}`},
		{"strings at their limits", `{"operation":"acquire","lock_name":"` + strings.Repeat("x", 255) + `","owner_id":"` + strings.Repeat("o", 255) + `","request_id":"` + strings.Repeat("r", 128) + `","namespace":"` + strings.Repeat("n", 64) + `"}`},
		{"record of exactly the limit", sized(`{"operation":"query","lock_name":"a","pad":"`, `"}`, MaxRecordBytes)},
		{"metadata of exactly the limit", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":` + sized(`{"k": "`, `"}`, MaxOwnerMetadataBytes) + `}`},
		{"compact metadata of exactly the limit as jsonb writes it", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":` + sized(`{"k":"`, `"}`, MaxOwnerMetadataBytes-1) + `}`},
		{"null fields are absent", `{"v":null,"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":null,"request_id":null,"owner_metadata":null}`},
		{"zero on an operation that ignores it", `{"operation":"release","lock_name":"a","owner_id":"o","lease_duration":0,"extension_duration":0}`},
		{"miscased V is an unknown field", `{"V":2,"operation":"query","lock_name":"a"}`},
		{"surrogate pair and escapes in metadata", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"e":"\ud83d\ude00","b":"\\u0000","n":[1e308,-1e-300,0e-999]}}`},
		{"escaped backslash before u0000 in a name", `{"operation":"query","lock_name":"a\\u0000"}`},
		{"shared", `{"operation":"acquire","lock_name":"a","owner_id":"o","mode":"shared"}`},
		{"shared with limit 1", `{"operation":"acquire","lock_name":"a","owner_id":"o","mode":"shared","limit":1}`},
		{"exclusive semaphore at the top", `{"operation":"acquire","lock_name":"a","owner_id":"o","mode":"exclusive","limit":10000}`},
		{"mode and limit on an operation that ignores them", `{"operation":"release","lock_name":"a","owner_id":"o","mode":"sideways","limit":0}`},
		{"numbers past their type's range on an operation that ignores them", `{"operation":"query","lock_name":"a","lease_duration":1e400,"max_age_seconds":-1e999,"limit":123456789012345678901234567890}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.value), prefix)
			require.NoError(t, err, tc.value)
		})
	}
}

// TestDecodeReads checks what Decode makes of keys and values encoding/json
// would have read differently.
func TestDecodeReads(t *testing.T) {
	f := 5.0
	cases := []struct {
		name, value string
		want        Command
	}{
		{"miscased key does not override", `{"operation":"query","lock_name":"a","LOCK_NAME":"b","Lock_Name":"c"}`,
			Command{Operation: OpQuery, LockName: "a"}},
		{"kelvin and long s do not fold", "{\"operation\":\"query\",\"lock_name\":\"a\",\"name\u017fpace\":\"x\",\"loc\u212a_name\":\"y\"}",
			Command{Operation: OpQuery, LockName: "a"}},
		{"escaped key is its unescaped name", `{"operation":"query","lock\u005fname":"a"}`,
			Command{Operation: OpQuery, LockName: "a"}},
		{"escapes in values", `{"operation":"query","lock_name":"a\u0026b\/c\u00e9\ud83d\ude00"}`,
			Command{Operation: OpQuery, LockName: "a&b/c\u00e9\U0001F600"}},
		{"last of a repeated key wins", `{"operation":"query","lock_name":"a","lock_name":"b"}`,
			Command{Operation: OpQuery, LockName: "b"}},
		{"absent lease is 0, the default", `{"operation":"acquire","lock_name":"a","owner_id":"o"}`,
			Command{Operation: OpAcquire, LockName: "a", OwnerID: "o"}},
		{"numbers", `{"v":1,"operation":"cleanup","lock_name":"*","max_age_seconds":5e0}`,
			Command{V: 1, Operation: OpCleanup, LockName: "*", MaxAgeSeconds: &f}},
		{"negative zero token", `{"operation":"release","lock_name":"a","owner_id":"o","fencing_token":-0}`,
			Command{Operation: OpRelease, LockName: "a", OwnerID: "o", FencingToken: new(int64)}},
		// What the operation does not read changes nothing downstream, and
		// is not judged: a number past float64's range, metadata PostgreSQL
		// would refuse.
		{"fields the operation ignores are dropped", `{"operation":"query","lock_name":"a","session_id":"s","lease_duration":1e400,` +
			`"owner_metadata":{"k":"\u0000"},"fencing_token":3,"mode":"shared","reason":"r","max_age_seconds":-1e999}`,
			Command{Operation: OpQuery, LockName: "a"}},
		{"mode and limit", `{"operation":"acquire","lock_name":"a","owner_id":"o","mode":"shared","limit":1}`,
			Command{Operation: OpAcquire, LockName: "a", OwnerID: "o", Mode: ModeShared, Limit: 1}},
		{"metadata kept as written", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata": { "k" : [1, 2] } }`,
			Command{Operation: OpAcquire, LockName: "a", OwnerID: "o", OwnerMetadata: []byte(`{ "k" : [1, 2] }`)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode([]byte(tc.value), prefix)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
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
		{"unknown mode", `{"operation":"acquire","lock_name":"a","owner_id":"o","mode":"read"}`, CodeInvalidRequest, "mode \"read\" is not exclusive or shared"},
		{"mode not a string", `{"operation":"acquire","lock_name":"a","owner_id":"o","mode":1}`, CodeInvalidRequest, "mode"},
		{"explicit limit 0", `{"operation":"acquire","lock_name":"a","owner_id":"o","limit":0}`, CodeInvalidRequest, "limit 0 is outside"},
		// Read as absent, "" would change what the command does: an
		// acquire outside the session its owner counts on, a revoke of
		// every holder instead of one.
		{"explicit empty session_id", `{"operation":"acquire","lock_name":"a","owner_id":"o","session_id":""}`, CodeInvalidRequest, `session_id "" is outside 1..128 bytes`},
		{"explicit empty owner_id of a revoke", `{"operation":"revoke","lock_name":"a","owner_id":"","reason":"r"}`, CodeInvalidRequest, `owner_id "" is outside 1..255 bytes`},
		{"limit too large", `{"operation":"acquire","lock_name":"a","owner_id":"o","limit":10001}`, CodeInvalidRequest, "limit 10001 is outside"},
		{"negative limit", `{"operation":"acquire","lock_name":"a","owner_id":"o","limit":-2}`, CodeInvalidRequest, "limit -2 is outside"},
		{"limit not an integer", `{"operation":"acquire","lock_name":"a","owner_id":"o","limit":2.5}`, CodeInvalidRequest, "limit must be an integer"},
		{"shared semaphore", `{"operation":"acquire","lock_name":"a","owner_id":"o","mode":"shared","limit":2}`, CodeInvalidRequest, "mode shared takes none"},
		{"reply outside prefix", `{"operation":"query","lock_name":"a","reply_to":"locks.commands"}`, CodeInvalidRequest, "reply_to"},
		{"reply bad chars", `{"operation":"query","lock_name":"a","reply_to":"locks.replies.a b"}`, CodeInvalidRequest, "reply_to"},
		{"reply is the bare prefix", `{"operation":"query","lock_name":"a","reply_to":"locks.replies."}`, CodeInvalidRequest, "reply_to"},

		// Poison: PostgreSQL refuses these on every retry (22021, 22P05, 22P02, 22003).
		{"NUL in owner_id", `{"operation":"acquire","lock_name":"a","owner_id":"o\u0000"}`, CodeInvalidRequest, "owner_id must be UTF-8 without NUL"},
		{"NUL in owner_id of a query", `{"operation":"query","lock_name":"a","owner_id":"\u0000"}`, CodeInvalidRequest, "owner_id must be UTF-8 without NUL"},
		{"NUL in request_id", `{"operation":"query","lock_name":"a","request_id":"r\u0000"}`, CodeInvalidRequest, "request_id must be UTF-8 without NUL"},
		{"NUL in namespace", `{"operation":"query","lock_name":"a","namespace":"\u0000"}`, CodeInvalidRequest, "namespace must be printable"},
		{"NUL in lock_name", `{"operation":"query","lock_name":"a\u0000"}`, CodeInvalidRequest, "lock_name must be printable"},
		{"NUL in reply_to", `{"operation":"query","lock_name":"a","reply_to":"locks.replies.a\u0000"}`, CodeInvalidRequest, "reply_to"},
		{"NUL in operation", `{"operation":"query\u0000","lock_name":"a"}`, CodeInvalidRequest, "unknown operation"},
		{"invalid UTF-8 in owner_id", `{"operation":"acquire","lock_name":"a","owner_id":"o` + "\xff" + `"}`, CodeInvalidRequest, "owner_id is not valid UTF-8"},
		{"invalid UTF-8 in lock_name", `{"operation":"query","lock_name":"a` + "\xc3" + `"}`, CodeInvalidRequest, "lock_name is not valid UTF-8"},
		{"invalid UTF-8 in request_id with an escape", `{"operation":"query","lock_name":"a","request_id":"\n` + "\xfe" + `"}`, CodeInvalidRequest, "request_id is not valid UTF-8"},
		{"lone surrogate in owner_id", `{"operation":"acquire","lock_name":"a","owner_id":"\ud800"}`, CodeInvalidRequest, "owner_id is not valid UTF-8"},
		{"lone low surrogate in lock_name", `{"operation":"query","lock_name":"\udc00\ud800"}`, CodeInvalidRequest, "lock_name is not valid UTF-8"},
		{"metadata NUL in a value", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"k":"a\u0000"}}`, CodeInvalidRequest, `owner_metadata holds \u0000`},
		{"metadata NUL in a key", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"\u0000":1}}`, CodeInvalidRequest, `owner_metadata holds \u0000`},
		{"metadata NUL nested", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"a":[{"b":{"c\\\u0000":[]}}]}}`, CodeInvalidRequest, `owner_metadata holds \u0000`},
		{"metadata invalid UTF-8", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"k":"` + "\xff" + `"}}`, CodeInvalidRequest, "owner_metadata is not valid UTF-8"},
		{"metadata invalid UTF-8 in a key", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"` + "\xed\xa0\x80" + `":1}}`, CodeInvalidRequest, "owner_metadata is not valid UTF-8"},
		{"metadata lone surrogate", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"k":["\ud83d"]}}`, CodeInvalidRequest, "owner_metadata holds a lone UTF-16 surrogate"},
		{"metadata reversed surrogates", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"k":"\ude00\ud83d"}}`, CodeInvalidRequest, "owner_metadata holds a lone UTF-16 surrogate"},
		{"metadata number past numeric", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"k":1e131072}}`, CodeInvalidRequest, "owner_metadata holds the number 1e131072"},
		{"metadata zero with a huge exponent", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"k":[0e-99999]}}`, CodeInvalidRequest, "owner_metadata holds the number 0e-99999"},
		{"metadata numbers written out past the limit", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"k":[` +
			strings.TrimSuffix(strings.Repeat("0e-999,", 10), ",") + `]}}`, CodeInvalidRequest, "owner_metadata is 10037 bytes as PostgreSQL's jsonb writes it out"},
		{"compact metadata past the limit as jsonb writes it", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":` + sized(`{"k":"`, `"}`, MaxOwnerMetadataBytes) + `}`,
			CodeInvalidRequest, "owner_metadata is 4097 bytes as PostgreSQL's jsonb writes it out (a space after each , and :, numbers in full: 1e3 as 1000), over the limit of 4096"},
		{"metadata of short items past the limit with jsonb's spaces", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"a":[` +
			strings.TrimSuffix(strings.Repeat("1,", 2040), ",") + `]}}`, CodeInvalidRequest, "owner_metadata is 6127 bytes as PostgreSQL's jsonb writes it out"},
		{"metadata number past float64", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"k":-1e309}}`, CodeInvalidRequest, "owner_metadata holds the number -1e309"},

		// The version decides first.
		{"version 2 with a wrong type", `{"v":2,"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":"30s"}`, CodeUnsupportedVersion, "version 2"},
		{"version 2 with poison", `{"v":2,"operation":"acquire","lock_name":"\u0000","owner_id":"` + "\xff" + `","lease_duration":0}`, CodeUnsupportedVersion, "version 2"},
		{"version 2 after the fields", `{"operation":7,"lock_name":[],"v":2}`, CodeUnsupportedVersion, "version 2"},
		{"version past int", `{"v":99999999999999999999,"operation":"query","lock_name":"a"}`, CodeUnsupportedVersion, "version 99999999999999999999"},
		{"version not an integer", `{"v":1.5,"operation":"query","lock_name":"a"}`, CodeInvalidRequest, "v must be an integer, got 1.5"},
		{"version with an exponent", `{"v":1e0,"operation":"query","lock_name":"a"}`, CodeInvalidRequest, "v must be an integer"},
		{"version a string", `{"v":"1","operation":"query","lock_name":"a"}`, CodeInvalidRequest, `v must be an integer, got "1"`},
		{"version a string of 2", `{"v":"2","operation":"query","lock_name":"a"}`, CodeInvalidRequest, "v must be an integer"},
		{"version below int", `{"v":-99999999999999999999,"operation":"query","lock_name":"a"}`, CodeInvalidRequest, "v must be 1"},

		// Explicit zeros: only an absent field means the default.
		{"lease 0", `{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":0}`, CodeInvalidRequest, "lease_duration 0 is outside"},
		{"lease -0", `{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":-0.0}`, CodeInvalidRequest, "lease_duration -0.0 is outside"},
		{"lease 0e5", `{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":0e5}`, CodeInvalidRequest, "lease_duration 0e5 is outside"},
		{"extension 0", `{"operation":"extend","lock_name":"a","owner_id":"o","extension_duration":0}`, CodeInvalidRequest, "extension_duration 0 is outside"},
		{"extension negative", `{"operation":"extend","lock_name":"a","owner_id":"o","extension_duration":-1}`, CodeInvalidRequest, "extension_duration -1 is outside"},

		// Keys match exactly; a miscased one is unknown, hence ignored.
		{"miscased operation", `{"OPERATION":"acquire","lock_name":"a","owner_id":"o"}`, CodeInvalidRequest, "operation is required"},
		{"miscased lock_name", `{"operation":"query","Lock_Name":"a"}`, CodeInvalidRequest, "lock_name is required"},
		{"miscased owner_id", `{"operation":"release","lock_name":"a","Owner_ID":"o"}`, CodeInvalidRequest, "owner_id is required"},
		{"kelvin-sign lock_name", "{\"operation\":\"query\",\"loc\u212a_name\":\"a\"}", CodeInvalidRequest, "lock_name is required"},

		// Limits enforced before, untested until now.
		{"extension too short", `{"operation":"extend","lock_name":"a","owner_id":"o","extension_duration":0.05}`, CodeInvalidRequest, "extension_duration 0.05 is outside"},
		{"max age too long", `{"operation":"cleanup","lock_name":"*","max_age_seconds":315360001}`, CodeInvalidRequest, "max_age_seconds 315360001 is outside"},
		{"extend without owner", `{"operation":"extend","lock_name":"a"}`, CodeInvalidRequest, "owner_id is required for extend"},
		{"record one byte over", sized(`{"operation":"query","lock_name":"a","pad":"`, `"}`, MaxRecordBytes+1), CodeInvalidRequest, "65537 bytes, over the limit of 65536"},
		{"metadata one byte over", `{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":` + sized(`{"k":"`, `"}`, MaxOwnerMetadataBytes+1) + `}`, CodeInvalidRequest, "owner_metadata is 4097 bytes, over the limit of 4096"},
		{"token past int64", `{"operation":"release","lock_name":"a","owner_id":"o","fencing_token":9223372036854775808}`, CodeInvalidRequest, "fencing_token must be a 64-bit integer"},
		{"lease past float64", `{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":1e400}`, CodeInvalidRequest, "lease_duration past a float64's range is outside 0.1..86400 seconds"},
		{"limit past int", `{"operation":"acquire","lock_name":"a","owner_id":"o","limit":-123456789012345678901234567890}`, CodeInvalidRequest, "limit is past a 64-bit integer's range, outside 1..10000"},
		{"max age past float64", `{"operation":"cleanup","lock_name":"*","max_age_seconds":1e999}`, CodeInvalidRequest, "max_age_seconds past a float64's range is outside"},
		{"string for a string field", `{"operation":"query","lock_name":5}`, CodeInvalidRequest, "lock_name must be a string, got 5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rejected(t, tc.value, tc.code)
			require.Contains(t, r.Message, tc.msg)
		})
	}
}

// A record without a value (a Kafka tombstone) or with an empty one is
// refused like any other record that is not a command.
func TestDecodeRejectsNullAndEmptyValues(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value []byte
		msg   string
	}{
		{"null value", nil, "record value is null (a Kafka tombstone)"},
		{"empty value", []byte{}, "record value is empty"},
		{"only spaces", []byte(" \n\t"), "not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.value, prefix)
			var r *Rejection
			require.ErrorAs(t, err, &r)
			require.Equal(t, CodeInvalidRequest, r.Code)
			require.Contains(t, r.Message, tc.msg)
		})
	}
}

// Field names the field refused, for callers that word it in their own
// terms; not one field's refusal has none.
func TestRejectionField(t *testing.T) {
	for _, tc := range []struct {
		value, field string
	}{
		{`{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":1e9}`, "lease_duration"},
		{`{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":0}`, "lease_duration"}, // Decode's own check
		{`{"operation":"acquire","lock_name":"a","owner_id":"o","limit":20000}`, "limit"},
		{`{"operation":"cleanup","lock_name":"*","max_age_seconds":-1}`, "max_age_seconds"},
		{`{"operation":"acquire","lock_name":"a\u0001","owner_id":"o"}`, "lock_name"},
		{`{"operation":"frob","lock_name":"a"}`, ""},
		{`{"operation":"acquire","owner_id":"o","lock_name":"*"}`, ""},
	} {
		_, err := Decode([]byte(tc.value), prefix)
		var r *Rejection
		require.ErrorAs(t, err, &r, tc.value)
		require.Equal(t, tc.field, r.Field, "%s: %s", tc.value, r.Message)
	}
}

func TestRejectionKeepsReplyTo(t *testing.T) {
	_, err := Decode([]byte(`{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":"x","reply_to":"locks.replies.me"}`), prefix)
	var r *Rejection
	require.ErrorAs(t, err, &r)
	require.Equal(t, "locks.replies.me", r.Command.ReplyTo)
}

// TestRejectionKeepsCommand: whatever could be read still reaches the
// rejection, so the worker can answer the requester.
func TestRejectionKeepsCommand(t *testing.T) {
	cases := []struct {
		name, value, code             string
		requestID, operation, replyTo string
	}{
		{"version 2, wrong lease type", `{"v":2,"request_id":"r1","operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":"30s","reply_to":"locks.replies.me"}`,
			CodeUnsupportedVersion, "r1", OpAcquire, "locks.replies.me"},
		{"version 2, reply_to first", `{"reply_to":"locks.replies.me","operation":"query","v":2,"request_id":"r2"}`,
			CodeUnsupportedVersion, "r2", OpQuery, "locks.replies.me"},
		{"version 2, unreadable request_id", `{"v":2,"request_id":7,"operation":"query","reply_to":"locks.replies.me"}`,
			CodeUnsupportedVersion, "", OpQuery, "locks.replies.me"},
		{"wrong type after reply_to", `{"reply_to":"locks.replies.me","request_id":"r3","operation":"release","fencing_token":"x"}`,
			CodeInvalidRequest, "r3", OpRelease, "locks.replies.me"},
		{"poisoned owner_id", `{"request_id":"r4","operation":"acquire","lock_name":"a","owner_id":"\u0000","reply_to":"locks.replies.me"}`,
			CodeInvalidRequest, "r4", OpAcquire, "locks.replies.me"},
		{"poisoned metadata", `{"request_id":"r5","operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"\u0000":0},"reply_to":"locks.replies.me"}`,
			CodeInvalidRequest, "r5", OpAcquire, "locks.replies.me"},
		{"explicit zero lease", `{"request_id":"r6","operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":0,"reply_to":"locks.replies.me"}`,
			CodeInvalidRequest, "r6", OpAcquire, "locks.replies.me"},
		{"v not an integer", `{"v":"1","request_id":"r7","operation":"query","lock_name":"a","reply_to":"locks.replies.me"}`,
			CodeInvalidRequest, "r7", OpQuery, "locks.replies.me"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rejected(t, tc.value, tc.code)
			require.Equal(t, tc.requestID, r.Command.RequestID)
			require.Equal(t, tc.operation, r.Command.Operation)
			require.Equal(t, tc.replyTo, r.Command.ReplyTo)
		})
	}
}

// TestDecodeAnswersOverSize: a value over MaxRecordBytes is refused for
// its size, but what answers and keys its rejection is still read, so the
// rejection is answered (docs/design.md: a rejection carries whatever
// request_id, operation and reply_to could be read); past
// maxReadRecordBytes nothing is parsed.
func TestDecodeAnswersOverSize(t *testing.T) {
	over := func(head string, n int) *Rejection {
		t.Helper()
		r := rejected(t, sized(head+`"pad":"`, `"}`, n), CodeInvalidRequest)
		require.Equal(t, fmt.Sprintf("record value is %d bytes, over the limit of %d", n, MaxRecordBytes), r.Message)
		return r
	}
	const valid = `{"request_id":"r1","operation":"release","namespace":"ns","lock_name":"a","owner_id":"o","fencing_token":7,"reply_to":"locks.replies.me",`

	r := over(valid, 70_000)
	require.Equal(t, Command{RequestID: "r1", Operation: OpRelease, Namespace: "ns", LockName: "a", ReplyTo: "locks.replies.me"}, r.Command,
		"what answers and keys it is kept, nothing else")
	require.Equal(t, "ns/a", r.Command.Key())
	r = over(`{"request_id":"r1","operation":"release","lock_name":"a","fencing_token":"x","reply_to":"locks.replies.me",`, 70_000)
	require.Equal(t, "r1", r.Command.RequestID, "the other fields are not judged")

	r = over(`{"operation":"session_close","session_id":"s1","reply_to":"locks.replies.me",`, 70_000)
	require.Equal(t, "session:s1", r.Command.Key(), "a session command is keyed by its session")

	r = over(valid, maxReadRecordBytes)
	require.Equal(t, "locks.replies.me", r.Command.ReplyTo, "the largest value still read")

	r = over(valid, maxReadRecordBytes+1)
	require.Equal(t, Command{}, r.Command, "past the outer bound nothing is read")

	// Kept only where valid, so the answer is no larger than any other's.
	r = over(`{"request_id":"`+strings.Repeat("r", 129)+`","operation":"steal","namespace":"n\u0000","lock_name":"`+strings.Repeat("l", 256)+`","reply_to":"locks.replies.me",`, 70_000)
	require.Equal(t, Command{ReplyTo: "locks.replies.me"}, r.Command)
	r = over(`{"request_id":"r1","operation":"query","lock_name":"a","reply_to":"locks.commands",`, 70_000)
	require.Empty(t, r.Command.ReplyTo, "a reply_to outside the prefix answers nothing")

	// Not a JSON object, or not valid JSON: refused for its size, unread.
	for _, v := range []string{`[` + strings.Repeat(`"x",`, 20_000) + `1]`, `{"reply_to":"locks.replies.me","pad":"` + strings.Repeat("x", 70_000)} {
		r = rejected(t, v, CodeInvalidRequest)
		require.Contains(t, r.Message, "over the limit of 65536")
		require.Equal(t, Command{}, r.Command)
	}
}

// TestDecodeJudgesOperationFirst: a missing or unknown operation is the
// problem told, not the fields it would have named (a session command has
// no lock_name); only the version and reply_to come before it.
func TestDecodeJudgesOperationFirst(t *testing.T) {
	for _, tc := range []struct{ name, value, code, msg, field string }{
		{"no operation, no lock_name", `{"request_id":"r","reply_to":"locks.replies.me"}`, CodeInvalidRequest, "operation is required", ""},
		{"operation misspelt", `{"op":"acquire","owner_id":"o","reply_to":"locks.replies.me"}`, CodeInvalidRequest, "operation is required", ""},
		{"session command without operation", `{"session_id":"s","owner_id":"o"}`, CodeInvalidRequest, "operation is required", ""},
		{"unknown operation, no lock_name", `{"operation":"steal"}`, CodeInvalidRequest, "unknown operation \"steal\"", ""},
		{"no operation, a lock_name too long", `{"lock_name":"` + strings.Repeat("x", 256) + `"}`, CodeInvalidRequest, "operation is required", ""},
		{"no operation, a lock_name of the wrong type", `{"lock_name":5}`, CodeInvalidRequest, "operation is required", ""},
		{"no operation, a bad request_id", `{"request_id":"\u0000"}`, CodeInvalidRequest, "operation is required", ""},
		{"operation of the wrong type", `{"operation":1,"lock_name":5}`, CodeInvalidRequest, "operation must be a string", ""},
		// Before it: the version, and reply_to, which decides whether the
		// rejection is answered at all.
		{"no operation, version 2", `{"v":2}`, CodeUnsupportedVersion, "version 2", ""},
		{"no operation, v not an integer", `{"v":"1"}`, CodeInvalidRequest, "v must be an integer", ""},
		{"no operation, reply_to outside the prefix", `{"reply_to":"locks.commands"}`, CodeInvalidRequest, `reply_to "locks.commands" is not a topic name`, "reply_to"},
		{"no operation, reply_to of the wrong type", `{"reply_to":5}`, CodeInvalidRequest, "reply_to must be a string", ""},
		{"operation of the wrong type, reply_to outside the prefix", `{"operation":1,"reply_to":"locks.commands"}`, CodeInvalidRequest,
			`reply_to "locks.commands" is not a topic name`, "reply_to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rejected(t, tc.value, tc.code)
			require.Contains(t, r.Message, tc.msg)
			require.Equal(t, tc.field, r.Field)
		})
	}
	// Validate, for a command built in Go, judges in the same order.
	err := Validate(Command{ReplyTo: "locks.replies.me"}, prefix)
	require.ErrorContains(t, err, "operation is required")
	err = Validate(Command{ReplyTo: "elsewhere"}, prefix)
	require.ErrorContains(t, err, "reply_to")
}

// TestValidate covers commands built in Go (lockctl, the client), which never
// went through Decode's JSON checks.
func TestValidate(t *testing.T) {
	acq := func(f func(*Command)) Command {
		c := Command{Operation: OpAcquire, LockName: "a", OwnerID: "o"}
		f(&c)
		return c
	}
	revoke := func(f func(*Command)) Command {
		c := Command{Operation: OpRevoke, LockName: "a", Reason: "why"}
		f(&c)
		return c
	}
	cases := []struct {
		name      string
		cmd       Command
		code, msg string // code "": accepted
	}{
		{"no metadata", acq(func(c *Command) {}), "", ""},
		{"empty metadata", acq(func(c *Command) { c.OwnerMetadata = []byte{} }), "", ""},
		{"null metadata", acq(func(c *Command) { c.OwnerMetadata = []byte(" null ") }), "", ""},
		{"metadata object", acq(func(c *Command) { c.OwnerMetadata = []byte("\n{\"k\":1}\t") }), "", ""},
		{"metadata only a space", acq(func(c *Command) { c.OwnerMetadata = []byte(" ") }), CodeInvalidRequest, "owner_metadata must be a JSON object"},
		{"metadata only whitespace", acq(func(c *Command) { c.OwnerMetadata = []byte("\n\t\r ") }), CodeInvalidRequest, "owner_metadata must be a JSON object"},
		{"metadata not JSON", acq(func(c *Command) { c.OwnerMetadata = []byte(`{"k":`) }), CodeInvalidRequest, "owner_metadata must be a JSON object"},
		{"metadata with NUL", acq(func(c *Command) { c.OwnerMetadata = []byte(`{"k":"\u0000"}`) }), CodeInvalidRequest, `owner_metadata holds \u0000`},
		{"metadata invalid UTF-8", acq(func(c *Command) { c.OwnerMetadata = []byte("{\"k\":\"\xff\"}") }), CodeInvalidRequest, "owner_metadata is not valid UTF-8"},
		{"owner_id with NUL", acq(func(c *Command) { c.OwnerID = "o\x00" }), CodeInvalidRequest, "owner_id must be UTF-8 without NUL"},
		{"owner_id invalid UTF-8", acq(func(c *Command) { c.OwnerID = "o\xff" }), CodeInvalidRequest, "owner_id must be UTF-8 without NUL"},
		{"request_id with NUL", acq(func(c *Command) { c.RequestID = "\x00" }), CodeInvalidRequest, "request_id must be UTF-8 without NUL"},
		{"request_id invalid UTF-8", acq(func(c *Command) { c.RequestID = "\xc3" }), CodeInvalidRequest, "request_id must be UTF-8 without NUL"},
		{"namespace with NUL", acq(func(c *Command) { c.Namespace = "n\x00" }), CodeInvalidRequest, "namespace must be printable"},
		{"lock_name with NUL", acq(func(c *Command) { c.LockName = "\x00" }), CodeInvalidRequest, "lock_name must be printable"},
		{"reply_to with NUL", acq(func(c *Command) { c.ReplyTo = prefix + "\x00" }), CodeInvalidRequest, "reply_to"},
		{"lease NaN", acq(func(c *Command) { c.LeaseDuration = math.NaN() }), CodeInvalidRequest, "lease_duration NaN"},
		{"wait NaN", acq(func(c *Command) { c.WaitTimeout = math.NaN() }), CodeInvalidRequest, "wait_timeout NaN"},
		{"version 2", acq(func(c *Command) { c.V = 2 }), CodeUnsupportedVersion, "version 2"},
		{"lock_delay at its bound", acq(func(c *Command) { c.LockDelay = MaxLockDelaySeconds }), "", ""},
		{"lock_delay over", acq(func(c *Command) { c.LockDelay = 60.5 }), CodeInvalidRequest, "lock_delay 60.5 is outside 0..60 seconds"},
		{"lock_delay negative", acq(func(c *Command) { c.LockDelay = -1 }), CodeInvalidRequest, "lock_delay -1 is outside"},
		{"max_hold", acq(func(c *Command) { c.MaxHold = 3600 }), "", ""},
		{"max_hold tiny", acq(func(c *Command) { c.MaxHold = 0.01 }), CodeInvalidRequest, "max_hold 0.01 is outside 0.1..604800 seconds"},
		{"max_hold NaN", acq(func(c *Command) { c.MaxHold = math.NaN() }), CodeInvalidRequest, "max_hold NaN"},
		{"revoke", revoke(func(c *Command) {}), "", ""},
		{"revoke one owner", revoke(func(c *Command) { c.OwnerID = "o" }), "", ""},
		{"revoke without reason", revoke(func(c *Command) { c.Reason = "" }), CodeInvalidRequest, "reason is required for revoke"},
		{"revoke reason too long", revoke(func(c *Command) { c.Reason = strings.Repeat("r", MaxReasonBytes+1) }), CodeInvalidRequest, "reason is 1025 bytes"},
		{"revoke reason with NUL", revoke(func(c *Command) { c.Reason = "\x00" }), CodeInvalidRequest, "reason must be UTF-8 without NUL"},
		{"revoke owner too long", revoke(func(c *Command) { c.OwnerID = strings.Repeat("o", MaxOwnerIDBytes+1) }), CodeInvalidRequest, "owner_id is 256 bytes"},
		{"revoke of every lock", revoke(func(c *Command) { c.LockName = CleanupAll }), CodeInvalidRequest, "only for cleanup"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			require.NotPanics(t, func() { err = Validate(tc.cmd, prefix) })
			if tc.code == "" {
				require.NoError(t, err)
				return
			}
			var r *Rejection
			require.ErrorAs(t, err, &r)
			require.Equal(t, tc.code, r.Code)
			require.Contains(t, r.Message, tc.msg)
		})
	}
}

// SecondsProblem is the range rule of commands' durations, and the
// client's for replies': bounds included, 0 not read as "not given", NaN
// and values past float64's range outside; its wording is error_message's.
func TestSecondsProblem(t *testing.T) {
	cases := []struct {
		v    float64
		want string // "": within
	}{
		{MinLeaseSeconds, ""},
		{60, ""},
		{MaxLeaseSeconds, ""},
		{0, "lease_duration 0 is outside 0.1..86400 seconds"},
		{math.Copysign(0, -1), "lease_duration -0 is outside 0.1..86400 seconds"},
		{0.09, "lease_duration 0.09 is outside 0.1..86400 seconds"},
		{86400.5, "lease_duration 86400.5 is outside 0.1..86400 seconds"},
		{math.NaN(), "lease_duration NaN is outside 0.1..86400 seconds"},
		{math.Inf(1), "lease_duration past a float64's range is outside 0.1..86400 seconds"},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, SecondsProblem("lease_duration", tc.v, MinLeaseSeconds, MaxLeaseSeconds), "%v", tc.v)
	}
	require.Equal(t, "ttl 0.5 is outside 1..3600 seconds", SecondsProblem("ttl", 0.5, MinSessionTTLSeconds, MaxSessionTTLSeconds))

	// A 0 written in a command is judged by Decode, with the same range.
	for value, want := range map[string]string{
		`{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":0}`:   "lease_duration 0 is outside 0.1..86400 seconds",
		`{"operation":"session_open","session_id":"s","owner_id":"o","ttl":0}`:        "ttl 0 is outside 1..3600 seconds",
		`{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":1e6}`: "lease_duration 1000000 is outside 0.1..86400 seconds",
	} {
		_, err := Decode([]byte(value), prefix)
		var r *Rejection
		require.ErrorAs(t, err, &r, value)
		require.Equal(t, want, r.Message, value)
	}
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

// rejected decodes value and returns its Rejection, which must have code.
func rejected(t *testing.T, value, code string) *Rejection {
	t.Helper()
	_, err := Decode([]byte(value), prefix)
	var r *Rejection
	require.ErrorAs(t, err, &r)
	require.Equal(t, code, r.Code)
	return r
}

// numericLen is the length of PostgreSQL's text for the number (the
// lengths below are jsonb's own; TestMetadataSizeAsPostgreSQL compares many
// more).
func TestNumericLen(t *testing.T) {
	for n, pg := range map[string]int{
		"123": 3, "-7": 2, "1.000": 5, "9.99e-2": 6, "0e3": 1, "100e-2": 4, "2.5E+1": 2, "1e3": 4, "1.50e3": 4,
		"1.5e-3": 6, "-12.345e1": 7, "0e-5": 7, "0.0": 3, "1E+2": 3, "123.456": 7, "5e-1": 3, "12e-1": 3,
		"1e308": 309, "-1e-300": 303, "0e-999": 1001,
		"0.001e2": 3, "-0.0": 3, "-0": 1, "0.000123e2": 6, "-0e3": 1, "0.5e1": 1,
	} {
		require.Equal(t, pg, numericLen([]byte(n)), n)
	}
}

// owner_metadata is a JSON object: one of another type is refused whatever
// the operation, as any field of the wrong type is (only acquire reads it);
// null is absent, and an object is ignored by the operations that do not
// read it.
func TestDecodeMetadataType(t *testing.T) {
	base := map[string]string{
		OpAcquire:          `"operation":"acquire","lock_name":"a","owner_id":"o"`,
		OpRelease:          `"operation":"release","lock_name":"a","owner_id":"o"`,
		OpExtend:           `"operation":"extend","lock_name":"a","owner_id":"o"`,
		OpRevoke:           `"operation":"revoke","lock_name":"a","reason":"r"`,
		OpQuery:            `"operation":"query","lock_name":"a"`,
		OpCleanup:          `"operation":"cleanup","lock_name":"a"`,
		OpSessionOpen:      `"operation":"session_open","session_id":"s","owner_id":"o"`,
		OpSessionKeepAlive: `"operation":"session_keepalive","session_id":"s","owner_id":"o"`,
		OpSessionClose:     `"operation":"session_close","session_id":"s","owner_id":"o"`,
	}
	require.Len(t, base, len(Operations))
	for _, op := range OperationNames() {
		t.Run(op, func(t *testing.T) {
			_, err := Decode([]byte(`{`+base[op]+`}`), prefix)
			require.NoError(t, err)
			for _, m := range []string{`5`, `-1.5`, `"x"`, `""`, `[1]`, `[]`, `true`, `false`} {
				r := rejected(t, `{`+base[op]+`,"owner_metadata":`+m+`}`, CodeInvalidRequest)
				require.Equal(t, "owner_metadata must be a JSON object, got "+m, r.Message)
			}
			for _, m := range []string{`null`, `{}`, `{"k":[1]}`} {
				c, err := Decode([]byte(`{`+base[op]+`,"owner_metadata":`+m+`}`), prefix)
				require.NoError(t, err, m)
				if op == OpAcquire {
					require.Equal(t, m, string(c.OwnerMetadata), "kept as written")
				} else {
					require.Nil(t, c.OwnerMetadata, "dropped where the operation does not read it")
				}
			}
		})
	}
}

// A quoted input cut short stays valid UTF-8: the message goes into an
// event's error_message and the dead-letter error header.
func TestTruncateKeepsCharactersWhole(t *testing.T) {
	long := strings.Repeat("€", 30) // 90 bytes, three a character
	require.Equal(t, strings.Repeat("€", 21)+"...", truncate(long))
	for _, v := range []string{long, "\xff\xfe"} {
		_, err := Decode([]byte(`{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":"`+v+`"}`), prefix)
		require.ErrorContains(t, err, "lease_duration must be a number of seconds")
		require.True(t, utf8.ValidString(err.Error()), err.Error())
	}
}

// CutUTF8 cuts at a character's start, never inside one.
func TestCutUTF8(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 5, "abc"},
		{"abc", 3, "abc"},
		{"abc", 2, "ab"},
		{"aé", 2, "a"}, // é is two bytes: not split
		{"aé", 3, "aé"},
		{"日本", 4, "日"},
		{"日本", 2, ""},
	} {
		require.Equal(t, tc.want, CutUTF8(tc.s, tc.n), "%q to %d", tc.s, tc.n)
	}
}
