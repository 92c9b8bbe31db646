package testdb

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// Proxied, in either form of connection string, leads to the same server,
// user and database with the same parameters, through a proxy the test can
// cut.
func TestProxied(t *testing.T) {
	cfg, err := pgconn.ParseConfig(URL())
	require.NoError(t, err)
	// Both forms are built from the test server's settings, sslmode left to
	// its default (prefer), whose fallback without TLS is the same server.
	u := url.URL{Scheme: "postgres", User: url.UserPassword(cfg.User, cfg.Password),
		Host: net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), Path: "/" + cfg.Database}
	keywordValue := ""
	for _, kv := range [][2]string{{"host", cfg.Host}, {"port", strconv.Itoa(int(cfg.Port))}, {"user", cfg.User},
		{"password", cfg.Password}, {"dbname", cfg.Database}} {
		keywordValue = WithParam(t, keywordValue, kv[0], kv[1])
	}
	for name, connString := range map[string]string{"URL": u.String(), "keyword/value": keywordValue} {
		t.Run(name, func(t *testing.T) {
			connString = WithParam(t, connString, "application_name", "testdb's proxy test")
			proxied, proxy := Proxied(t, connString)
			got, err := pgconn.ParseConfig(proxied)
			require.NoError(t, err)
			require.Equal(t, proxy.Addr(), net.JoinHostPort(got.Host, strconv.Itoa(int(got.Port))))
			require.Equal(t, cfg.User, got.User)
			require.Equal(t, cfg.Database, got.Database)
			require.Equal(t, "testdb's proxy test", got.RuntimeParams["application_name"])

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, proxied)
			require.NoError(t, err)
			var app string
			require.NoError(t, conn.QueryRow(ctx, `SELECT current_setting('application_name')`).Scan(&app))
			require.Equal(t, "testdb's proxy test", app)
			require.NoError(t, conn.Close(ctx))

			proxy.Cut()
			_, err = pgx.Connect(ctx, proxied)
			require.Error(t, err, "connections go through the proxy")
		})
	}
}

// A connection string the proxy cannot stand in for fails the test (it
// never skips it).
func TestProxiedRefuses(t *testing.T) {
	for connString, want := range map[string]string{
		"host=127.0.0.1,127.0.0.2 port=5432":                   "more than one server",
		"postgres://u@127.0.0.1:5432,127.0.0.1:5433/db":        "more than one server",
		"host=/var/run/postgresql port=5432":                   "unix socket",
		"postgres://u@%2Fvar%2Frun%2Fpostgresql:5432/db":       "unix socket",
		"host='127.0.0.1":                                      "parsing the connection string",
		"postgres://u@127.0.0.1:5432/db?connect_timeout=never": "parsing the connection string",
	} {
		msg := fatalOf(t, func(tb testing.TB) { Proxied(tb, connString) })
		require.Contains(t, msg, want, connString)
	}
}

// WithParam sets a parameter in either form, the last value of a repeated
// keyword winning in keyword/value form, quoted as it needs.
func TestWithParam(t *testing.T) {
	for _, connString := range []string{
		"postgres://u:old@127.0.0.1:5432/db?application_name=old&password=older&sslmode=disable",
		"host=127.0.0.1 port=5432 user=u password=old dbname=db application_name=old sslmode=disable",
	} {
		s := WithParam(t, connString, "application_name", `it's a \ test`)
		s = WithParam(t, s, "password", "n3w pass'word")
		cfg, err := pgconn.ParseConfig(s)
		require.NoError(t, err, s)
		require.Equal(t, `it's a \ test`, cfg.RuntimeParams["application_name"], s)
		require.Equal(t, "n3w pass'word", cfg.Password, s)
		require.Equal(t, "u", cfg.User, s)
		require.Equal(t, "db", cfg.Database, s)
		require.Nil(t, cfg.TLSConfig, "sslmode kept: %s", s)
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as t.Fatalf would end the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// fatalOf is the message fn gave to Fatalf ("" if none).
func fatalOf(t *testing.T, fn func(testing.TB)) string {
	f := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); fn(f) }()
	<-done
	return f.msg
}
