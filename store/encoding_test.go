package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
)

// encodedDatabase creates a database of encoding enc, dropped when the
// test ends, and returns its URL.
func encodedDatabase(t *testing.T, enc string) string {
	t.Helper()
	return testdb.NewDatabase(t, fmt.Sprintf(`ENCODING '%s' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`, enc)).URL
}

// A database whose encoding is not UTF8 is refused by Open, at once and
// before anything of lockworker's runs on it. Under LATIN1 the pool's
// client_encoding UTF8 has the server convert what it is sent: a name
// stored before (its UTF-8 bytes as sent) no longer matches the same name,
// and a lock held would be granted again. SQL_ASCII converts nothing, so
// names match, but it cannot decode a JSON escape of a non-ASCII
// character, which topics admits in owner_metadata: that command's batch
// would fail with 0A000, no data refusal (class 22 or 23) that the worker
// quarantines, on every retry.
func TestOpenRefusesDatabaseNotUTF8(t *testing.T) {
	t.Parallel()
	for _, enc := range []string{"LATIN1", "SQL_ASCII"} {
		t.Run(enc, func(t *testing.T) {
			t.Parallel()
			url := encodedDatabase(t, enc)
			start := time.Now()
			st, err := store.Open(t.Context(), store.Config{URL: url, MaxConns: 1, RetryStart: true,
				OnStartRetry: func(_ int, err error, _ time.Duration) { t.Errorf("retried: %v", err) }})
			if err == nil {
				st.Close()
			}
			require.ErrorIs(t, err, store.ErrDatabaseEncoding)
			require.NotErrorIs(t, err, store.ErrTransient)
			var encErr *store.DatabaseEncodingError
			require.ErrorAs(t, err, &encErr)
			require.Equal(t, enc, encErr.Encoding)
			require.Contains(t, url, "dbname="+encErr.Database)
			require.Contains(t, err.Error(), "createdb -E UTF8 -T template0")
			require.Contains(t, err.Error(), "ENCODING 'UTF8'")
			require.Less(t, time.Since(start), 10*time.Second)

			// Nothing was created in the database.
			conn, err := pgx.Connect(t.Context(), url)
			require.NoError(t, err)
			defer conn.Close(context.Background())
			var tables int
			require.NoError(t, conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_class WHERE relname = $1`, store.VersionTable).Scan(&tables))
			require.Zero(t, tables)
		})
	}
	t.Run("UTF8", func(t *testing.T) {
		t.Parallel()
		st := testdb.New(t) // opens and migrates
		var enc string
		require.NoError(t, st.Pool.QueryRow(t.Context(), `SHOW server_encoding`).Scan(&enc))
		require.Equal(t, "UTF8", enc)
	})
}

// Why SQL_ASCII is refused though a name round-trips and matches there
// under client_encoding UTF8: the JSON escape of a non-ASCII character
// (which Go's encoding/json writes for U+2028, and other languages' JSON
// for every non-ASCII character) fails jsonb with 0A000.
func TestSQLASCIIRefusesJSONEscapes(t *testing.T) {
	t.Parallel()
	url := encodedDatabase(t, "SQL_ASCII")
	conn, err := pgx.Connect(t.Context(), connstr.WithParam(url, "client_encoding", "UTF8"))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	ctx := t.Context()
	_, err = conn.Exec(ctx, `CREATE TABLE t (name text PRIMARY KEY)`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO t VALUES ($1)`, "é锁")
	require.NoError(t, err)
	var stored []byte
	require.NoError(t, conn.QueryRow(ctx, `SELECT name::bytea FROM t WHERE name = $1`, "é锁").Scan(&stored))
	require.Equal(t, []byte("é锁"), stored, "stored as sent, and matched")

	_, err = conn.Exec(ctx, `SELECT $1::jsonb`, `{"a":"\u00e9"}`)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "0A000", pgErr.Code, "%v", err)
}

// A database Open creates is UTF8, which it requires, even in a cluster
// whose template1 is not (made in the C locale: SQL_ASCII); in one whose
// template1 is, it is template1's copy, its locale included.
func TestCreatedDatabaseIsUTF8(t *testing.T) {
	testdb.Require(t)
	require.Equal(t, `CREATE DATABASE "x"`, store.CreateDatabaseSQL("x", "UTF8"))
	admin, err := pgx.Connect(t.Context(), testdb.URL())
	require.NoError(t, err)
	defer admin.Close(context.Background())
	name := fmt.Sprintf("lwtest_create_%08x", rand.Uint32())
	if _, err := admin.Exec(t.Context(), store.CreateDatabaseSQL(name, "SQL_ASCII")); err != nil {
		testdb.SkipMissing(t, "the test user may not create databases (CREATEDB): %v", err)
	}
	defer admin.Exec(context.Background(), `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`)
	var enc, collate string
	require.NoError(t, admin.QueryRow(t.Context(), `SELECT pg_encoding_to_char(encoding), datcollate FROM pg_database WHERE datname = $1`, name).Scan(&enc, &collate))
	require.Equal(t, "UTF8", enc)
	require.Equal(t, "C", collate)
}
