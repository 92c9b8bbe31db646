package httpapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// FuzzInspection sends any lock name, namespace, session id and bearer
// token to /locks and /sessions over a real PostgreSQL, the name escaped as
// the README tells clients to, the namespace encoded and followed by any raw
// query: each answer is 200, 400, 401 or 404 with a JSON body (no redirect,
// no dropped connection); a server with an INSPECT_TOKEN answers 401 to any
// other token, and a server without one never shows owner_metadata; a lock
// is answered about only when the query names one namespace; a 200 is
// about that namespace and about the lock or session the path names. `go
// test` runs the seeds; `go test -fuzz FuzzInspection ./internal/httpapi`
// explores.
func FuzzInspection(f *testing.F) {
	const secret = "hunter2"
	cmds := []topics.Command{
		{RequestID: "r1", Operation: topics.OpSessionOpen, SessionID: "s/1", OwnerID: "a", TTL: 60},
		{RequestID: "r2", Operation: topics.OpAcquire, Namespace: "ns", LockName: "a/b", OwnerID: "a", SessionID: "s/1",
			OwnerMetadata: json.RawMessage(`{"key":"` + secret + `"}`)},
	}
	private := newEnv(f, nil, func(c *Config) { c.InspectToken = "inspect-secret" })
	private.apply(cmds...)
	open := newEnv(f, nil)
	open.apply(cmds...)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, seed := range []struct{ name, namespace, query, token string }{
		{"a/b", "ns", "", "inspect-secret"},
		{"a/b", "ns", "", ""},
		{"s/1", "", "", "inspect-secret"},
		{"", "", "", "inspect-secret"},
		{"*", "", "", "inspect-secret"},
		{"\x00", "\xff", "", "inspect-secret"},
		{"a//b", "", "", "inspect-secret"},
		{"a/../b", "", "", "wrong"},
		{"..", "..", "", "inspect-secret"},
		{"%ZZ", "%", "", "inspect-secret"},
		{strings.Repeat("x", 300), "", "", "inspect-secret"},
		{"a/b", "n", "%73", "inspect-secret"}, // namespace=n%73: ns
		{"a/b", "", "ns%", "inspect-secret"},
		{"a/b", "", "n%zz", ""},
		{"a/b", "ns", "&namespace=ns", "inspect-secret"},
		{"a/b", "ns", ";x=1", "inspect-secret"},
		{"a/b", "ns", "&namespce=ns", "inspect-secret"},
		{"a/b", "ns", "&x=%", "inspect-secret"},
	} {
		f.Add(seed.name, seed.namespace, seed.query, seed.token)
	}
	f.Fuzz(func(t *testing.T, name, namespace, query, token string) {
		if !validHeaderValue(token) || !validQuery(query) {
			return // no client can send it
		}
		for _, e := range []*env{private, open} {
			for _, prefix := range []string{"/locks/", "/sessions/"} {
				req, err := http.NewRequest(http.MethodGet, e.srv.URL+prefix+escapeName(name)+"?"+url.Values{"namespace": {namespace}}.Encode()+query, nil)
				require.NoError(t, err)
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				resp, err := client.Do(req)
				require.NoError(t, err, "%s", req.URL)
				var body map[string]any
				decodeErr := json.NewDecoder(resp.Body).Decode(&body)
				resp.Body.Close()
				require.Contains(t, []int{http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound}, resp.StatusCode,
					"%s with token %q", req.URL, token)
				require.NoError(t, decodeErr, "%s answers JSON", req.URL)
				if e == private && token != "inspect-secret" {
					require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s with token %q", req.URL, token)
				}
				if prefix == "/sessions/" && resp.StatusCode == http.StatusOK {
					require.Equal(t, name, body["session_id"], "the answer is about the session named: %s", req.URL)
				}
				if e == open {
					raw, err := json.Marshal(body)
					require.NoError(t, err)
					require.NotContains(t, string(raw), secret, "%s", req.URL)
				}
				if prefix == "/locks/" && resp.StatusCode != http.StatusUnauthorized {
					q, err := url.ParseQuery(req.URL.RawQuery)
					if err != nil || len(q["namespace"]) != 1 || len(q) != 1 {
						require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s", req.URL)
					} else if resp.StatusCode == http.StatusOK {
						info, _ := body["lock_info"].(map[string]any)
						ns, _ := info["namespace"].(string) // absent: the default
						require.Equal(t, q.Get("namespace"), ns, "%s", req.URL)
						require.Equal(t, name, info["lock_name"], "the answer is about the lock named: %s", req.URL)
					}
				}
			}
		}
	})
}

// escapeName escapes a lock name or session id for a path, as the README
// tells clients to: each segment, or the whole with its slashes and dots
// when it has a segment the server would clean away (empty, "." or "..").
func escapeName(name string) string {
	segs := strings.Split(name, "/")
	if slices.ContainsFunc(segs, func(s string) bool { return s == "." || s == ".." || s == "" && len(segs) > 1 }) {
		return strings.ReplaceAll(url.PathEscape(name), ".", "%2E")
	}
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// validQuery is whether a client can send q in a request line: visible
// ASCII, no fragment.
func validQuery(q string) bool {
	for i := range len(q) {
		if b := q[i]; b <= ' ' || b >= 0x7f || b == '#' {
			return false
		}
	}
	return true
}

// validHeaderValue is whether net/http sends v as a header value (RFC 7230
// field content: no control characters but tab).
func validHeaderValue(v string) bool {
	for i := range len(v) {
		if b := v[i]; b < ' ' && b != '\t' || b == 0x7f {
			return false
		}
	}
	return true
}
