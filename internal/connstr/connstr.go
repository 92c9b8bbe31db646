// Package connstr edits PostgreSQL connection strings in either of pgx's
// forms, a postgres:// URL or keyword/value pairs, by appending to them
// rather than rewriting them: pgconn keeps the last value of a repeated
// keyword, and applies a URL's query after its user info, host and path, so
// an appended parameter wins in both forms, and what the string said
// otherwise is left exactly as written (net/url refuses some URLs pgx
// accepts, and would re-encode others). It splits them as pgconn does, for
// that and for the configuration's checks and redaction.
package connstr

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// IsURL tells the two forms apart as pgconn.ParseConfig does: only these
// prefixes make a URL; anything else, "://" or not, is keyword/value.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// WithParam returns s with keyword set to value, whatever s said of it
// before (the URL's user info, host, port or path included).
func WithParam(s, keyword, value string) string {
	if !IsURL(s) {
		// What s ends in could take the pair in: a last keyword still
		// waiting for its value gets the empty one pgconn gives it, and a
		// last unquoted value's unpaired backslash, which would escape the
		// space before the pair, is dropped, as pgconn drops it.
		waiting, backslash := ending(s)
		if backslash {
			s = s[:len(s)-1]
			waiting, _ = ending(s) // a value that was the backslash alone
		}
		if waiting {
			s += "''"
		}
		// Quoted, its backslashes and quotes escaped, as
		// parseKeywordValueSettings reads them.
		r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
		return strings.TrimLeft(s+" "+keyword+"='"+r.Replace(value)+"'", " ")
	}
	// Escaped whole ("@" and "/" too: as libpq, pgconn takes an "@" before
	// the first "/" for the end of the user info), a space as %20: pgconn,
	// as libpq, reads a "+" as itself.
	escape := func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
	sep := "&"
	switch parts, err := SplitURL(s); {
	case err != nil || !parts.HasQuery:
		sep = "?" // refused either way when s is
	case parts.Query == len(s) || strings.HasSuffix(s, "&"):
		sep = "" // an empty pair would be refused
	}
	return s + sep + escape(keyword) + "=" + escape(value)
}

// URLParts locates what pgconn's parseURLSettings reads of a postgres://
// URL apart from net/url: s[Userinfo[0]:Userinfo[1]] is the user info
// before "@" (empty when absent), s[p[0]:p[1]] for each p of Ports a
// host's port as written (hosts without ":" give none), and the query's
// parameters begin at Query, after its "?" (len(s) when there is none;
// HasQuery tells an empty query apart).
type URLParts struct {
	Userinfo [2]int
	Ports    [][2]int
	Query    int
	HasQuery bool
}

// errURL is SplitURL's error.
var errURL = errors.New("not a postgres:// URL pgx reads")

// SplitURL splits URL s as parseURLSettings does, unlike net/url: the user
// info ends at the first "@" before any "/" (so "?" and "#" may be in a
// password unescaped), a list of hosts may follow (one in brackets, an
// IPv6 address, taken whole), and the query starts at the first "?" after
// them. An unterminated bracket is an error; the ports and the query's
// parameters are not read.
func SplitURL(s string) (URLParts, error) {
	i := strings.Index(s, "://") + len("://")
	parts := URLParts{Userinfo: [2]int{i, i}, Query: len(s)}
	if at := strings.IndexAny(s[i:], "@/"); at >= 0 && s[i+at] == '@' {
		parts.Userinfo[1] = i + at
		i += at + 1
	}
	for {
		if i < len(s) && s[i] == '[' {
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return URLParts{}, errURL
			}
			i += end + 1
		} else {
			i += indexOrLen(s[i:], ":/?,")
		}
		if i < len(s) && s[i] == ':' {
			i++
			end := i + indexOrLen(s[i:], "/?,")
			parts.Ports = append(parts.Ports, [2]int{i, end})
			i = end
		}
		if i >= len(s) || s[i] != ',' {
			break
		}
		i++
	}
	if i < len(s) && s[i] == '/' {
		i += indexOrLen(s[i:], "?")
	}
	if i < len(s) && s[i] == '?' {
		parts.Query, parts.HasQuery = i+1, true
	}
	return parts, nil
}

func indexOrLen(s, chars string) int {
	if i := strings.IndexAny(s, chars); i >= 0 {
		return i
	}
	return len(s)
}

