package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/omninode/lockworker/internal/connstr"
)

// PostgresURL is the connection string for pgx: DATABASE_URL when set,
// otherwise a postgres:// URL built from the POSTGRES_* settings with user,
// password and database escaped.
func (c Config) PostgresURL() string {
	p := c.Postgres
	if p.URL != "" {
		return p.URL
	}
	return p.buildURL(p.Password)
}

// buildURL is shared with redaction, which passes a masked password.
func (p PostgresConfig) buildURL(password string) string {
	u := &url.URL{
		Scheme: "postgres",
		Host:   net.JoinHostPort(p.Host, strconv.Itoa(p.Port)),
		Path:   "/" + p.Database,
		// RawPath escapes '/' too, so a database name holding one survives
		// pgx's url.Path based parsing.
		RawPath: "/" + url.PathEscape(p.Database),
	}
	if password != "" {
		u.User = url.UserPassword(p.User, password)
	} else if p.User != "" {
		u.User = url.User(p.User)
	}
	return u.String()
}

// unescapeMask keeps the mask readable: url escapes '*' in userinfo and
// queries.
func unescapeMask(s string) string { return strings.ReplaceAll(s, "%2A%2A%2A", masked) }

// redactedURL is the connection string with its password masked.
func (p PostgresConfig) redactedURL() string {
	if p.URL != "" {
		return redactDatabaseURL(p.URL)
	}
	return unescapeMask(p.buildURL(mask(p.Password)))
}

// The connection string is split as pgx (v5, after libpq) splits it, so
// that redaction masks exactly the values pgx reads as secrets, and
// validation refuses what pgx would refuse when connecting.

// secretKey reports whether pgx reads the value of key as a secret: the
// password, and sslpassword, which decrypts the client key. Case is ignored
// so that a near miss (sent to the server as a runtime parameter) is
// masked too.
func secretKey(key string) bool {
	return strings.EqualFold(key, "password") || strings.EqualFold(key, "sslpassword")
}

// errConnString never quotes the string: it may hold a password.
var errConnString = errors.New("is neither a postgres:// URL nor a key=value connection string (value not shown: it may hold a password)")

// checkConnString checks the string's shape as pgx does before connecting
// (a bad percent-escape or an unreadable file still fails only then), and
// refuses more: a URL's control characters, and the pool sizes lockworker
// sets itself.
func checkConnString(s string) error {
	var keys []string
	if connstr.IsURL(s) {
		if strings.ContainsFunc(s, isControl) {
			// pgx takes them as written: a line end at the end of
			// "postgres://db/x\n" is part of the database name, which
			// store.Open would then create.
			return errors.New("holds a control character (a line end from the file a secret was made of?; percent-encode one that belongs in it); value not shown: it may hold a password")
		}
		parts, err := splitURL(s)
		if err != nil {
			return err
		}
		if parts.Query < len(s) {
			for _, pair := range strings.Split(s[parts.Query:], "&") {
				key, _, _ := strings.Cut(pair, "=")
				keys = append(keys, lenientUnescape(key))
			}
		}
	} else {
		pairs, err := connstr.SplitKeywordValue(s)
		if err != nil || len(pairs) == 0 {
			return errConnString
		}
		for _, p := range pairs {
			if strings.Contains(p.Key, "://") {
				// pgx would send the "jdbc:postgresql://db/x?user" of
				// "jdbc:postgresql://db/x?user=u" as a parameter and
				// connect to its defaults: it is a URL of the wrong scheme.
				return errConnString
			}
			keys = append(keys, p.Key)
		}
	}
	for _, k := range keys {
		if v, ok := poolSettings[k]; ok {
			return fmt.Errorf("sets %s, which lockworker would override: set %s instead", k, v)
		}
	}
	return nil
}

// poolSettings are the pool sizes pgxpool reads from a connection string,
// which lockworker sets from its own variables whatever the string says.
var poolSettings = map[string]string{"pool_min_conns": "POSTGRES_MIN_CONNECTIONS", "pool_max_conns": "POSTGRES_MAX_CONNECTIONS"}

