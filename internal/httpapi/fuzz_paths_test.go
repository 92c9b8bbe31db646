package httpapi

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"
)

// probePaths are the paths FuzzProbes sends its requests to: every probe
// and /metrics.
var probePaths = []string{"/health", "/health/live", "/health/postgres", "/health/kafka", "/health/locks", "/health/metrics", "/metrics"}

// FuzzProbes sends any bytes as a request's method, the rest of its target
// after one of probePaths (more path, a query) and one header, on a
// connection of its own (whatever an HTTP client would refuse to send), to
// a server with an INSPECT_TOKEN over a real PostgreSQL and a kfake
// broker. Each request is answered before a deadline well past the
// checks' (no hang; no panic, which drops the connection unanswered), as
// docs/design.md "HTTP endpoints" says: one Go's server cannot read is
// refused before any handler (400, 431, 501 or 505 in plain text; 417 for
// an Expect it does not know); a path to clean is redirected (307); a
// probe answers JSON, /health and the checks 200 or 503 as their status
// says, /health/live and /health/metrics 200, /health/locks 401 without
// the token; /metrics 200 in the format its Accept negotiated; any other
// method 405 with Allow "GET, HEAD", any other path 404, both JSON.
// Requests pipelined after the first are answered alike, or the connection
// is closed. `go test` runs the seeds; `go test -fuzz FuzzProbes
// ./internal/httpapi` explores.
func FuzzProbes(f *testing.F) {
	e := newEnv(f, nil, func(c *Config) { c.InspectToken = "inspect-secret" })
	mux := e.srv.Config.Handler.(*http.ServeMux)
	addr := e.srv.Listener.Addr().String()
	for i := range probePaths {
		f.Add(uint8(i), http.MethodGet, "", "", "")
		f.Add(uint8(i), http.MethodHead, "", "", "")
		f.Add(uint8(i), http.MethodPost, "", "Content-Length", "3")
		f.Add(uint8(i), http.MethodGet, "/", "", "")
		f.Add(uint8(i), http.MethodGet, "?x=%zz&x=\xff;y", "", "")
	}
	for _, s := range []struct {
		path                      uint8
		method, tail, name, value string
	}{
		{4, "GET", "", "Authorization", "Bearer inspect-secret"},
		{4, "GET", "", "Authorization", "bEaReR    inspect-secret"},
		{4, "HEAD", "", "Authorization", "Bearer inspect-secre"},
		{4, "GET", "", "Authorization", "Bearer inspect-secret\x00"},
		{6, "GET", "", "Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"},
		{6, "GET", "", "Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"},
		{6, "GET", "", "Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=compact-text"},
		{6, "GET", "", "Accept", "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8"},
		{6, "GET", "", "Accept", "text/plain;version=0.0.4;q=0.5,*/*;q=0.1;escaping=dots"},
		{6, "GET", "", "Accept", ";;;=,\xff"},
		{6, "GET", "", "Accept-Encoding", "gzip"},
		{6, "GET", "", "Accept-Encoding", "zstd, br;q=1.0, gzip;q=0"},
		{0, "GET", "", "Expect", "100-continue"},
		{0, "GET", "", "Expect", "teapot"},
		{0, "GET", "", "Transfer-Encoding", "chunked"},
		{0, "GET", "", "Transfer-Encoding", "gzip"},
		{0, "GET", "", "Content-Length", "99999999999"},
		{0, "GET", "", "Content-Length", "-1"},
		{0, "GET", "", "Host", "other"},
		{0, "GET", "", "X\xff", "v"},
		{0, "GET", "", "X", "\x00\r"},
		{0, "get", "", "", ""},
		{0, "CONNECT", "/../metrics", "", ""},
		{0, "DELETE", "/../metrics", "", ""},
		{0, "GET", "/../metrics", "", ""},
		{0, "GET", "/./live", "", ""},
		{0, "GET", "//live", "", ""},
		{0, "GET", "%2Flive", "", ""},
		{1, "GET", "%2F", "", ""},
		{0, "GET", "/%2E%2E/locks/a", "", ""},
		{0, "OPTIONS", "", "", ""},
		{0, "", "", "", ""},
		{0, "GET", "\x00", "", ""},
		{0, "GET", " HTTP/1.0\r\n\r\n", "", ""},
		{0, "GET", " HTTP/2.0\r\nX:", "", ""},
		{0, "GET", "#frag", "", ""},
		{0, "GET", "/" + strings.Repeat("x", 20_000), "", ""},
		{0, "GET", "", "X", strings.Repeat("v", 1<<20)},
		// Pipelined: the first request's headers end early, and more
		// requests follow.
		{0, "GET", "", "X", "1\r\n\r\nGET /health/live HTTP/1.1\r\nHost: a"},
		{0, "GET", "", "X", "1\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: a\r\n\r\nGET * HTTP/1.1\r\nHost: a"},
		{5, "GET /locks/a HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer inspect-secret\r\n\r\nGET", "", "", ""},
		// A body declared, never sent: by the first request, by a later one.
		{0, "GET", "", "Content-Length", "9999\n\n9999999"},
		{0, "GET", "", "X", "1\r\n\r\nGET /health/live HTTP/1.1\r\nHost: a\r\nContent-Length: 99\r\n\r\n"},
		// Refused at the request line with most of raw unread: Go's
		// server closes at once, so the client's write or its read of the
		// answer may end in a reset.
		{0, "G,T", "", "X", strings.Repeat("v", 1<<20)},
		{0, "G,T", "", "\x80", strings.Repeat("v", 1<<20)},
		// HTTP/1.0: the scrape's body runs until the connection ends, which
		// the unread bytes after it end in a reset.
		{6, "GET", " HTTP/1.0\r\n\r\n" + strings.Repeat("z", 8<<10), "", ""},
	} {
		f.Add(s.path, s.method, s.tail, s.name, s.value)
	}
	f.Fuzz(func(t *testing.T, p uint8, method, tail, name, value string) {
		raw := method + " " + probePaths[int(p)%len(probePaths)] + tail + " HTTP/1.1\r\nHost: lockworker\r\n"
		if name != "" || value != "" {
			raw += name + ": " + value + "\r\n"
		}
		raw += "Connection: close\r\n\r\n"
		exchange(t, mux, addr, raw)
	})
}

