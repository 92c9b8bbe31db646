package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

func writePublic(t *testing.T, path string, pub any) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600))
}

func sign(t *testing.T, m jwt.SigningMethod, key any, c Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	require.NoError(t, err)
	return s
}

func claims(sub string, ttl time.Duration) Claims {
	return Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: sub, ExpiresAt: jwt.NewNumericDate(time.Now().Add(ttl))}}
}

func TestVerify(t *testing.T) {
	dir := t.TempDir()
	edPub, edKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	writePublic(t, filepath.Join(dir, "ed.pem"), edPub)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	writePublic(t, filepath.Join(dir, "rsa.pem"), &rsaKey.PublicKey)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	writePublic(t, filepath.Join(dir, "ec.pem"), &ecKey.PublicKey)
	_, strangerKey, _ := ed25519.GenerateKey(rand.Reader)
	v, err := NewVerifier(Config{KeysPath: dir, Audience: "lockworker"})
	require.NoError(t, err)

	good := claims("billing", time.Minute)
	good.Audience = jwt.ClaimStrings{"lockworker"}
	good.Namespaces = []string{"orders"}
	for name, tok := range map[string]string{
		"EdDSA": sign(t, jwt.SigningMethodEdDSA, edKey, good),
		"RS256": sign(t, jwt.SigningMethodRS256, rsaKey, good),
		"ES256": sign(t, jwt.SigningMethodES256, ecKey, good),
	} {
		r, err := v.Verify("Bearer " + tok)
		require.NoError(t, err, name)
		require.Equal(t, Requester{Name: "billing", Namespaces: []string{"orders"}}, r, name)
		require.True(t, r.MayUse("orders"))
		require.False(t, r.MayUse(""))
	}

	noAud := claims("billing", time.Minute)
	badSub := good
	badSub.Subject = "../etc"
	noExp := good
	noExp.ExpiresAt = nil
	expired := good
	expired.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, good).SignedString(jwt.UnsafeAllowNoneSignatureType)
	require.NoError(t, err)
	for name, tc := range map[string]struct{ token, want string }{
		"empty":         {"", "no token"},
		"garbage":       {"not-a-jwt", "malformed"},
		"huge":          {strings.Repeat("a", topics.MaxTokenBytes+1), "longer than"},
		"unknown key":   {sign(t, jwt.SigningMethodEdDSA, strangerKey, good), "signature is invalid"},
		"alg none":      {none, "signing method none is invalid"},
		"HMAC, no key":  {sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("k", 32)), good), "signing method HS256 is invalid"},
		"expired":       {sign(t, jwt.SigningMethodEdDSA, edKey, expired), "expired"},
		"no exp":        {sign(t, jwt.SigningMethodEdDSA, edKey, noExp), "exp claim is required"},
		"wrong aud":     {sign(t, jwt.SigningMethodEdDSA, edKey, noAud), "aud"},
		"bad subject":   {sign(t, jwt.SigningMethodEdDSA, edKey, badSub), "sub may hold only"},
		"empty subject": {sign(t, jwt.SigningMethodEdDSA, edKey, func() Claims { c := good; c.Subject = ""; return c }()), "no sub"},
	} {
		_, err := v.Verify(tc.token)
		require.ErrorIs(t, err, ErrUnauthenticated, name)
		require.Contains(t, err.Error(), tc.want, name)
		if len(tc.token) > 20 && len(tc.token) < topics.MaxTokenBytes {
			require.NotContains(t, err.Error(), tc.token, "%s: the error never quotes the token", name)
		}
	}
}

func TestHMACKey(t *testing.T) {
	f := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(f, []byte("short"), 0o600))
	_, err := NewVerifier(Config{HMACKeyFile: f})
	require.ErrorContains(t, err, "at least 32 bytes")
	secret := []byte(strings.Repeat("s", 40))
	require.NoError(t, os.WriteFile(f, append(secret, '\n'), 0o600))
	v, err := NewVerifier(Config{HMACKeyFile: f})
	require.NoError(t, err)
	c := claims("small", time.Minute)
	c.Admin = true
	r, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, c))
	require.NoError(t, err)
	require.Equal(t, Requester{Name: "small", Admin: true}, r)
	require.True(t, r.MayUse("anything"), "no namespaces claim: every namespace")
}

func TestNoKeys(t *testing.T) {
	_, err := NewVerifier(Config{KeysPath: t.TempDir()})
	require.ErrorContains(t, err, "no verification keys")
	_, err = NewVerifier(Config{KeysPath: filepath.Join(t.TempDir(), "missing")})
	require.ErrorContains(t, err, "AUTH_KEYS")
	f := filepath.Join(t.TempDir(), "x.pem")
	require.NoError(t, os.WriteFile(f, []byte("not a key"), 0o600))
	_, err = NewVerifier(Config{KeysPath: f})
	require.ErrorContains(t, err, "not a PEM public key")
}

