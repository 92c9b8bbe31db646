package store

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// transaction_timeout is lifted from PostgreSQL 17 on (older servers
// refuse the name), whatever follows the major version; a timeout the
// connection string gives is left as given.
func TestLiftedTimeouts(t *testing.T) {
	both := []setting{{"statement_timeout", 0}, {"transaction_timeout", 0}}
	for version, want := range map[string][]setting{
		"15.20 (Debian 15.20-0+deb12u1)": {{"statement_timeout", 0}},
		"16.4":                           {{"statement_timeout", 0}},
		"17.2 (Debian 17.2-1.pgdg120+1)": both,
		"17beta1":                        both,
		"18devel":                        both,
		"":                               {{"statement_timeout", 0}},
	} {
		require.Equal(t, want, liftedTimeouts(version, nil), version)
	}
	require.Equal(t, []setting{{"transaction_timeout", 0}}, liftedTimeouts("17.2", map[string]string{"statement_timeout": "100"}))
	require.Empty(t, liftedTimeouts("17.2", map[string]string{"statement_timeout": "100", "transaction_timeout": "0"}))
}