// exchange sends raw on a connection of its own and checks each answer
// (checkAnswer) against the request Go's parser reads from raw, as the
// server does.
func exchange(t *testing.T, mux *http.ServeMux, addr, raw string) {
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	// Past every check's bound (2 s; a scrape's 4 s): a later answer
	// hangs. Under the fuzzing engine's 10 s an input, past which it kills
	// the process without this test's message.
	require.NoError(t, conn.SetDeadline(time.Now().Add(8*time.Second)))
	// Not half-closed after it: Go's server takes that for a client gone,
	// and cancels the requests' contexts.
	_, err = io.WriteString(conn, raw)
	if reset(err) {
		err = nil // refused and closed before raw was all sent: the answer came first
	}
	require.NoError(t, err, "sending %s", quoted(raw))
	in, out := bufio.NewReader(strings.NewReader(raw)), bufio.NewReader(conn)
	for first := true; ; first = false {
		req, parseErr := http.ReadRequest(in)
		var bodyErr error
		if parseErr == nil {
			_, bodyErr = io.Copy(io.Discard, req.Body)
		}
		if !first && parseErr != nil {
			// Nothing more, or bytes the server may still be waiting
			// to complete: no answer is due.
			return
		}
		if parseErr == nil && bodyErr != nil && !req.Close {
			// A body declared longer than raw holds (a bare LF ending the
			// headers early): net/http reads the rest before answering
			// (under 256 KiB), until the server's ReadTimeout (10 s in
			// cmd/lockworker; the fuzzing engine gives an input 10 s).
			return
		}
		// The first request is answered whatever follows: raw ends its
		// headers.
		resp, err := http.ReadResponse(out, req)
		if !first && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)) {
			return // the server closed the connection after an answer
		}
		require.NoError(t, err, "no answer to %s", quoted(raw))
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if reset(err) && resp.Close && resp.ContentLength < 0 && len(resp.TransferEncoding) == 0 {
			// A body the connection's end ends (a refusal, an HTTP/1.0
			// answer), closed with raw partly unread: the kernel resets
			// such a connection rather than ending it.
			err = nil
		}
		require.NoError(t, err, "answer to %s", quoted(raw))
		checkAnswer(t, mux, req, parseErr, resp, body)
		if parseErr != nil || bodyErr != nil || resp.Close {
			return // the server reads no further
		}
	}
}

