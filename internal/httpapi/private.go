package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// authorized reports whether the request presents Config.InspectToken as a
// bearer token (never, when none is configured). The scheme is
// case-insensitive and may be followed by several spaces (RFC 7235). The
// tokens' hashes are compared, in constant time: comparing the tokens
// themselves would answer a guess of another length at once, telling the
// token's length.
func (s *server) authorized(r *http.Request) bool {
	want := s.cfg.InspectToken
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	got = strings.TrimLeft(got, " ")
	gotSum, wantSum := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return want != "" && ok && strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare(gotSum[:], wantSum[:]) == 1
}

// private guards an inspection endpoint: with Config.InspectToken set, a
// request without it is answered 401. Probes (/health, /health/live) and
// /metrics are never guarded.
func (s *server) private(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.InspectToken != "" && !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="lockworker"`)
			writeError(w, http.StatusUnauthorized, "this endpoint needs the INSPECT_TOKEN as a bearer token")
			return
		}
		h(w, r)
	}
}
