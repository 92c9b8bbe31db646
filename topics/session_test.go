package topics

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDecodeSessionCommands(t *testing.T) {
	for _, v := range []string{
		`{"operation":"session_open","session_id":"s","owner_id":"o"}`,
		`{"operation":"session_open","session_id":"s","owner_id":"o","ttl":1}`,
		`{"operation":"session_open","session_id":"` + strings.Repeat("s", 128) + `","owner_id":"o","ttl":3600}`,
		`{"operation":"session_keepalive","session_id":"s","owner_id":"o"}`,
		`{"operation":"session_close","session_id":"s","owner_id":"o","namespace":"ns"}`,
		`{"operation":"acquire","lock_name":"a","owner_id":"o","session_id":"s"}`,
	} {
		c, err := Decode([]byte(v), prefix)
		require.NoError(t, err, v)
		require.Equal(t, "s", c.SessionID[:1])
	}
	c, _ := Decode([]byte(`{"operation":"session_close","session_id":"s1","owner_id":"o","namespace":"ns"}`), prefix)
	require.Equal(t, "session:s1", c.Key(), "a session's commands share its key, whatever the namespace")
	c, _ = Decode([]byte(`{"operation":"acquire","lock_name":"a","owner_id":"o","session_id":"s1"}`), prefix)
	require.Equal(t, "a", c.Key(), "an acquire goes by its lock")

	// session_generation names the session's life on the commands that
	// act on a session; absent, any life; the open, which makes one, and
	// the other operations drop it.
	for _, v := range []string{
		`{"operation":"acquire","lock_name":"a","owner_id":"o","session_id":"s","session_generation":7}`,
		`{"operation":"session_keepalive","session_id":"s","owner_id":"o","session_generation":7}`,
		`{"operation":"session_close","session_id":"s","owner_id":"o","session_generation":7}`,
	} {
		c, err := Decode([]byte(v), prefix)
		require.NoError(t, err, v)
		require.NotNil(t, c.SessionGeneration, v)
		require.EqualValues(t, 7, *c.SessionGeneration, v)
	}
	for _, v := range []string{
		`{"operation":"session_open","session_id":"s","owner_id":"o","session_generation":7}`,
		`{"operation":"release","lock_name":"a","owner_id":"o","session_generation":0}`,
		`{"operation":"acquire","lock_name":"a","owner_id":"o","session_id":"s"}`,
	} {
		c, err := Decode([]byte(v), prefix)
		require.NoError(t, err, v)
		require.Nil(t, c.SessionGeneration, v)
	}

	for _, tc := range []struct{ value, msg string }{
		{`{"operation":"session_open","owner_id":"o"}`, "session_id is required for session_open"},
		{`{"operation":"session_keepalive","session_id":"s"}`, "owner_id is required for session_keepalive"},
		{`{"operation":"session_close","session_id":"s","owner_id":"o","lock_name":"a"}`, "lock_name must be absent"},
		{`{"operation":"session_open","session_id":"s","owner_id":"o","ttl":0.5}`, "ttl 0.5 is outside 1..3600 seconds"},
		{`{"operation":"session_open","session_id":"s","owner_id":"o","ttl":0}`, "ttl"},
		{`{"operation":"session_open","session_id":"s","owner_id":"o","ttl":3601}`, "ttl 3601 is outside"},
		{`{"operation":"session_open","session_id":"` + strings.Repeat("s", 129) + `","owner_id":"o"}`, "session_id is 129 bytes, over the limit of 128"},
		{`{"operation":"acquire","lock_name":"a","owner_id":"o","session_id":"s\n"}`, "session_id must be printable UTF-8"},
		{`{"operation":"acquire","owner_id":"o","session_id":"s"}`, "lock_name is required"},
		{`{"operation":"session_keepalive","session_id":"s","owner_id":"o","session_generation":0}`, "session_generation 0 is outside 1..9223372036854775807"},
		{`{"operation":"session_close","session_id":"s","owner_id":"o","session_generation":-3}`, "session_generation -3 is outside"},
		{`{"operation":"acquire","lock_name":"a","owner_id":"o","session_generation":4}`, "session_generation names a life of a session: it needs session_id"},
		{`{"operation":"acquire","lock_name":"a","owner_id":"o","session_id":"s","session_generation":4.0}`, "session_generation must be a 64-bit integer, got 4.0"},
		{`{"operation":"query","lock_name":"a","session_generation":9223372036854775808}`, "session_generation must be a 64-bit integer"},
	} {
		_, err := Decode([]byte(tc.value), prefix)
		var r *Rejection
		require.ErrorAs(t, err, &r, tc.value)
		require.Equal(t, CodeInvalidRequest, r.Code)
		require.Contains(t, r.Message, tc.msg)
	}
}
