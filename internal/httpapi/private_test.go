package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

// The INSPECT_TOKEN is matched as a bearer token whatever the scheme's case
// (RFC 7235), and only as one.
func TestInspectTokenBearerScheme(t *testing.T) {
	s := &server{cfg: Config{InspectToken: "inspect-secret"}}
	for header, want := range map[string]bool{
		"Bearer inspect-secret":   true,
		"bearer inspect-secret":   true,
		"BEARER inspect-secret":   true,
		"Bearer   inspect-secret": true,
		"Bearer inspect-secre":    false,
		"Bearer":                  false,
		"Bearer ":                 false,
		"Basic inspect-secret":    false,
		"Bearerinspect-secret":    false,
		"inspect-secret":          false,
		"":                        false,
	} {
		r := httptest.NewRequest(http.MethodGet, "/locks/l", nil)
		r.Header.Set("Authorization", header)
		require.Equal(t, want, s.authorized(r), "Authorization: %q", header)
	}
	open := &server{}
	r := httptest.NewRequest(http.MethodGet, "/locks/l", nil)
	r.Header.Set("Authorization", "Bearer ")
	require.False(t, open.authorized(r), "no token configured: nobody is authorized")
}
