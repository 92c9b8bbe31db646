package config

import (
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
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

// dsnPassword matches password=... in a key=value connection string, quoted
// ('a b', with \' escapes) or not.
var dsnPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:\\.|[^'\\])*'|\S*)`)

// redactDatabaseURL masks the password of a DATABASE_URL in every place pgx
// reads one: the userinfo, a password query parameter, or a password=
// keyword.
func redactDatabaseURL(s string) string {
	if !strings.Contains(s, "://") {
		return dsnPassword.ReplaceAllString(s, "${1}"+masked)
	}
	u, err := url.Parse(s)
	if err != nil {
		// Cannot tell where the password is; hide everything.
		return "(unparsable URL hidden)"
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), masked)
		}
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", masked)
		u.RawQuery = q.Encode()
	}
	return unescapeMask(u.String())
}