// reset says err is a connection reset by the server, or a write after it.
func reset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// quoted is raw for a failure's message: quoted, its middle left out past
// 1 KiB (testify cannot print a message of a megabyte).
func quoted(raw string) string {
	if len(raw) <= 1024 {
		return strconv.Quote(raw)
	}
	return fmt.Sprintf("%q ...(%d bytes)... %q", raw[:512], len(raw), raw[len(raw)-512:])
}

// checkAnswer checks resp, whose body is body, as the answer to req (nil:
// parseErr said why Go's parser could not read it).
func checkAnswer(t *testing.T, mux *http.ServeMux, req *http.Request, parseErr error, resp *http.Response, body []byte) {
	code := resp.StatusCode
	head := req != nil && req.Method == http.MethodHead
	if goRefused(resp) {
		return // by Go's server, before any handler
	}
	require.NoError(t, parseErr, "%d answered to a request Go cannot read: %s", code, body)
	what := fmt.Sprintf("%s %q (%q): %d %s", req.Method, req.URL.EscapedPath(), req.URL.RawQuery, code, body)
	switch {
	case code == http.StatusExpectationFailed:
		require.NotEmpty(t, req.Header.Get("Expect"), "%s: 417 without an Expect header", what)
		return
	case req.RequestURI == "*":
		// Go's server: OPTIONS * answers what it allows, nothing else
		// reaches a handler.
		require.Contains(t, []int{http.StatusOK, http.StatusBadRequest}, code, what)
		return
	case req.Method != http.MethodConnect && cleanPath(req.URL.EscapedPath()) != req.URL.EscapedPath():
		require.Equal(t, http.StatusTemporaryRedirect, code, "%s: a path to clean is redirected", what)
		require.NotEmpty(t, resp.Header.Get("Location"), what)
		return
	}
	_, pattern := mux.Handler(req)
	if pattern == "GET /metrics" {
		require.Equal(t, http.StatusOK, code, what)
		if !head {
			checkScrape(t, resp, body, what)
		}
		return
	}
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"), what)
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"), what)
	var v map[string]any
	if !head {
		require.NoError(t, json.Unmarshal(body, &v), "%s: not JSON", what)
	}
	status := func(ok, failed []string) { // a check's answer
		if head {
			return
		}
		if code == http.StatusOK {
			require.Contains(t, ok, v["status"], what)
		} else {
			require.Contains(t, failed, v["status"], what)
		}
	}
	switch pattern {
	case "GET /health":
		require.Contains(t, []int{http.StatusOK, http.StatusServiceUnavailable}, code, what)
		status([]string{statusOK, statusDegraded}, []string{statusUnavailable, statusDraining, statusWithdrawn})
		if !head {
			require.Equal(t, true, v["live"], what)
			require.Equal(t, code == http.StatusOK, v["ready"], what)
			require.Contains(t, v["checks"], "postgres", what)
			require.Contains(t, v["checks"], "kafka", what)
		}
	case "GET /health/live":
		require.Equal(t, http.StatusOK, code, what)
		status([]string{statusOK}, nil)
	case "GET /health/postgres", "GET /health/kafka":
		require.Contains(t, []int{http.StatusOK, http.StatusServiceUnavailable}, code, what)
		status([]string{statusOK}, []string{statusUnavailable})
	case "GET /health/locks":
		if !bearsToken(req, "inspect-secret") {
			require.Equal(t, http.StatusUnauthorized, code, "%s: no token, no answer", what)
			require.NotEmpty(t, resp.Header.Get("WWW-Authenticate"), what)
			checkError(t, head, v, what)
			return
		}
		require.Contains(t, []int{http.StatusOK, http.StatusServiceUnavailable}, code, what)
		status([]string{statusOK}, []string{statusUnavailable})
	case "GET /health/metrics":
		require.Equal(t, http.StatusOK, code, what)
	case "GET /locks/{name...}", "GET /locks", "GET /sessions/{id...}", "GET /sessions":
		// FuzzInspection's; reached here by a request pipelined after
		// the first.
		require.Contains(t, []int{http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound, http.StatusServiceUnavailable}, code, what)
	case "/":
		_, asGet := mux.Handler(&http.Request{Method: http.MethodGet, URL: req.URL, Host: req.Host})
		if req.Method != http.MethodGet && req.Method != http.MethodHead && asGet != "/" {
			require.Equal(t, http.StatusMethodNotAllowed, code, "%s: a path served with another method", what)
			require.Equal(t, "GET, HEAD", resp.Header.Get("Allow"), what)
		} else {
			require.Equal(t, http.StatusNotFound, code, "%s: no such endpoint", what)
		}
		checkError(t, head, v, what)
	default:
		t.Fatalf("%s: served by %q, which this target does not know", what, pattern)
	}
}

