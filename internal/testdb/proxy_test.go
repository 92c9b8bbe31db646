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

	"github.com/omninode/lockworker/internal/connstr"
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
		keywordValue = connstr.WithParam(keywordValue, kv[0], kv[1])
	}
	for name, connString := range map[string]string{"URL": u.String(), "keyword/value": keywordValue} {
		t.Run(name, func(t *testing.T) {
			connString = connstr.WithParam(connString, "application_name", "testdb's proxy test")
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
