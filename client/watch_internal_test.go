package client

import (
	"testing"
	"time"
)

// SetFetchErrorGrace sets, for the watches test t starts, how long a
// failure streak of their reading lasts before OnFetchError is told of it,
// so that the tests need not wait the 5 s of fetchErrorGrace. The tests of
// package client_test use it too.
func SetFetchErrorGrace(t testing.TB, d time.Duration) {
	old := fetchErrorGrace
	fetchErrorGrace = d
	t.Cleanup(func() { fetchErrorGrace = old })
}
