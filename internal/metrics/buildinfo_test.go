package metrics

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// lockworker_build_info says which build runs, and which schema version it
// migrates to.
func TestBuildInfo(t *testing.T) {
	m := New(Config{Revision: "0123abc", SchemaVersion: 20})
	require.Equal(t, 1.0, series(t, m, "lockworker_build_info", "revision", "0123abc", "schema_version", "20").GetGauge().GetValue())
}
