package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// FuzzVerifyToken sends Verify tokens of any header and payload JSON
// (base64url-encoded here, as a token carries them), signed with the key
// their alg names (the HMAC issuer secret, or requester billing's Ed25519
// key) or not, after any scheme prefix. Verify reads the claims before the
// signature is checked, to pick the key of their sub, with a reader of its
// own (topics.ParseTokenClaims), so any bytes reach it: Verify must refuse
// with ErrUnauthenticated, never quoting the token; accept nothing
// unsigned, nor a requester key's token for another sub or claiming admin;
// and accept only claims a reader by name (encoding/json into a map, as an
// issuer or a gateway reads them; golang-jwt's types for aud, exp and nbf)
// sees the same: sub, namespaces, admin, aud naming the worker, exp not
// passed, nbf reached. ParseTokenClaims, which the SDK hands a static
// token's payload, is given the payload alone too, JSON or not.
func FuzzVerifyToken(f *testing.F) {
	dir := f.TempDir()
	secret := []byte(strings.Repeat("s", 32))
	secretFile := filepath.Join(dir, "hmac")
	require.NoError(f, os.WriteFile(secretFile, secret, 0o600))
	requesters := filepath.Join(dir, "requesters")
	require.NoError(f, os.Mkdir(requesters, 0o700))
	pub, billing, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(f, err)
	writePublic(f, filepath.Join(requesters, "billing.pem"), pub)
	const leeway = 30 * time.Second
	v, err := NewVerifier(Config{HMACKeyFile: secretFile, RequesterKeysPath: requesters, Audience: "lockworker", Leeway: leeway,
		ReloadEvery: time.Hour})
	require.NoError(f, err)
	f.Cleanup(v.Close)

	hs256, eddsa := []byte(`{"alg":"HS256","typ":"JWT"}`), []byte(`{"alg":"EdDSA","kid":"billing"}`)
	for _, s := range []struct {
		header  []byte
		payload string
	}{
		{hs256, `{"sub":"billing","aud":"lockworker","exp":4102444800}`},
		{hs256, `{"sub":"billing","aud":["lockworker","x"],"exp":"4102444800","namespaces":["a",""],"admin":true}`},
		{hs256, `{"sub":"billing","aud":"lockworker","exp":4102444800,"nbf":1e300}`},
		{hs256, `{"sub":"billing","aud":"lockworker","exp":4102444800,"nbf":9223372036800000000}`},
		{hs256, `{"sub":"billing","aud":"lockworker","exp":1e300}`},
		{hs256, `{"sub":"billing","aud":"lockworker","exp":-1e300}`},
		{hs256, `{"sub":"b\u0000","aud":"lockworker","exp":4102444800}`},
		{hs256, `{"sub":"billing","aud":"lockworker","exp":4102444800,"x":{"a":1,"a":2}}`},
		{hs256, `{"s\u0075b":"billing","aud":"lockworker","exp":4102444800}`},
		{hs256, `{"sub":"billing","aud":"lockworker","exp":4102444800,"namespaces":null}`},
		{hs256, `{"sub":"billing","aud":"lockworker","exp":4102444800,"Admin":true}`},
		{[]byte(`{"alg":"HS512","alg":"none"}`), `{"sub":"billing","aud":"lockworker","exp":4102444800}`},
		{eddsa, `{"sub":"billing","aud":"lockworker","exp":4102444800,"namespaces":["billing"]}`},
		{eddsa, `{"sub":"billing","aud":"lockworker","exp":4102444800,"admin":true}`},
		{eddsa, `{"sub":"payments","aud":"lockworker","exp":4102444800}`},
		{[]byte(`{"alg":"none"}`), `{"sub":"billing","aud":"lockworker","exp":4102444800}`},
	} {
		f.Add(s.header, []byte(s.payload), true, "Bearer ")
		f.Add(s.header, []byte(s.payload), false, "bearer  ")
	}
	f.Add([]byte(`{"alg":"HS256"}`), []byte(`{1:2}`), true, "")
	f.Add([]byte(`{"alg":"HS256"}`), []byte(`{"sub":"billing","aud":"lockworker","exp":4102444800} trailing`), true, " ")

	seg := base64.RawURLEncoding.EncodeToString
	f.Fuzz(func(t *testing.T, header, payload []byte, signIt bool, prefix string) {
		_, _ = topics.ParseTokenClaims(payload)
		signing := seg(header) + "." + seg(payload)
		sig, signer := []byte("x"), ""
		if signIt {
			var h map[string]any // as golang-jwt reads the header
			_ = json.Unmarshal(header, &h)
			alg, _ := h["alg"].(string)
			var err error
			switch m := jwt.GetSigningMethod(alg).(type) {
			case *jwt.SigningMethodHMAC:
				sig, err = m.Sign(signing, secret)
				signer = "the issuer secret"
			case *jwt.SigningMethodEd25519:
				sig, err = m.Sign(signing, billing)
				signer = "billing"
			}
			require.NoError(t, err)
		}
		before := time.Now()
		r, err := v.Verify(prefix + signing + "." + seg(sig))
		after := time.Now()
		if err != nil {
			require.ErrorIs(t, err, ErrUnauthenticated)
			require.NotContains(t, err.Error(), signing, "the error never quotes the token")
			return
		}
		require.NotEmpty(t, signer, "accepted a token no key signed: %s %s", header, payload)
		if signer == "billing" {
			require.Equal(t, "billing", r.Name, "a requester key speaks for its own sub only: %s", payload)
			require.False(t, r.Admin, "a requester key signs no admin claim: %s", payload)
		}
		require.Empty(t, topics.SubjectProblem(r.Name))

		var m map[string]any
		require.NoError(t, json.Unmarshal(payload, &m), "accepted payload %s", payload)
		require.Equal(t, m["sub"], r.Name, "sub as a reader by name sees it: %s", payload)
		admin, _ := m["admin"].(bool)
		require.Equal(t, admin, r.Admin, "admin as a reader by name sees it: %s", payload)
		if ns, ok := m["namespaces"]; ok {
			list, ok := ns.([]any)
			require.True(t, ok, "namespaces of no list accepted: %s", payload)
			want := []string{}
			for _, e := range list {
				s, ok := e.(string)
				require.True(t, ok, "a namespace of no string accepted: %s", payload)
				want = append(want, s)
			}
			require.Equal(t, want, r.Namespaces, "namespaces as a reader by name sees them: %s", payload)
		} else {
			require.Nil(t, r.Namespaces, "no namespaces claim, every namespace: %s", payload)
		}
		var rc jwt.RegisteredClaims
		require.NoError(t, json.Unmarshal(payload, &rc), "accepted payload %s", payload)
		require.Contains(t, rc.Audience, "lockworker", "aud: %s", payload)
		require.NotNil(t, rc.ExpiresAt, "exp: %s", payload)
		require.False(t, rc.ExpiresAt.Before(before.Add(-leeway-time.Second)), "an expired token accepted: %s", payload)
		if rc.NotBefore != nil {
			require.False(t, rc.NotBefore.After(after.Add(leeway+time.Second)), "a token not valid yet accepted: %s", payload)
		}
		// golang-jwt's types overflow past the seconds Go's time holds (an
		// nbf of 1e300 reads as the distant past): the claims as numbers.
		for name, v := range m {
			if name != "exp" && name != "nbf" {
				continue
			}
			n, err := strconv.ParseFloat(fmt.Sprint(v), 64)
			require.NoError(t, err, "%s of no number accepted: %s", name, payload)
			if name == "nbf" {
				require.LessOrEqual(t, n, float64(after.Add(leeway+time.Second).Unix()), "a token not valid yet accepted: %s", payload)
			} else {
				require.GreaterOrEqual(t, n, float64(before.Add(-leeway-time.Second).Unix()), "an expired token accepted: %s", payload)
			}
		}
	})
}
