package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestInTurn: every other round runs in reverse order, so over two rounds
// each run goes before each other run as often as after it, and xs itself
// is not changed.
func TestInTurn(t *testing.T) {
	xs := []string{"exclusive", "shared", "semaphore"}
	require.Equal(t, xs, inTurn(xs, 0))
	require.Equal(t, []string{"semaphore", "shared", "exclusive"}, inTurn(xs, 1))
	require.Equal(t, []string{"exclusive", "shared", "semaphore"}, xs)
	require.Equal(t, xs, inTurn(xs, 2))
	require.Equal(t, []string{"original", "lockworker"}, inTurn([]string{"lockworker", "original"}, 3))
}
