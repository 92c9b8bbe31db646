package connstr_test

import (
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/connstr"
)

// WithParam sets a parameter in either form, over what the string said of
// it anywhere, quoted and escaped as it needs, leaving the rest as written:
// URLs net/url refuses included.
func TestWithParam(t *testing.T) {
	for _, s := range []string{
		"postgres://u:old@127.0.0.1:5432/db?application_name=old&password=older&sslmode=disable",
		"postgresql://u:o%3Fld@127.0.0.1/db?sslmode=disable",
		"postgres://u:old@127.0.0.1:5432,127.0.0.2/db?sslmode=disable",
		"postgres://u:old@%2Fvar%2Frun%2Fpostgresql/db?sslmode=disable",
		"postgres://u:old@127.0.0.1/db?sslmode=disable",
		"host=127.0.0.1 port=5432 user=u password=old dbname=db application_name=old sslmode=disable",
	} {
		got := connstr.WithParam(s, "application_name", `it's a \ test+1 @/?&=`)
		got = connstr.WithParam(got, "password", "n3w pass'word@")
		require.Contains(t, got, s, "the rest as written")
		cfg, err := pgconn.ParseConfig(got)
		require.NoError(t, err, got)
		require.Equal(t, `it's a \ test+1 @/?&=`, cfg.RuntimeParams["application_name"], got)
		require.Equal(t, "n3w pass'word@", cfg.Password, got)
		require.Equal(t, "u", cfg.User, got)
		require.Equal(t, "db", cfg.Database, got)
		require.Nil(t, cfg.TLSConfig, "sslmode kept: %s", got)
	}
	require.Equal(t, "dbname='x'", connstr.WithParam("", "dbname", "x"))
}

// WithParam's pair is not taken in by how the string ends: a keyword
// waiting for its value, an unpaired backslash, an empty query or a
// trailing "&", a "?" inside an IPv6 host's brackets.
func TestWithParamEndings(t *testing.T) {
	for s, want := range map[string]map[string]string{
		"host=h dbname=db application_name=":  {"application_name": ""},
		"host=h dbname=db application_name= ": {"application_name": ""},
		`host=h dbname=db password=abc\`:      {"password": "abc"},
		`host=h dbname=db password=\`:         {"password": ""},
		`host=h dbname=db password= \`:        {"password": ""},
		`host=h dbname=db password=abc\ `:     {"password": "abc "},
		"host=h dbname=db password='a=b'":     {"password": "a=b"},
		"postgres://u@h/db?":                  {},
		"postgres://u@h/db?sslmode=disable&":  {},
		"postgres://u@[::1?]/db":              {},
		"postgres://u@h,[::1?]:5433/db":       {},
		// Ports pgx reads though they are not plain numbers: the
		// query's port wins over the hosts', and the port is decoded.
		"postgres://u@h:0/db?port=5432&sslmode=disable": {},
		"postgres://u@h:%35432/db?sslmode=disable":      {},
	} {
		got := connstr.WithParam(s, "search_path", "s")
		cfg, err := pgconn.ParseConfig(got)
		require.NoError(t, err, got)
		require.Equal(t, "s", cfg.RuntimeParams["search_path"], got)
		require.Equal(t, "db", cfg.Database, got)
		for k, v := range want {
			switch k {
			case "password":
				require.Equal(t, v, cfg.Password, got)
			default:
				require.Equal(t, v, cfg.RuntimeParams[k], got)
			}
		}
	}
}

// Server is the one TCP server a string leads to; anything else is an
// error that does not quote the string.
func TestServer(t *testing.T) {
	t.Setenv("PGHOST", "") // pgconn reads them: the defaults are its own
	t.Setenv("PGPORT", "")
	for s, want := range map[string]string{
		"postgres://u:secret@db.example/x":                    "db.example:5432",
		"postgres://u:secret@db.example:5433/x?sslmode=allow": "db.example:5433",
		"host=10.0.0.1 port=6432 password=secret":             "10.0.0.1:6432",
		"postgres://u:secret@[::1]:5432/x":                    "[::1]:5432",
	} {
		got, err := connstr.Server(s)
		require.NoError(t, err, s)
		require.Equal(t, want, got, s)
	}
	for s, want := range map[string]string{
		"host=127.0.0.1,127.0.0.2 port=5432 password=secret":    "more than one server",
		"postgres://u:secret@127.0.0.1:5432,127.0.0.1:5433/db":  "more than one server",
		"host=/var/run/postgresql port=5432 password=secret":    "unix socket",
		"postgres://u:secret@%2Fvar%2Frun%2Fpostgresql:5432/db": "unix socket",
		"host='127.0.0.1 password=secret":                       "parsing the connection string",
		"postgres://u:secret@h/db?connect_timeout=never":        "parsing the connection string",
	} {
		_, err := connstr.Server(s)
		require.ErrorContains(t, err, want, s)
		require.NotContains(t, err.Error(), "secret", s)
	}
}

// Redirect points either form at another address, user, password, database
// and parameters kept; one whose query named the server is redirected too.
func TestRedirect(t *testing.T) {
	for _, s := range []string{
		"postgres://u:p%40ss@db.example/x?sslmode=require&search_path=s",
		"postgres://u:p%40ss@/x?host=db.example&port=5433&sslmode=require&search_path=s",
		"host=db.example user=u password=p@ss dbname=x sslmode=require search_path=s",
	} {
		got, err := connstr.Redirect(s, "127.0.0.1:40001")
		require.NoError(t, err, s)
		server, err := connstr.Server(got)
		require.NoError(t, err)
		require.Equal(t, "127.0.0.1:40001", server)
		cfg, err := pgconn.ParseConfig(got)
		require.NoError(t, err)
		require.Equal(t, "u", cfg.User)
		require.Equal(t, "p@ss", cfg.Password)
		require.Equal(t, "x", cfg.Database)
		require.Equal(t, "s", cfg.RuntimeParams["search_path"])
		require.NotNil(t, cfg.TLSConfig, "sslmode kept")
	}
	_, err := connstr.Redirect("postgres://db.example/x", "no port")
	require.Error(t, err)
}
