package testdb

import (
	"testing"

	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/internal/tcpproxy"
)

// Proxied returns connString pointed at a new tcpproxy in front of the
// PostgreSQL server it names (closed when the test ends), for a test to cut
// or hang. connString may be a URL or in keyword/value form; one that names
// more than one server or a unix socket, or cannot be parsed, fails the
// test: each form is as good as the other for the tests, so none skips.
func Proxied(t testing.TB, connString string) (string, *tcpproxy.Proxy) {
	t.Helper()
	target, err := connstr.Server(connString)
	if err != nil {
		t.Fatalf("testdb.Proxied: %v: a proxy stands in front of one TCP server", err)
	}
	proxy := tcpproxy.Start(t, target)
	proxied, err := connstr.Redirect(connString, proxy.Addr())
	if err != nil {
		t.Fatalf("testdb.Proxied: %v", err)
	}
	return proxied, proxy
}
