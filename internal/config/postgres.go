package config

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

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
		// What comes before the query, as pgx reads it (a bad
		// percent-escape, say), without the query, whose parameters are
		// checked one by one below, nor TLS files.
		if _, err := pgconn.ParseConfig(strings.TrimSuffix(s[:parts.Query], "?") + "?" + parseOnly); err != nil {
			return errURLAuthority
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
	return paramRefusal(s, false)
}

// poolSettings are the pool sizes pgxpool reads from a connection string,
// which lockworker sets from its own variables whatever the string says.
var poolSettings = map[string]string{"pool_min_conns": "POSTGRES_MIN_CONNECTIONS", "pool_max_conns": "POSTGRES_MAX_CONNECTIONS"}

// splitURL is connstr.SplitURL refusing, as pgx does, a port that is not
// a number from 1 to 65535 and a query parameter without exactly one '=',
// and refusing what pgx would read otherwise than meant.
func splitURL(s string) (connstr.URLParts, error) {
	parts, err := connstr.SplitURL(s)
	if err != nil {
		return connstr.URLParts{}, errURLAuthority
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
	// Checked before the ports: a '/' in an unescaped password ends the
	// user info early and lands the rest in a port ("app:k3J/x@db").
	if strings.ContainsRune(s[parts.Userinfo[0]:parts.Userinfo[1]], '?') || strings.IndexByte(s[hostStart:parts.Query], '@') >= 0 {
		return connstr.URLParts{}, errAmbiguousURL
	}
	for _, p := range parts.Ports {
		if port, err := strconv.ParseUint(s[p[0]:p[1]], 10, 16); p[1] > p[0] && (err != nil || port == 0) {
			return connstr.URLParts{}, errURLAuthority
		}
	}
	for params := s[parts.Query:]; params != ""; {
		var pair string
		pair, params, _ = strings.Cut(params, "&")
		if strings.Count(pair, "=") != 1 {
			return connstr.URLParts{}, errURLQuery
		}
	}
	return parts, nil
}

// percentEncode is the advice of a URL's errors: pgx reads these
// characters as the URL's own.
const percentEncode = "percent-encode '/' as %2F, '@' as %40, '?' as %3F and '%' as %25 in the user name, password and database name"

// The errors of a URL pgx refuses or reads otherwise than meant. None
// quotes the URL: what pgx took for a host, a port or a parameter may be
// part of a password.
var (
	errAmbiguousURL = errors.New("is a URL pgx would read otherwise than meant, part of a password as a host, database or user name (value not shown): " + percentEncode)
	errURLAuthority = errors.New("is a URL whose user name, password, host, port or database name pgx cannot read (value not shown: it may hold a password): a port is a number from 1 to 65535; " + percentEncode)
	errURLQuery     = errors.New("is a URL with a query parameter that is not one key=value (value not shown: it may hold a password): percent-encode '=' as %3D and '&' as %26 in a value")
)

// param is a connection string's parameter: its key, and the whole
// key=value pair as written.
type param struct{ key, raw string }

// connParams returns the parameters of connection string s (those of a
// URL's query), with a base to check them against, a connection string
// of its form without a secret or a file (parseOnly), and the separator
// that joins a parameter to it.
func connParams(s string) (params []param, base, sep string) {
	if connstr.IsURL(s) {
		if parts, err := connstr.SplitURL(s); err == nil && parts.Query < len(s) {
			for _, pair := range strings.Split(s[parts.Query:], "&") {
				key, _, _ := strings.Cut(pair, "=")
				params = append(params, param{lenientUnescape(key), pair})
			}
		}
		return params, "postgres://127.0.0.1:5432/d?" + parseOnly, "&"
	}
	pairs, _ := connstr.SplitKeywordValue(s)
	for _, p := range pairs {
		params = append(params, param{p.Key, p.Key + "=" + cmp.Or(s[p.Start:p.End], "''")})
	}
	return params, "host=127.0.0.1 port=5432 user=u password=x dbname=d sslrootcert='' sslcert='' sslkey=''", " "
}

// parseOnly are the URL parameters that keep pgx's parse of a string
// checked to parsing: no file read (the defaults in the home directory's
// ~/.postgresql, a PGSSLROOTCERT, the ~/.pgpass of a string without a
// password) and no lookup of the OS user (of one without a user). A
// parameter after them wins.
const parseOnly = "user=u&password=x&sslrootcert=&sslcert=&sslkey="

// fileParams are the parameters naming files pgx reads while parsing,
// each with the name errors give it and the parameters pgx reads its
// files by.
var fileParams = func() map[string]fileParam {
	root := fileParam{"sslrootcert", []string{"sslrootcert"}}
	pair := fileParam{"sslcert/sslkey", []string{"sslcert", "sslkey", "sslpassword", "sslcertmode", "sslmode"}}
	service := fileParam{"service/servicefile", []string{"service", "servicefile"}}
	return map[string]fileParam{"sslrootcert": root, "sslcert": pair, "sslkey": pair, "service": service, "servicefile": service}
}()

type fileParam struct {
	name string
	with []string
}

// paramRefusal names the first parameter of connection string s that pgx
// refuses on its own, and pgx's reason; nil when none is. A parameter
// naming a file (fileParams) is checked, with the parameters pgx reads
// its file by, only when files is set, as the file is then read: FromEnv
// checks the rest, and the worker's start the files. A password or
// sslpassword is never checked alone, nor shown: the reason is pgx's,
// which quotes at most the value of the parameter named (for a
// sslcert/sslkey holding a sslpassword, its inner error, which pgx builds
// from the files alone).
func paramRefusal(s string, files bool) error {
	params, base, sep := connParams(s)
	checked := map[string]bool{}
	for _, p := range params {
		fp, isFile := fileParams[p.key]
		if secretKey(p.key) || (isFile && !files) {
			continue
		}
		name, raws, secret := p.key, []string{p.raw}, false
		if isFile {
			name, raws = fp.name, nil
			for _, q := range params {
				if slices.Contains(fp.with, q.key) {
					raws = append(raws, q.raw)
					secret = secret || secretKey(q.key)
				}
			}
		}
		if checked[name] {
			continue
		}
		checked[name] = true
		_, err := pgxpool.ParseConfig(base + sep + strings.Join(raws, sep))
		pe, ok := errors.AsType[*pgconn.ParseConfigError](err)
		switch {
		case err == nil:
			continue
		case ok && secret:
			if inner := pe.Unwrap(); inner != nil {
				return fmt.Errorf("parameter %s: pgx refuses it: %w", name, inner)
			}
		case ok:
			// pgx's text quotes the string checked, which holds no
			// secret: what follows it is pgx's reason.
			if _, reason, found := strings.Cut(pe.Error(), "`: "); found {
				return fmt.Errorf("parameter %s: pgx refuses it: %s", name, reason)
			}
		}
		return fmt.Errorf("parameter %s: pgx refuses it (reason not shown: it may hold a password)", name)
	}
	return nil
}

// PostgresParamRefusal names the parameter of DATABASE_URL that pgx
// refuses, the files parameters name (sslrootcert, sslcert and sslkey, a
// service file) read and checked too, which FromEnv does not do: for the
// worker's start, where store.Open's error does not say which. nil when
// no parameter is refused on its own. It never quotes a password.
func (c Config) PostgresParamRefusal() error {
	if c.Postgres.URL == "" {
		return nil
	}
	return paramRefusal(c.Postgres.URL, true)
}

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
