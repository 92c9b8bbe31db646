package handlers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// hostileText are settings a database, role or connection string may give
// that change PostgreSQL's text format away from the one pgx reads, or that
// pgx's simple protocol refuses to send arguments under.
var hostileText = map[string]string{
	"DateStyle":                   "SQL, DMY",
	"IntervalStyle":               "sql_standard",
	"bytea_output":                "escape",
	"standard_conforming_strings": "off",
	"client_encoding":             "LATIN1",
}

// A cleanup command's statements go by the simple protocol, whose results
// (its clock_timestamp()) pgx reads as text, and whose arguments pgx
// writes into the statement. Under a database's or the connection string's
// DateStyle 'SQL, DMY' (or the others of hostileText) every cleanup command
// failed, with an error no retry cures, holding its partition for good.
// The pool's connections set the text format pgx needs whatever either
// says.
func TestCleanupUnderHostileTextSettings(t *testing.T) {
	t.Parallel()
	byDatabase := testdb.NewDatabase(t, "")
	admin, err := pgx.Connect(t.Context(), testdb.URL())
	require.NoError(t, err)
	defer admin.Close(context.Background())
	byURL := testdb.NewSchema(t)
	for setting, value := range hostileText {
		_, err := admin.Exec(t.Context(), fmt.Sprintf(`ALTER DATABASE %s SET %s = '%s'`, byDatabase.Name, setting, value))
		require.NoError(t, err)
		byURL.URL = connstr.WithParam(byURL.URL, setting, value)
	}

	for _, c := range []struct {
		name string
		sch  testdb.Schema
	}{{"database", byDatabase}, {"connection string", byURL}} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t) // its env, on a store of c's settings instead
			h.st = c.sch.Open(t, store.Config{LockTimeout: -1, MaxConns: 4})
			ctx := t.Context()
			require.NoError(t, h.st.Migrate(ctx))

			h.one(h.acquire("released", "erin"))
			h.one(h.release("released", "erin"))
			cleaned := find(h.apply(h.cleanup(topics.CleanupAll, maxAge(0))), topics.TypeCleaned)
			require.Len(t, cleaned, 1)
			require.Equal(t, []string{"released"}, cleaned[0].CleanedLockNames)

			// The text format of each type pgx parses only in the server's default form.
			var at time.Time
			var iv pgtype.Interval
			var b []byte
			var s string
			require.NoError(t, h.st.Pool.QueryRow(ctx, `SELECT '2024-03-05 06:07:08.5+00'::timestamptz, '-1 year -2 days 03:04:05'::interval, '\x00ff'::bytea, $1::text`,
				pgx.QueryExecModeSimpleProtocol, "é").Scan(&at, &iv, &b, &s))
			require.True(t, time.Date(2024, 3, 5, 6, 7, 8, 5e8, time.UTC).Equal(at), "%v", at)
			require.Equal(t, pgtype.Interval{Months: -12, Days: -2, Microseconds: (3*3600 + 4*60 + 5) * 1e6, Valid: true}, iv)
			require.Equal(t, []byte{0, 0xff}, b)
			require.Equal(t, "é", s)
		})
	}
}
