package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A DATABASE_URL pgx refuses says what to fix, never quoting its password:
// a URL whose user info or host pgx cannot read gets the advice to
// percent-encode (an unescaped '/' in a password, as base64 passwords
// have, ends the user info early and makes the rest a port), and a
// parameter pgx refuses is named.
func TestDatabaseURLErrorsSayWhat(t *testing.T) {
	t.Setenv("PGPASSFILE", filepath.Join(t.TempDir(), "none"))
	const encode = "percent-encode '/' as %2F, '@' as %40, '?' as %3F and '%' as %25 in the user name, password and database name"
	for dsn, want := range map[string]string{
		"postgres://app:k3J/xq+Zs3cr3t@db:5432/locks": "DATABASE_URL: is a URL pgx would read otherwise than meant",
		"postgres://app:s3cr3t@db:99999/locks":        "a port is a number from 1 to 65535; " + encode,
		"postgres://app:s3cr3t%zz@db/locks":           "DATABASE_URL: is a URL whose user name, password, host, port or database name pgx cannot read",

		"postgres://u:s3cr3t@db/x?sslmode=verify-ful":                 "DATABASE_URL: parameter sslmode: pgx refuses it: failed to configure TLS (sslmode is invalid)",
		"postgres://u:s3cr3t@db/x?connect_timeout=abc":                "DATABASE_URL: parameter connect_timeout: pgx refuses it: invalid connect_timeout",
		"postgres://u:s3cr3t@db/x?target_session_attrs=rw":            "DATABASE_URL: parameter target_session_attrs: pgx refuses it: unknown target_session_attrs value: rw",
		"postgres://u@db/x?password=s3cr3t&pool_max_conn_lifetime=1x": "DATABASE_URL: parameter pool_max_conn_lifetime: pgx refuses it: cannot parse pool_max_conn_lifetime",
		"host=db password='s3cr3t' sslmode = verify-ful":              "DATABASE_URL: parameter sslmode: pgx refuses it",
		"host=db password=s3cr3t port=abc":                            "DATABASE_URL: parameter port: pgx refuses it: invalid port",
	} {
		_, err := pgxpool.ParseConfig(dsn)
		require.Error(t, err, "pgx accepts %s", dsn)
		_, err = FromEnv(env(map[string]string{"DATABASE_URL": dsn}))
		require.ErrorContains(t, err, want, dsn)
		assert.ErrorContains(t, err, "DATABASE_URL: ", dsn)
		assert.NotContains(t, err.Error(), "s3cr3t", dsn)
	}
	if assert.ErrorContains(t, checkConnString("postgres://app:k3J/xq+Zs3cr3t@db:5432/locks"), encode, "the slash's advice") {
		assert.NotContains(t, checkConnString("postgres://app:k3J/xq+Zs3cr3t@db:5432/locks").Error(), "k3J")
	}

	// The files parameters name are read by the worker's start
	// (PostgresParamRefusal), not by FromEnv, which lockctl uses too.
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.crt")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600))
	missing := filepath.Join(dir, "missing")
	for dsn, want := range map[string]string{
		"postgres://u:s3cr3t@db/x?sslmode=verify-full&sslrootcert=" + notPEM:                          "parameter sslrootcert: pgx refuses it: failed to configure TLS (unable to add CA to cert pool)",
		"host=db password=s3cr3t sslrootcert=" + missing:                                              "parameter sslrootcert: pgx refuses it: failed to configure TLS (unable to read CA file: open " + missing,
		"postgres://u@db/x?sslcert=" + notPEM + "&sslkey=" + missing + "&sslpassword=s3cr3t":          "parameter sslcert/sslkey: pgx refuses it: unable to read sslkey: open " + missing,
		"postgres://u@db/x?sslmode=disable&sslcert=" + notPEM + "&sslkey=" + notPEM + "&sslrootcert=": "",
	} {
		c, err := FromEnv(env(map[string]string{"DATABASE_URL": dsn}))
		require.NoError(t, err, "FromEnv reads no file: %s", dsn)
		err = c.PostgresParamRefusal()
		if want == "" {
			// sslmode=disable: pgx reads no client certificate.
			assert.NoError(t, err, dsn)
			continue
		}
		require.ErrorContains(t, err, want, dsn)
		assert.NotContains(t, err.Error(), "s3cr3t", dsn)
	}
}
