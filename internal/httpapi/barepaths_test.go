package httpapi

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBarePathsAnswerAsWithASlash: /locks and /sessions answer as /locks/
// and /sessions/ do (JSON, 400 without a name, 401 without the
// INSPECT_TOKEN), not with ServeMux's redirect to them (307 text/html).
func TestBarePathsAnswerAsWithASlash(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.InspectToken = "inspect-secret" })
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path, token string) (int, http.Header, string) {
		req, err := http.NewRequest(method, e.srv.URL+path, nil)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := noRedirect.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, resp.Header, string(body)
	}
	for _, path := range []string{"/locks", "/sessions"} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			for _, token := range []string{"", "inspect-secret"} {
				wantCode, _, wantBody := do(method, path+"/", token)
				code, h, body := do(method, path, token)
				require.Equal(t, wantCode, code, "%s %s (token %q): %s", method, path, token, body)
				require.Equal(t, "application/json", h.Get("Content-Type"), "%s %s", method, path)
				require.Equal(t, wantBody, body, "%s %s", method, path)
			}
		}
		code, h, body := do(http.MethodPost, path, "inspect-secret")
		require.Equal(t, http.StatusMethodNotAllowed, code, "POST %s: %s", path, body)
		require.Equal(t, "application/json", h.Get("Content-Type"), "POST %s", path)
	}
	code, _, body := do(http.MethodGet, "/locks", "inspect-secret")
	require.Equal(t, http.StatusBadRequest, code)
	require.JSONEq(t, `{"error":"lock_name is required"}`, body)
	code, _, body = do(http.MethodGet, "/sessions", "")
	require.Equal(t, http.StatusUnauthorized, code, body)
}
