package testdb

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/omninode/lockworker/internal/tcpproxy"
)

// Proxied returns connString pointed at a new tcpproxy in front of the
// PostgreSQL server it names (closed when the test ends), for a test to cut
// or hang. connString may be a URL or in keyword/value form; one that names
// more than one server or a unix socket, or cannot be parsed, fails the
// test: each form is as good as the other for the tests, so none skips.
func Proxied(t testing.TB, connString string) (string, *tcpproxy.Proxy) {
	t.Helper()
	// ParseConfig also reads the PG* environment variables: the server it
	// finds is the one the test would reach without the proxy.
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		t.Fatalf("testdb.Proxied: parsing the connection string: %v", err)
	}
	// Fallbacks also holds the same server again without TLS (sslmode
	// prefer or allow): only another host or port is a second server.
	for _, fb := range cfg.Fallbacks {
		if fb.Host != cfg.Host || fb.Port != cfg.Port {
			t.Fatalf("testdb.Proxied: the connection string names more than one server (%s:%d, %s:%d): a proxy stands in front of one",
				cfg.Host, cfg.Port, fb.Host, fb.Port)
		}
	}
	if strings.HasPrefix(cfg.Host, "/") {
		t.Fatalf("testdb.Proxied: the connection string names the unix socket %s: the proxy forwards TCP; name a TCP host", cfg.Host)
	}
	proxy := tcpproxy.Start(t, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	host, port, err := net.SplitHostPort(proxy.Addr())
	if err != nil {
		t.Fatalf("testdb.Proxied: the proxy's address %q: %v", proxy.Addr(), err)
	}
	proxied := connString
	if isURL(connString) {
		u, err := url.Parse(connString)
		if err != nil {
			t.Fatalf("testdb.Proxied: parsing the connection string: %v", err)
		}
		u.Host = proxy.Addr()
		proxied = u.String()
	} else {
		// pgconn's parseKeywordValueSettings (pgx v5.12.0, config.go)
		// keeps the last value of a repeated keyword (settings[key] = val),
		// so these win over any host and port before them.
		proxied += " host=" + host + " port=" + port
	}
	// What the string says elsewhere (a host or port in a URL's query)
	// could still lead past the proxy, which the test would not notice.
	got, err := pgconn.ParseConfig(proxied)
	if err != nil {
		t.Fatalf("testdb.Proxied: parsing the rewritten connection string: %v", err)
	}
	if got.Host != host || strconv.Itoa(int(got.Port)) != port {
		t.Fatalf("testdb.Proxied: the rewritten connection string leads to %s:%d, not to the proxy at %s", got.Host, got.Port, proxy.Addr())
	}
	return proxied, proxy
}

// WithParam returns connString with keyword set to value, in either form.
// In a URL the password goes in the user info, where a URL usually has it.
func WithParam(t testing.TB, connString, keyword, value string) string {
	t.Helper()
	if !isURL(connString) {
		// The last value of a repeated keyword wins (see Proxied).
		r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
		return connString + " " + keyword + "='" + r.Replace(value) + "'"
	}
	u, err := url.Parse(connString)
	if err != nil {
		t.Fatalf("testdb.WithParam: parsing the connection string: %v", err)
	}
	// The query is rewritten pair by pair, not through url.Values: pgx, as
	// libpq, reads a "+" as itself, which Values would decode to a space
	// and write for one.
	var query []string
	for _, pair := range strings.Split(u.RawQuery, "&") {
		k, _, _ := strings.Cut(pair, "=")
		if k, err := url.QueryUnescape(k); pair != "" && (err != nil || k != keyword) {
			query = append(query, pair)
		}
	}
	if keyword == "password" {
		u.User = url.UserPassword(u.User.Username(), value)
	} else {
		escape := func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
		query = append(query, escape(keyword)+"="+escape(value))
	}
	u.RawQuery = strings.Join(query, "&")
	return u.String()
}

// isURL tells the two forms apart as pgconn.ParseConfig does.
func isURL(connString string) bool {
	return strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://")
}
