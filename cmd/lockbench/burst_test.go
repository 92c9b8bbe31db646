package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBurstRateCountsAnswersAsAsked: a refusal, often faster than what was
// asked, is no command drained: the burst's rate counts only the answers
// that came as asked, and its line says so.
func TestBurstRateCountsAnswersAsAsked(t *testing.T) {
	r := BurstResult{Commands: 100, Answered: 100, Unexpected: 20}
	r.answeredIn(2 * time.Second)
	require.Equal(t, 2.0, r.Seconds)
	require.Equal(t, 40.0, r.PerSecond)
	var out bytes.Buffer
	r.print(&out)
	require.Contains(t, out.String(), "100 answered in 2.00 s, 40 commands/s answered as asked, 20 unexpected (not in the rate)")
}