// goRefused reports whether resp is Go's server refusing a request it cannot
// read, before any handler: a status of those, in plain text, closing the
// connection.
func goRefused(resp *http.Response) bool {
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusRequestHeaderFieldsTooLarge, http.StatusNotImplemented, http.StatusHTTPVersionNotSupported:
		return resp.Header.Get("Content-Type") == "text/plain; charset=utf-8" && resp.Close
	}
	return false
}

// checkError checks an error answer's body: {"error": "..."}.
func checkError(t *testing.T, head bool, v map[string]any, what string) {
	if head {
		return
	}
	require.Len(t, v, 1, what)
	require.NotEmpty(t, v["error"], what)
}

// checkScrape checks a scrape's body: metric families in the format its
// Content-Type names, one the request's Accept could negotiate, compressed
// as its Content-Encoding says.
func checkScrape(t *testing.T, resp *http.Response, body []byte, what string) {
	format := expfmt.Format(resp.Header.Get("Content-Type"))
	typ := format.FormatType()
	require.Contains(t, []expfmt.FormatType{expfmt.TypeTextPlain, expfmt.TypeProtoDelim, expfmt.TypeProtoText, expfmt.TypeProtoCompact}, typ,
		"%s: Content-Type %q", what, format)
	var r io.Reader = strings.NewReader(string(body))
	switch enc := resp.Header.Get("Content-Encoding"); enc {
	case "":
	case "gzip":
		zr, err := gzip.NewReader(r)
		require.NoError(t, err, what)
		r = zr
	default:
		t.Fatalf("%s: Content-Encoding %q", what, enc)
	}
	if typ != expfmt.TypeTextPlain && typ != expfmt.TypeProtoDelim {
		// Formats expfmt writes but does not read.
		b, err := io.ReadAll(r)
		require.NoError(t, err, what)
		require.NotEmpty(t, b, what)
		return
	}
	dec := expfmt.NewDecoder(r, format)
	var names []string
	for {
		var mf dto.MetricFamily
		err := dec.Decode(&mf)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "%s: not %s", what, format)
		names = append(names, mf.GetName())
	}
	require.True(t, slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, "lockworker_") }),
		"%s: no lockworker metric among %v", what, names)
}

// bearsToken reports whether req presents token as a bearer token: the
// scheme in any case, then spaces (RFC 7235).
func bearsToken(req *http.Request, token string) bool {
	scheme, rest, ok := strings.Cut(req.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") && strings.TrimLeft(rest, " ") == token
}

// cleanPath is p as ServeMux cleans it (its redirect's target): rooted,
// without empty, "." or ".." segments, keeping a trailing slash.
func cleanPath(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np
}