// splitURL is connstr.SplitURL refusing, as pgx does, a port that is not
// a number from 1 to 65535 and a query parameter without exactly one '='.
func splitURL(s string) (connstr.URLParts, error) {
	parts, err := connstr.SplitURL(s)
	if err != nil {
		return connstr.URLParts{}, errConnString
	}
	for _, p := range parts.Ports {
		// A '/' in an unescaped password ends the userinfo early and
		// lands its rest here.
		if port, err := strconv.ParseUint(s[p[0]:p[1]], 10, 16); p[1] > p[0] && (err != nil || port == 0) {
			return connstr.URLParts{}, errConnString
		}
	}
	for params := s[parts.Query:]; params != ""; {
		var pair string
		pair, params, _ = strings.Cut(params, "&")
		if strings.Count(pair, "=") != 1 {
			return connstr.URLParts{}, errConnString
		}
	}
	// pgx ends the user info at the first '@' or '/', so an unescaped '@'
	// or '/' in a password moves the rest of it into the host, port or
	// database name ("postgres://app:p@ss@db/x", "postgres://app:/s3cr3t@db/x"),
	// and a query's password holding an '@' makes the query the user info
	// ("postgres://db?user=app&password=p@ss"). pgx takes them, connects
	// elsewhere, and logs the host it dials: refused. Any '@' before the
	// query but the one ending the user info, and a '?' in the user info,
	// is one of these (or a database name's '@', which cannot be told
	// apart from them: %40 says it).
	hostStart := parts.Userinfo[0]
	if parts.Userinfo[1] < len(s) && s[parts.Userinfo[1]] == '@' {
		hostStart = parts.Userinfo[1] + 1
	}
	if strings.ContainsRune(s[parts.Userinfo[0]:parts.Userinfo[1]], '?') || strings.IndexByte(s[hostStart:parts.Query], '@') >= 0 {
		return connstr.URLParts{}, errAmbiguousURL
	}
	return parts, nil
}

// errAmbiguousURL is splitURL's error for a URL pgx reads otherwise than
// meant, a password in its host, path or user name.
var errAmbiguousURL = errors.New("is a URL pgx would read otherwise than meant, part of a password as a host, database or user name (value not shown): percent-encode '/' as %2F, '@' as %40 and '?' as %3F in the user name, password and database name")

// redactDatabaseURL masks every secret of a DATABASE_URL where pgx reads
// one: the URL's userinfo password, a password or sslpassword query
// parameter, or a password or sslpassword keyword.
func redactDatabaseURL(s string) string {
	if !connstr.IsURL(s) {
		pairs, err := connstr.SplitKeywordValue(s)
		if err != nil {
			// Cannot tell where the password ends; hide everything.
			return "(invalid connection string hidden)"
		}
		var b strings.Builder
		last := 0
		for _, p := range pairs {
			if secretKey(p.Key) && p.End > p.Start {
				b.WriteString(s[last:p.Start])
				b.WriteString(masked)
				last = p.End
			}
		}
		b.WriteString(s[last:])
		return b.String()
	}
	parts, err := splitURL(s)
	if err != nil {
		return "(invalid connection string hidden)"
	}
	var b strings.Builder
	userinfo := s[parts.Userinfo[0]:parts.Userinfo[1]]
	b.WriteString(s[:parts.Userinfo[0]])
	if user, password, ok := strings.Cut(userinfo, ":"); ok && password != "" {
		userinfo = user + ":" + masked
	}
	b.WriteString(userinfo)
	b.WriteString(s[parts.Userinfo[1]:parts.Query])
	if parts.Query < len(s) {
		pairs := strings.Split(s[parts.Query:], "&")
		for i, pair := range pairs {
			// pgx decodes the key first: pass%77ord is a password too.
			if key, value, _ := strings.Cut(pair, "="); value != "" && secretKey(lenientUnescape(key)) {
				pairs[i] = key + "=" + masked
			}
		}
		b.WriteString(strings.Join(pairs, "&"))
	}
	return b.String()
}

// lenientUnescape decodes a URL query key as pgx does before matching it,
// without failing: a bad escape stays as written.
func lenientUnescape(s string) string {
	s = strings.Trim(s, " ")
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}
