package chaos

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCheckTerms feeds CheckTerms crafted terms: clean ones, and one per
// kind of violation it must catch.
func TestCheckTerms(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	term := func(who string, token int64, from, to int) Term {
		return Term{Candidate: who, Token: token, Start: at(from), End: at(to), How: "resigned"}
	}
	clean := []Term{term("b", 7, 100, 200), term("a", 3, 0, 100), term("c", 9, 250, 300)}
	require.NoError(t, CheckTerms(clean, []Write{{"a", 3}, {"a", 3}, {"b", 7}, {"c", 9}}))

	err := CheckTerms([]Term{term("a", 3, 0, 120), term("b", 7, 100, 200)}, nil)
	assert.ErrorContains(t, err, "two leaders at once: b (token 7) from 06:00:00.100000 while a (token 3) led until 06:00:00.120000")
	err = CheckTerms([]Term{term("a", 8, 0, 100), term("b", 7, 100, 200)}, nil)
	assert.ErrorContains(t, err, "tokens must rise")
	err = CheckTerms(clean, []Write{{"a", 3}, {"b", 7}, {"a", 3}})
	assert.ErrorContains(t, err, "fenced write by a with token 3 after token 7's")
}
