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

// A setting the connection string gives in options counts as given, as
// one given as a parameter of its own does: the pool's SETs leave it.
func TestGivenSettings(t *testing.T) {
	got := givenSettings(map[string]string{
		"Lock_Timeout": "1",
		"options":      `-c statement_timeout=2 -cidle-in-transaction-session-timeout=3  --TCP-user-timeout=4 -c application_name=a\ -c\ b -B 8 --plan_cache_mode=auto\`,
	})
	require.Equal(t, map[string]string{
		"lock_timeout":                        "1",
		"options":                             `-c statement_timeout=2 -cidle-in-transaction-session-timeout=3  --TCP-user-timeout=4 -c application_name=a\ -c\ b -B 8 --plan_cache_mode=auto\`,
		"statement_timeout":                   "2",
		"idle_in_transaction_session_timeout": "3",
		"tcp_user_timeout":                    "4",
		"application_name":                    "a -c b",
		"plan_cache_mode":                     "auto",
	}, got)
	require.Empty(t, givenSettings(nil))
}