// A key added to the directory is used without a restart; a broken file
// keeps the keys in force.
func TestKeysReloadOnChange(t *testing.T) {
	dir := t.TempDir()
	pub1, key1, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(dir, "1.pem"), pub1)
	reloads := make(chan error, 10)
	v, err := NewVerifier(Config{KeysPath: dir, ReloadEvery: time.Nanosecond, OnReload: func(_ int, err error) { reloads <- err }})
	require.NoError(t, err)
	pub2, key2, _ := ed25519.GenerateKey(rand.Reader)
	tok2 := sign(t, jwt.SigningMethodEdDSA, key2, claims("b", time.Minute))
	_, err = v.Verify(tok2)
	require.ErrorIs(t, err, ErrUnauthenticated)

	writePublic(t, filepath.Join(dir, "2.pem"), pub2)
	_, err = v.Verify(tok2)
	require.NoError(t, err)
	require.NoError(t, <-reloads)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "3.pem"), []byte("broken"), 0o600))
	_, err = v.Verify(sign(t, jwt.SigningMethodEdDSA, key1, claims("a", time.Minute)))
	require.NoError(t, err, "a broken file keeps the keys in force")
	require.ErrorContains(t, <-reloads, "3.pem")
}

// A key replaced by one of the same size with its modification time kept
// (cp -p, rsync -a) is reloaded: the reload looks at the contents.
func TestKeyReplacedKeepingItsTime(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.pem")
	pub1, key1, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, path, pub1)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	reloads := make(chan error, 10)
	v, err := NewVerifier(Config{KeysPath: dir, ReloadEvery: time.Nanosecond, OnReload: func(_ int, err error) { reloads <- err }})
	require.NoError(t, err)
	tok1 := sign(t, jwt.SigningMethodEdDSA, key1, claims("a", time.Minute))
	_, err = v.Verify(tok1)
	require.NoError(t, err)

	pub2, key2, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, path, pub2)
	require.NoError(t, os.Chtimes(path, fi.ModTime(), fi.ModTime()))
	after, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, fi.Size(), after.Size(), "Ed25519 public keys in PEM are all one size")

	_, err = v.Verify(sign(t, jwt.SigningMethodEdDSA, key2, claims("b", time.Minute)))
	require.NoError(t, err, "the new key is in force")
	require.NoError(t, <-reloads)
	_, err = v.Verify(tok1)
	require.ErrorIs(t, err, ErrUnauthenticated, "the replaced key is not")
}

// A broken key file is read and reported once, not at every check, and
// again only when the files change; the keys in force stay meanwhile.
func TestBrokenKeyReportedOnce(t *testing.T) {
	dir := t.TempDir()
	pub1, key1, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(dir, "1.pem"), pub1)
	reloads := make(chan error, 100)
	v, err := NewVerifier(Config{KeysPath: dir, ReloadEvery: time.Nanosecond, OnReload: func(_ int, err error) { reloads <- err }})
	require.NoError(t, err)
	tok1 := sign(t, jwt.SigningMethodEdDSA, key1, claims("a", time.Minute))
	verify := func() {
		t.Helper()
		for range 5 {
			_, err := v.Verify(tok1)
			require.NoError(t, err, "the keys read before stay in force")
		}
	}

	broken := filepath.Join(dir, "2.pem")
	require.NoError(t, os.WriteFile(broken, []byte("broken"), 0o600))
	verify()
	require.ErrorContains(t, <-reloads, "2.pem")
	require.Empty(t, reloads, "an unchanged broken file is not read and reported again")

	require.NoError(t, os.WriteFile(broken, []byte("still broken"), 0o600))
	verify()
	require.ErrorContains(t, <-reloads, "2.pem", "a change is read again")
	require.Empty(t, reloads)

	// Back as loaded: nothing to reload, but breaking them the same way
	// again is reported.
	require.NoError(t, os.Remove(broken))
	verify()
	require.Empty(t, reloads)
	require.NoError(t, os.WriteFile(broken, []byte("still broken"), 0o600))
	verify()
	require.ErrorContains(t, <-reloads, "2.pem")
	require.Empty(t, reloads)

	pub3, key3, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, broken, pub3)
	_, err = v.Verify(sign(t, jwt.SigningMethodEdDSA, key3, claims("c", time.Minute)))
	require.NoError(t, err, "fixed: loaded")
	require.NoError(t, <-reloads)
	verify()
	require.Empty(t, reloads)

	// A directory that cannot be read at all is reported once too.
	require.NoError(t, os.RemoveAll(dir))
	verify()
	require.ErrorContains(t, <-reloads, "AUTH_KEYS")
	require.Empty(t, reloads)
}
