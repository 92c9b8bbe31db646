package failstreak

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// TestStreak: a streak of failures one a second for two minutes logs its
// first, then one line per 30 s with the count, and one line when it ends;
// the next streak starts over.
func TestStreak(t *testing.T) {
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	now := time.Unix(0, 0)
	s := Streak{Now: func() time.Time { return now }}
	err := errors.New("connection refused")
	for i := 1; i <= 120; i++ {
		n, ev := s.Fail(&log, err)
		require.Equal(t, i, n)
		ev.Msg("db error")
		now = now.Add(time.Second)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 4, buf.String()) // failures 1, 31, 61, 91
	require.Contains(t, lines[0], `"failures":1,`)
	require.Contains(t, lines[0], `"error":"connection refused"`)
	require.Contains(t, lines[3], `"failures":91,`)

	buf.Reset()
	s.OK(&log).Msg("works again")
	s.OK(&log).Msg("works again") // no streak: nothing
	require.Equal(t, 1, strings.Count(buf.String(), "\n"), buf.String())
	require.Contains(t, buf.String(), `"failures":120,`)
	require.Zero(t, s.Failures())

	buf.Reset()
	n, ev := s.Fail(&log, err)
	ev.Msg("db error")
	require.Equal(t, 1, n)
	require.Contains(t, buf.String(), `"failures":1,`, "a new streak logs its first failure at once")
}
