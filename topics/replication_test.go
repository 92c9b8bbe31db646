package topics_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// EnvReplicationFactor: blank is unset, -1 and 1..32767 are taken trimmed,
// anything else is refused naming the variable and the trimmed value.
func TestEnvReplicationFactor(t *testing.T) {
	for v, want := range map[string]int16{" -1 ": -1, "1": 1, "3\n": 3, "32767": 32767} {
		n, set, err := topics.EnvReplicationFactor("RF", v)
		require.NoError(t, err, v)
		require.True(t, set, v)
		require.Equal(t, want, n, v)
	}
	for _, v := range []string{"", "  ", "\n"} {
		_, set, err := topics.EnvReplicationFactor("RF", v)
		require.NoError(t, err, "%q", v)
		require.False(t, set, "%q", v)
	}
	for _, v := range []string{"0", "-2", "32768", "three", " 3.0 "} {
		_, set, err := topics.EnvReplicationFactor("RF", v)
		require.False(t, set, v)
		require.EqualError(t, err, `RF: "`+strings.TrimSpace(v)+`" `+topics.ReplicationFactorRange, v)
	}
}
