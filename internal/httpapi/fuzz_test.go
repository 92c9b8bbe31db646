package httpapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// FuzzInspection sends any lock name, namespace, session id and bearer
// token to the inspection endpoints over a real PostgreSQL: each answer is
// 200, 400, 401 or 404 with a JSON body, and owner_metadata shows only to
// the INSPECT_TOKEN's bearer. `go test` runs the seeds; `go test -fuzz
// FuzzInspection ./internal/httpapi` explores.
func FuzzInspection(f *testing.F) {
	const secret = "hunter2"
	e := newEnv(f, nil, func(c *Config) { c.InspectToken = "inspect-secret" })
	e.apply(
		topics.Command{RequestID: "r1", Operation: topics.OpSessionOpen, SessionID: "s/1", OwnerID: "a", TTL: 60},
		topics.Command{RequestID: "r2", Operation: topics.OpAcquire, Namespace: "ns", LockName: "a/b", OwnerID: "a", SessionID: "s/1",
			OwnerMetadata: json.RawMessage(`{"key":"` + secret + `"}`)},
	)
	for _, seed := range []struct{ path, namespace, token string }{
		{"/locks/a/b", "ns", "inspect-secret"},
		{"/locks/a/b", "ns", ""},
		{"/locks/a%2Fb", "ns", "inspect-secret"},
		{"/locks/", "", "inspect-secret"},
		{"/locks/*", "", "inspect-secret"},
		{"/locks/\x00", "\xff", "inspect-secret"},
		{"/locks/" + strings.Repeat("x", 300), "", "inspect-secret"},
		{"/sessions/s/1", "", "inspect-secret"},
		{"/sessions/s%2F1", "", "wrong"},
		{"/sessions/", "", "inspect-secret"},
		{"/sessions/" + strings.Repeat("s", 129), "", "inspect-secret"},
		{"/sessions/%ZZ", "", "inspect-secret"},
		{"/health/locks", "", "inspect-secret\r\nX: y"},
	} {
		f.Add(seed.path, seed.namespace, seed.token)
	}
	f.Fuzz(func(t *testing.T, path, namespace, token string) {
		u, err := url.Parse(e.srv.URL)
		require.NoError(t, err)
		for _, prefix := range []string{"/locks/", "/sessions/"} {
			u.RawPath, u.Path = "", prefix+strings.TrimPrefix(strings.TrimPrefix(path, "/locks/"), "/sessions/")
			u.RawQuery = url.Values{"namespace": {namespace}}.Encode()
			req, err := http.NewRequest(http.MethodGet, u.String(), nil)
			if err != nil {
				return // not a request a client can send
			}
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return // net/http refuses to send it (a header with a line break, say)
			}
			var body map[string]any
			decodeErr := json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			require.Contains(t, []int{http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound}, resp.StatusCode,
				"%s with token %q", u, token)
			require.NoError(t, decodeErr, "%s answers JSON", u)
			if token != "inspect-secret" {
				raw, _ := json.Marshal(body)
				require.NotContains(t, string(raw), secret, "%s with token %q", u, token)
			}
		}
	})
}
