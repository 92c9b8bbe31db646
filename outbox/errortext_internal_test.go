package outbox

import (
	"context"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

// errorText is what last_error stores: at most 1000 bytes, cut between
// characters, valid UTF-8 without NUL, so that PostgreSQL takes the UPDATE
// that counts or parks the row (it refuses anything else, 22021, and the
// row would be retried for ever).
func TestErrorTextIsStorable(t *testing.T) {
	st := testdb.New(t)
	for name, msg := range map[string]string{
		"cut in a character": strings.Repeat("a", 999) + "é and more",
		"invalid":            "broker said \xff\xfe",
		"NUL":                "topic \x00 refused",
		"short":              "TOPIC_AUTHORIZATION_FAILED",
	} {
		got := errorText(errors.New(msg))
		require.LessOrEqual(t, len(got), 1000, name)
		require.True(t, utf8.ValidString(got), name)
		require.NotContains(t, got, "\x00", name)
		var back string
		require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT $1::text`, got).Scan(&back), name)
	}
	require.Equal(t, strings.Repeat("a", 999), errorText(errors.New(strings.Repeat("a", 999)+"é")))
	require.Equal(t, "TOPIC_AUTHORIZATION_FAILED", errorText(errors.New("TOPIC_AUTHORIZATION_FAILED")))
}