// ending says how keyword/value string s ends, read as pgconn reads it:
// its last keyword waiting for a value, or its last value unquoted and
// ending in an unpaired backslash. What it says of a string pgconn refuses
// does not matter: what is appended cannot mend it.
func ending(s string) (waiting, backslash bool) {
	pairs, err := SplitKeywordValue(s)
	if err != nil || len(pairs) == 0 {
		return false, false
	}
	last := pairs[len(pairs)-1]
	if last.Start == len(s) {
		return true, false
	}
	value := s[last.Start:last.End]
	if value[0] == '\'' {
		return false, false
	}
	// Backslashes pair off from the left: an odd run at the end leaves
	// the last one escaping nothing.
	run := len(value) - len(strings.TrimRight(value, `\`))
	return false, run%2 == 1
}

// Pair is one setting of a keyword/value string: s[Start:End] is its value
// as written (quotes and backslashes included).
type Pair struct {
	Key        string
	Start, End int
}

// errKeywordValue is SplitKeywordValue's error.
var errKeywordValue = errors.New("not a keyword/value connection string")

// spaces are the white space of libpq's connection strings.
const spaces = " \t\n\v\f\r"

func isSpace(c byte) bool { return strings.IndexByte(spaces, c) >= 0 }

func skipSpaces(s string, i int) int {
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return i
}

// SplitKeywordValue splits a keyword/value string as pgconn's
// parseKeywordValueSettings does: a value is quoted ('a b', \' and \\
// escaped) or runs to the next unescaped white space, and a backslash
// escapes the next character either way. A string pgconn refuses (a
// keyword without "=", an empty keyword, an unterminated quote) is an
// error.
func SplitKeywordValue(s string) ([]Pair, error) {
	var pairs []Pair
	for i := skipSpaces(s, 0); i < len(s); {
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 {
			return nil, errKeywordValue
		}
		key := strings.TrimRight(s[i:i+eq], spaces)
		if key == "" || strings.ContainsAny(key, spaces) {
			return nil, errKeywordValue
		}
		start := skipSpaces(s, i+eq+1)
		end := start
		if end < len(s) && s[end] == '\'' {
			for end++; end < len(s) && s[end] != '\''; end++ {
				if s[end] == '\\' {
					end++
				}
			}
			if end >= len(s) {
				return nil, errKeywordValue // unterminated quote
			}
			end++
		} else {
			for ; end < len(s) && !isSpace(s[end]); end++ {
				if s[end] == '\\' {
					end++
				}
			}
			end = min(end, len(s)) // a trailing backslash ends the string
		}
		pairs = append(pairs, Pair{Key: key, Start: start, End: end})
		i = skipSpaces(s, end)
	}
	return pairs, nil
}

// Server is the one TCP server s leads to, host:port, as pgconn reads it
// (the PG* environment variables included). A string that names more than
// one server or a unix socket, or that pgconn refuses, is an error, which
// never quotes s: it may hold a password.
func Server(s string) (string, error) {
	cfg, err := pgconn.ParseConfig(s)
	if err != nil {
		return "", fmt.Errorf("parsing the connection string: invalid (not shown: it may hold a password)")
	}
	// Fallbacks also holds the same server again without TLS (sslmode
	// prefer or allow): only another host or port is a second server.
	for _, fb := range cfg.Fallbacks {
		if fb.Host != cfg.Host || fb.Port != cfg.Port {
			return "", fmt.Errorf("the connection string names more than one server (%s:%d, %s:%d)", cfg.Host, cfg.Port, fb.Host, fb.Port)
		}
	}
	if network, _ := pgconn.NetworkAddress(cfg.Host, cfg.Port); network == "unix" {
		return "", fmt.Errorf("the connection string names the unix socket %s, not a TCP host", cfg.Host)
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), nil
}

// Redirect returns s pointed at addr (host:port, a proxy's, say) instead
// of its server, everything else kept.
func Redirect(s, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("redirecting the connection string: %w", err)
	}
	out := WithParam(WithParam(s, "host", host), "port", port)
	if got, err := Server(out); err != nil || got != net.JoinHostPort(host, port) {
		return "", fmt.Errorf("the redirected connection string does not lead to %s alone (%s, %v)", addr, got, err)
	}
	return out, nil
}
