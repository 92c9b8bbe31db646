package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

func writePublic(t testing.TB, path string, pub any) {
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

// reloadedByTest makes a verifier whose reloads the test runs (reload), and
// the channel OnReload tells.
func reloadedByTest(t *testing.T, cfg Config) (*Verifier, chan error) {
	t.Helper()
	reloads := make(chan error, 100)
	cfg.ReloadEvery = time.Hour
	cfg.OnReload = func(_ int, err error) { reloads <- err }
	v, err := NewVerifier(cfg)
	require.NoError(t, err)
	t.Cleanup(v.Close)
	return v, reloads
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
		for _, header := range []string{tok, "bearer " + tok, "BEARER   " + tok} { // the scheme is optional and case-insensitive
			r, err := v.Verify(header)
			require.NoError(t, err, "%s: %.12q", name, header)
			require.Equal(t, "billing", r.Name)
		}
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

// A PEM file is no HMAC secret: a public key given as AUTH_HMAC_KEY_FILE
// (a requester's .pem) would let anyone who read it sign admin tokens.
func TestHMACKeyNotPEM(t *testing.T) {
	dir := t.TempDir()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	f := filepath.Join(dir, "billing.pem")
	writePublic(t, f, pub)
	_, err := NewVerifier(Config{HMACKeyFile: f})
	require.ErrorContains(t, err, "AUTH_HMAC_KEY_FILE "+f+": a PEM file is no HMAC secret")

	// Nor on a reload: the secret in force stays.
	secretFile := filepath.Join(dir, "secret")
	secret := []byte(strings.Repeat("s", 40))
	require.NoError(t, os.WriteFile(secretFile, secret, 0o600))
	v, reloads := reloadedByTest(t, Config{HMACKeyFile: secretFile})
	public, err := os.ReadFile(f)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(secretFile, public, 0o600))
	v.reload()
	_, err = v.Verify(sign(t, jwt.SigningMethodHS256, []byte(strings.TrimSpace(string(public))), func() Claims { c := claims("root", time.Minute); c.Admin = true; return c }()))
	require.ErrorIs(t, err, ErrUnauthenticated, "a token signed with the public text is refused")
	require.ErrorContains(t, <-reloads, "a PEM file is no HMAC secret")
	_, err = v.Verify(sign(t, jwt.SigningMethodHS256, secret, claims("small", time.Minute)))
	require.NoError(t, err)
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
	v, reloads := reloadedByTest(t, Config{KeysPath: dir})
	pub2, key2, _ := ed25519.GenerateKey(rand.Reader)
	tok2 := sign(t, jwt.SigningMethodEdDSA, key2, claims("b", time.Minute))
	_, err := v.Verify(tok2)
	require.ErrorIs(t, err, ErrUnauthenticated)

	writePublic(t, filepath.Join(dir, "2.pem"), pub2)
	v.reload()
	_, err = v.Verify(tok2)
	require.NoError(t, err)
	require.NoError(t, <-reloads)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "3.pem"), []byte("broken"), 0o600))
	v.reload()
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
	v, reloads := reloadedByTest(t, Config{KeysPath: dir})
	tok1 := sign(t, jwt.SigningMethodEdDSA, key1, claims("a", time.Minute))
	_, err = v.Verify(tok1)
	require.NoError(t, err)

	pub2, key2, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, path, pub2)
	require.NoError(t, os.Chtimes(path, fi.ModTime(), fi.ModTime()))
	v.reload()
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
	v, reloads := reloadedByTest(t, Config{KeysPath: dir})
	tok1 := sign(t, jwt.SigningMethodEdDSA, key1, claims("a", time.Minute))
	verify := func() {
		t.Helper()
		for range 5 {
			v.reload()
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
	v.reload()
	_, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, key3, claims("c", time.Minute)))
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

// signKid signs c with key, with a kid header ("" for none), which the
// verifier ignores: the requester key tried is the one of the sub.
func signKid(t *testing.T, m jwt.SigningMethod, key any, kid string, c Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	require.NoError(t, err)
	return s
}

// A requester key (AUTH_REQUESTER_KEYS, <requester>.pem) speaks for its
// requester only: its own sub, no admin, its namespaces narrowed or all.
// An issuer key (AUTH_KEYS) still signs anything. The key tried is the one
// of the token's sub, whatever its kid.
func TestRequesterKeys(t *testing.T) {
	issuers, requesters := t.TempDir(), t.TempDir()
	issuerPub, issuerKey, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(issuers, "issuer.pem"), issuerPub)
	billingPub, billingKey, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(requesters, "billing.pem"), billingPub)
	payments, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	writePublic(t, filepath.Join(requesters, "payments.pem"), &payments.PublicKey)
	v, err := NewVerifier(Config{KeysPath: issuers, RequesterKeysPath: requesters})
	require.NoError(t, err)

	narrowed := claims("billing", time.Minute)
	narrowed.Namespaces = []string{"billing"}
	for name, tc := range map[string]struct {
		token string
		want  Requester
	}{
		"own sub, kid":                 {signKid(t, jwt.SigningMethodEdDSA, billingKey, "billing", claims("billing", time.Minute)), Requester{Name: "billing"}},
		"own sub, no kid":              {signKid(t, jwt.SigningMethodEdDSA, billingKey, "", claims("billing", time.Minute)), Requester{Name: "billing"}},
		"own sub, kid of no requester": {signKid(t, jwt.SigningMethodEdDSA, billingKey, "k1", claims("billing", time.Minute)), Requester{Name: "billing"}},
		"own sub, kid of another":      {signKid(t, jwt.SigningMethodEdDSA, billingKey, "payments", claims("billing", time.Minute)), Requester{Name: "billing"}},
		"own sub, narrowed":            {signKid(t, jwt.SigningMethodEdDSA, billingKey, "billing", narrowed), Requester{Name: "billing", Namespaces: []string{"billing"}}},
		"another requester, EC":        {signKid(t, jwt.SigningMethodES256, payments, "payments", claims("payments", time.Minute)), Requester{Name: "payments"}},
		"issuer, any sub, admin":       {signKid(t, jwt.SigningMethodEdDSA, issuerKey, "", func() Claims { c := claims("payments", time.Minute); c.Admin = true; return c }()), Requester{Name: "payments", Admin: true}},
		"issuer, kid of a requester": {signKid(t, jwt.SigningMethodEdDSA, issuerKey, "billing", func() Claims { c := narrowed; c.Admin = true; return c }()),
			Requester{Name: "billing", Namespaces: []string{"billing"}, Admin: true}},
	} {
		r, err := v.Verify(tc.token)
		require.NoError(t, err, name)
		require.Equal(t, tc.want, r, name)
	}

	admin := claims("billing", time.Minute)
	admin.Admin = true
	expired := claims("billing", -time.Hour)
	for name, tc := range map[string]struct{ token, want string }{
		"another sub":              {signKid(t, jwt.SigningMethodEdDSA, billingKey, "", claims("payments", time.Minute)), "signature is invalid"},
		"another sub, its kid":     {signKid(t, jwt.SigningMethodEdDSA, billingKey, "payments", claims("payments", time.Minute)), "signature is invalid"},
		"another sub, own kid":     {signKid(t, jwt.SigningMethodEdDSA, billingKey, "billing", claims("payments", time.Minute)), "signature is invalid"},
		"a sub without a key":      {signKid(t, jwt.SigningMethodEdDSA, billingKey, "", claims("ops", time.Minute)), "signature is invalid"},
		"admin":                    {signKid(t, jwt.SigningMethodEdDSA, billingKey, "billing", admin), `requester "billing"'s own key (AUTH_REQUESTER_KEYS) may not sign an admin claim`},
		"admin, no kid":            {signKid(t, jwt.SigningMethodEdDSA, billingKey, "", admin), "may not sign an admin claim"},
		"expired":                  {signKid(t, jwt.SigningMethodEdDSA, billingKey, "billing", expired), "expired"},
		"issuer key, bad subject":  {signKid(t, jwt.SigningMethodEdDSA, issuerKey, "", claims("../x", time.Minute)), "sub may hold only"},
		"requester key of another": {signKid(t, jwt.SigningMethodES256, payments, "billing", claims("billing", time.Minute)), "signature is invalid"},
	} {
		_, err := v.Verify(tc.token)
		require.ErrorIs(t, err, ErrUnauthenticated, name)
		require.ErrorContains(t, err, tc.want, name)
	}

	// Requester keys alone satisfy AUTH_REQUIRED; a token none of them is
	// named by has no key to try.
	v, err = NewVerifier(Config{RequesterKeysPath: requesters})
	require.NoError(t, err)
	_, err = v.Verify(signKid(t, jwt.SigningMethodEdDSA, billingKey, "billing", claims("billing", time.Minute)))
	require.NoError(t, err)
	_, err = v.Verify(signKid(t, jwt.SigningMethodEdDSA, issuerKey, "", claims("ops", time.Minute)))
	require.ErrorIs(t, err, ErrUnauthenticated)
	require.ErrorContains(t, err, "no issuer key")
	_, err = v.Verify(signKid(t, jwt.SigningMethodEdDSA, billingKey, "", claims("payments", time.Minute)))
	require.ErrorContains(t, err, "no issuer key", "payments has a key, tried in vain: the same answer as for a sub without one")

	// The dead-letter topic does not tell which requesters have a key: a
	// token no key verifies gets one answer whether its sub names one.
	_, strangerKey, _ := ed25519.GenerateKey(rand.Reader)
	strangerEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	var answers []string
	for name, tok := range map[string]string{
		"sub of a requester with a key":  signKid(t, jwt.SigningMethodEdDSA, strangerKey, "", claims("billing", time.Minute)),
		"sub of a requester without":     signKid(t, jwt.SigningMethodEdDSA, strangerKey, "", claims("ops", time.Minute)),
		"sub with a key of another kind": signKid(t, jwt.SigningMethodES256, strangerEC, "", claims("billing", time.Minute)),
	} {
		_, err := v.Verify(tok)
		require.ErrorIs(t, err, ErrUnauthenticated, name)
		answers = append(answers, err.Error())
	}
	require.Equal(t, []string{answers[0], answers[0], answers[0]}, answers)
	require.Contains(t, answers[0], "no issuer key")
}

// A requester key file is refused as a broken key is when its name is no
// requester's, when it is not in a directory, or when its key is an
// issuer's or another requester's too.
func TestRequesterKeyFiles(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	for name, file := range map[string]string{"empty name": ".pem", "space": "bill ing.pem", "too long": strings.Repeat("n", topics.MaxSubjectBytes+1) + ".pem"} {
		dir := t.TempDir()
		writePublic(t, filepath.Join(dir, file), pub)
		_, err := NewVerifier(Config{RequesterKeysPath: dir})
		require.ErrorContains(t, err, "the name before .pem must be the requester's", name)
	}

	dir := t.TempDir()
	writePublic(t, filepath.Join(dir, "billing.pem"), pub)
	_, err := NewVerifier(Config{RequesterKeysPath: filepath.Join(dir, "billing.pem")})
	require.ErrorContains(t, err, "AUTH_REQUESTER_KEYS "+filepath.Join(dir, "billing.pem")+" is not a directory")
	_, err = NewVerifier(Config{RequesterKeysPath: filepath.Join(dir, "missing")})
	require.ErrorContains(t, err, "reading AUTH_REQUESTER_KEYS")
	_, err = NewVerifier(Config{RequesterKeysPath: t.TempDir()})
	require.ErrorContains(t, err, "no verification keys")

	issuers := t.TempDir()
	writePublic(t, filepath.Join(issuers, "issuer.pem"), pub)
	_, err = NewVerifier(Config{KeysPath: issuers, RequesterKeysPath: dir})
	require.ErrorContains(t, err, "billing.pem: the same key as "+filepath.Join(issuers, "issuer.pem")+": a requester key (AUTH_REQUESTER_KEYS) must be its requester's alone, never an issuer key (AUTH_KEYS)")
	_, err = NewVerifier(Config{KeysPath: dir, RequesterKeysPath: dir})
	require.ErrorContains(t, err, "never an issuer key (AUTH_KEYS)", "one directory as both")
	writePublic(t, filepath.Join(dir, "payments.pem"), pub)
	_, err = NewVerifier(Config{RequesterKeysPath: dir})
	require.ErrorContains(t, err, "payments.pem: the same key as "+filepath.Join(dir, "billing.pem")+": a requester key (AUTH_REQUESTER_KEYS) must be its requester's alone, never another requester's")
}

// One issuer key in two files of AUTH_KEYS (the old and new name of a
// rotation, a projected Secret) loads, as it did before requester keys:
// only a requester key may not be another file's too.
func TestIssuerKeyInTwoFiles(t *testing.T) {
	issuers, requesters := t.TempDir(), t.TempDir()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(issuers, "issuer.pem"), pub)
	writePublic(t, filepath.Join(issuers, "issuer-2026.pem"), pub)
	billingPub, _, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(requesters, "billing.pem"), billingPub)
	for name, cfg := range map[string]Config{
		"issuer keys alone":     {KeysPath: issuers},
		"beside requester keys": {KeysPath: issuers, RequesterKeysPath: requesters},
	} {
		v, err := NewVerifier(cfg)
		require.NoError(t, err, name)
		r, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, key, claims("payments", time.Minute)))
		require.NoError(t, err, name)
		require.Equal(t, Requester{Name: "payments"}, r, name)
	}
}

// Requester keys are reloaded with the issuer keys: a requester added,
// one whose file breaks (its key stays in force), one removed beside
// another.
func TestRequesterKeysReload(t *testing.T) {
	issuers, requesters := t.TempDir(), t.TempDir()
	issuerPub, issuerKey, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(issuers, "issuer.pem"), issuerPub)
	paymentsPub, _, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(requesters, "payments.pem"), paymentsPub)
	v, reloads := reloadedByTest(t, Config{KeysPath: issuers, RequesterKeysPath: requesters})
	billingPub, billingKey, _ := ed25519.GenerateKey(rand.Reader)
	own := signKid(t, jwt.SigningMethodEdDSA, billingKey, "billing", claims("billing", time.Minute))
	_, err := v.Verify(own)
	require.ErrorIs(t, err, ErrUnauthenticated)

	writePublic(t, filepath.Join(requesters, "billing.pem"), billingPub)
	v.reload()
	r, err := v.Verify(own)
	require.NoError(t, err)
	require.Equal(t, Requester{Name: "billing"}, r)
	require.NoError(t, <-reloads)

	require.NoError(t, os.WriteFile(filepath.Join(requesters, "bad name.pem"), []byte("whatever"), 0o600))
	v.reload()
	_, err = v.Verify(own)
	require.NoError(t, err, "a refused file keeps the keys in force")
	require.ErrorContains(t, <-reloads, "bad name.pem")
	require.NoError(t, os.Remove(filepath.Join(requesters, "bad name.pem")))

	// Moved to the issuers by mistake: refused, not made an issuer key.
	writePublic(t, filepath.Join(issuers, "billing.pem"), billingPub)
	v.reload()
	_, err = v.Verify(signKid(t, jwt.SigningMethodEdDSA, billingKey, "", func() Claims { c := claims("payments", time.Minute); c.Admin = true; return c }()))
	require.ErrorIs(t, err, ErrUnauthenticated)
	require.ErrorContains(t, <-reloads, "the same key as")
	require.NoError(t, os.Remove(filepath.Join(issuers, "billing.pem")))

	require.NoError(t, os.Remove(filepath.Join(requesters, "billing.pem")))
	v.reload()
	_, err = v.Verify(own)
	require.ErrorIs(t, err, ErrUnauthenticated, "a removed requester key is no longer in force")
	require.NoError(t, <-reloads)
	_, err = v.Verify(sign(t, jwt.SigningMethodEdDSA, issuerKey, claims("billing", time.Minute)))
	require.NoError(t, err)
}

// An AUTH_KEYS directory left without a key is a failed load, also when
// requester keys remain: an emptied mount does not silently drop every
// issuer key. The keys in force stay, the error is told once, and at start
// it stops the verifier. AUTH_REQUESTER_KEYS may be emptied: its last key
// deleted is revoked, unless no key of any source would remain.
func TestDirectoryLeftWithoutAKey(t *testing.T) {
	issuers, requesters := t.TempDir(), t.TempDir()
	issuerPub, issuerKey, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(issuers, "issuer.pem"), issuerPub)
	billingPub, billingKey, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(requesters, "billing.pem"), billingPub)
	v, reloads := reloadedByTest(t, Config{KeysPath: issuers, RequesterKeysPath: requesters})
	root := func() Claims { c := claims("root", time.Minute); c.Admin = true; return c }()
	billing := signKid(t, jwt.SigningMethodEdDSA, billingKey, "billing", claims("billing", time.Minute))

	// The requester directory's last key deleted: billing is revoked, the
	// issuer key stays.
	require.NoError(t, os.Remove(filepath.Join(requesters, "billing.pem")))
	v.reload()
	_, err := v.Verify(billing)
	require.ErrorIs(t, err, ErrUnauthenticated, "the last requester key deleted is revoked")
	require.NoError(t, <-reloads)
	_, err = v.Verify(sign(t, jwt.SigningMethodEdDSA, issuerKey, root))
	require.NoError(t, err)
	_, err = NewVerifier(Config{KeysPath: issuers, RequesterKeysPath: requesters})
	require.NoError(t, err, "an empty AUTH_REQUESTER_KEYS beside issuer keys starts")

	// The issuer directory emptied: a failed load, told once; its key
	// stays in force, and at start it is refused.
	writePublic(t, filepath.Join(requesters, "billing.pem"), billingPub)
	v.reload()
	_, err = v.Verify(billing)
	require.NoError(t, err, "billing's key is back")
	require.NoError(t, <-reloads)
	require.NoError(t, os.Remove(filepath.Join(issuers, "issuer.pem")))
	for range 3 {
		v.reload()
		_, err = v.Verify(sign(t, jwt.SigningMethodEdDSA, issuerKey, root))
		require.NoError(t, err, "AUTH_KEYS emptied: the issuer key stays in force")
		_, err = v.Verify(billing)
		require.NoError(t, err)
	}
	require.ErrorContains(t, <-reloads, "AUTH_KEYS directory "+issuers+" holds no verification keys")
	require.Empty(t, reloads, "told once")
	_, err = NewVerifier(Config{KeysPath: issuers, RequesterKeysPath: requesters})
	require.ErrorContains(t, err, "AUTH_KEYS directory "+issuers+" holds no verification keys", "at start")

	// Requester keys alone, the last one deleted: no key of any source
	// would remain, a failed load that keeps it.
	only := t.TempDir()
	writePublic(t, filepath.Join(only, "billing.pem"), billingPub)
	v, reloads = reloadedByTest(t, Config{RequesterKeysPath: only})
	require.NoError(t, os.Remove(filepath.Join(only, "billing.pem")))
	v.reload()
	_, err = v.Verify(billing)
	require.NoError(t, err, "no key would remain: the old ones stay")
	require.ErrorContains(t, <-reloads, "no verification keys")
}

// A requester key verifies only tokens of its own algorithm: a token of
// another (HS256 signed with the public key's text, the classic confusion;
// RS256 against an Ed25519 key) is not billing's, and goes to the issuer
// keys, which take it only if one of theirs signed it. A kid header, even
// one that is no string, changes nothing: the sub names the key.
func TestRequesterKeyAlgorithms(t *testing.T) {
	dir, issuers, requesters := t.TempDir(), t.TempDir(), t.TempDir()
	issuerRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	writePublic(t, filepath.Join(issuers, "issuer.pem"), &issuerRSA.PublicKey)
	secret := []byte(strings.Repeat("s", 40))
	secretFile := filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(secretFile, secret, 0o600))
	billingPub, billingKey, _ := ed25519.GenerateKey(rand.Reader)
	billingFile := filepath.Join(requesters, "billing.pem")
	writePublic(t, billingFile, billingPub)
	billingPEM, err := os.ReadFile(billingFile)
	require.NoError(t, err)
	strangerRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	v, err := NewVerifier(Config{KeysPath: issuers, RequesterKeysPath: requesters, HMACKeyFile: secretFile})
	require.NoError(t, err)

	admin := func(sub string) Claims { c := claims(sub, time.Minute); c.Admin = true; return c }
	for name, tok := range map[string]string{
		"HS256 keyed with billing.pem's text": signKid(t, jwt.SigningMethodHS256, billingPEM, "billing", claims("billing", time.Minute)),
		"HS256 keyed with billing's key":      signKid(t, jwt.SigningMethodHS256, []byte(billingPub), "billing", claims("billing", time.Minute)),
		"HS256 keyed so, admin":               signKid(t, jwt.SigningMethodHS256, billingPEM, "billing", admin("root")),
		"RS256 of another key":                signKid(t, jwt.SigningMethodRS256, strangerRSA, "billing", claims("billing", time.Minute)),
	} {
		_, err := v.Verify(tok)
		require.ErrorIs(t, err, ErrUnauthenticated, name)
		require.ErrorContains(t, err, "signature is invalid", name)
	}
	// The issuer keys of those algorithms still verify, whatever the kid.
	for name, tok := range map[string]string{
		"HS256 of the secret, kid billing": signKid(t, jwt.SigningMethodHS256, secret, "billing", admin("root")),
		"RS256 of the issuer, kid billing": signKid(t, jwt.SigningMethodRS256, issuerRSA, "billing", admin("root")),
	} {
		r, err := v.Verify(tok)
		require.NoError(t, err, name)
		require.Equal(t, Requester{Name: "root", Admin: true}, r, name)
	}

	numericKid := func(c Claims) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
		tok.Header["kid"] = 42
		s, err := tok.SignedString(billingKey)
		require.NoError(t, err)
		return s
	}
	r, err := v.Verify(numericKid(claims("billing", time.Minute)))
	require.NoError(t, err, "a kid of no string is ignored: the sub names the key")
	require.Equal(t, Requester{Name: "billing"}, r)
	_, err = v.Verify(numericKid(admin("billing")))
	require.ErrorContains(t, err, `requester "billing"'s own key (AUTH_REQUESTER_KEYS) may not sign an admin claim`)
	_, err = v.Verify(numericKid(claims("payments", time.Minute)))
	require.ErrorContains(t, err, "signature is invalid")
}

// AUTH_KEYS reaching the requester keys' directory by another path (a
// symlink, which config's comparison of the two paths cannot see) is
// refused: each of its keys is found in both.
func TestRequesterKeysBehindASymlink(t *testing.T) {
	requesters := t.TempDir()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(requesters, "billing.pem"), pub)
	link := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.Symlink(requesters, link))
	_, err := NewVerifier(Config{KeysPath: link, RequesterKeysPath: requesters})
	require.ErrorContains(t, err, "never an issuer key (AUTH_KEYS)")
}

// signPayload signs a payload written by hand, as encoding/json would
// never write it (names twice, in other cases).
func signPayload(t *testing.T, key ed25519.PrivateKey, payload string) string {
	t.Helper()
	seg := base64.RawURLEncoding.EncodeToString
	signing := seg([]byte(`{"alg":"EdDSA","typ":"JWT"}`)) + "." + seg([]byte(payload))
	sig, err := jwt.SigningMethodEdDSA.Sign(signing, key)
	require.NoError(t, err)
	return signing + "." + seg(sig)
}

// Claims are read by their exact names, as an issuer or a gateway reading
// them by name sees them: a member twice, or a claim the worker acts on
// written in another case, is refused whole rather than read as
// encoding/json would (case-insensitively, the last duplicate winning).
func TestClaimNamesExact(t *testing.T) {
	dir := t.TempDir()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(dir, "issuer.pem"), pub)
	v, err := NewVerifier(Config{KeysPath: dir, Audience: "lockworker"})
	require.NoError(t, err)
	payload := func(members string) string {
		return fmt.Sprintf(`{"sub":"billing","aud":"lockworker","exp":%d%s}`, time.Now().Add(time.Minute).Unix(), members)
	}
	for name, tc := range map[string]struct{ members, want string }{
		"ADMIN":                 {`,"ADMIN":true`, `claim "ADMIN" is not "admin"`},
		"Namespaces null":       {`,"namespaces":["billing"],"Namespaces":null`, `claim "Namespaces" is not "namespaces"`},
		"SUB":                   {`,"SUB":"payments"`, `claim "SUB" is not "sub"`},
		"Aud":                   {`,"Aud":"lockworker"`, `claim "Aud" is not "aud"`},
		"sub twice":             {`,"sub":"payments"`, `claim "sub" appears twice`},
		"admin twice":           {`,"admin":false,"admin":true`, `claim "admin" appears twice`},
		"another claim twice":   {`,"groups":[],"groups":["ops"]`, `claim "groups" appears twice`},
		"namespaces of no list": {`,"namespaces":"billing"`, `claim "namespaces"`},
	} {
		_, err := v.Verify(signPayload(t, key, payload(tc.members)))
		require.ErrorIs(t, err, ErrUnauthenticated, name)
		require.ErrorContains(t, err, tc.want, name)
	}

	r, err := v.Verify(signPayload(t, key, payload(`,"namespaces":["billing"],"admin":true,"groups":["ops"],"Groups":null,"nested":{"a":1,"a":2}`)))
	require.NoError(t, err, "other claims are not read: their cases and nested members are the issuer's business")
	require.Equal(t, Requester{Name: "billing", Namespaces: []string{"billing"}, Admin: true}, r)
	r, err = v.Verify(signPayload(t, key, strings.Replace(payload(""), `"sub"`, `"s\u0075b"`, 1)))
	require.NoError(t, err, "a name is compared once JSON escapes are read")
	require.Equal(t, "billing", r.Name)
}

// sub, iss, aud, exp and nbf are read (topics.ParseTokenClaims) as the
// worker read them before the rule was shared with the SDK, into
// golang-jwt's types: the same values, the same tokens refused with the
// same errors.
func TestClaimsReadAsGolangJWTReadsThem(t *testing.T) {
	values := []string{`"x"`, `""`, `"\u0041\ud800"`, `1`, `-1`, `1.5`, `-1.5`, `1e3`, `0.0000000001`, `1e400`, `9223372036854775807`, `9223372036800000000`, `1e300`, `-1e300`,
		`"1700000000"`, `"1.25"`, `"abc"`, `null`, `true`, `{}`, `{"a":1}`, `[]`, `["a"]`, `["a","b"]`, `["a",1]`, `[null]`, `[["a"]]`}
	for _, name := range []string{"sub", "iss", "aud", "exp", "nbf"} {
		for _, v := range values {
			var want jwt.RegisteredClaims
			dst := map[string]any{"sub": &want.Subject, "iss": &want.Issuer, "aud": &want.Audience, "exp": &want.ExpiresAt, "nbf": &want.NotBefore}[name]
			wantErr := json.Unmarshal([]byte(v), dst)
			var got Claims
			err := got.UnmarshalJSON([]byte(`{"` + name + `":` + v + `}`))
			// A date past the seconds Go's time holds golang-jwt reads
			// overflowed (an nbf of 1e300 the distant past); refused here.
			if f, perr := strconv.ParseFloat(strings.Trim(v, `"`), 64); wantErr == nil && perr == nil && (name == "exp" || name == "nbf") && math.Abs(math.Trunc(f)) > math.MaxInt64-62135596800 {
				require.ErrorContains(t, err, "is out of range", "%s: %s", name, v)
				continue
			}
			if wantErr != nil {
				require.EqualError(t, err, fmt.Sprintf("claim %q: %v", name, wantErr), "%s: %s", name, v)
				continue
			}
			require.NoError(t, err, "%s: %s", name, v)
			require.Equal(t, Claims{RegisteredClaims: want}, got, "%s: %s", name, v)
		}
	}
}

// "namespaces": null is what a Go issuer writes for a requester granted no
// namespace (a nil slice, no omitempty): refused, not read as an absent
// claim (every namespace). [] allows none; absent, all.
func TestNamespacesNull(t *testing.T) {
	dir := t.TempDir()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(dir, "issuer.pem"), pub)
	v, err := NewVerifier(Config{KeysPath: dir})
	require.NoError(t, err)
	type issuerClaims struct {
		jwt.RegisteredClaims
		Namespaces []string `json:"namespaces"`
	}
	exp := jwt.NewNumericDate(time.Now().Add(time.Minute))
	issue := func(ns []string) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, issuerClaims{jwt.RegisteredClaims{Subject: "intern", ExpiresAt: exp}, ns}).SignedString(key)
		require.NoError(t, err)
		return tok
	}
	_, err = v.Verify(issue(nil))
	require.ErrorIs(t, err, ErrUnauthenticated)
	require.ErrorContains(t, err, "the namespaces claim is null")

	r, err := v.Verify(issue([]string{}))
	require.NoError(t, err)
	require.False(t, r.MayUse(""), "[] allows no namespace")
	require.False(t, r.MayUse("payroll"))

	r, err = v.Verify(sign(t, jwt.SigningMethodEdDSA, key, claims("intern", time.Minute)))
	require.NoError(t, err)
	require.True(t, r.MayUse("payroll"), "absent: every namespace")
}

// pemBlock is pub as a PEM block.
func pemBlock(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// A key file of several PEM blocks loads every key: an issuers' bundle, or
// a requester's old and new key (a rotation by appending). A block that is
// no public key, or a requester's key that is another file's too, is
// refused as a broken file is.
func TestKeyFileOfSeveralKeys(t *testing.T) {
	issuers, requesters := t.TempDir(), t.TempDir()
	oldPub, oldKey, _ := ed25519.GenerateKey(rand.Reader)
	newPub, newKey, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	bundle := slices.Concat([]byte("# the issuers' keys\n"), pemBlock(t, oldPub), pemBlock(t, newPub), pemBlock(t, &rsaKey.PublicKey), []byte("trailing text\n"))
	require.NoError(t, os.WriteFile(filepath.Join(issuers, "bundle.pem"), bundle, 0o600))
	billingOld, billingOldKey, _ := ed25519.GenerateKey(rand.Reader)
	billingNew, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	billingFile := filepath.Join(requesters, "billing.pem")
	require.NoError(t, os.WriteFile(billingFile, slices.Concat(pemBlock(t, billingOld), pemBlock(t, &billingNew.PublicKey), pemBlock(t, billingOld)), 0o600))
	v, err := NewVerifier(Config{KeysPath: issuers, RequesterKeysPath: requesters})
	require.NoError(t, err)

	for name, tok := range map[string]string{
		"first issuer key":  sign(t, jwt.SigningMethodEdDSA, oldKey, claims("payments", time.Minute)),
		"second issuer key": sign(t, jwt.SigningMethodEdDSA, newKey, claims("payments", time.Minute)),
		"third, RSA":        sign(t, jwt.SigningMethodRS256, rsaKey, claims("payments", time.Minute)),
	} {
		r, err := v.Verify(tok)
		require.NoError(t, err, name)
		require.Equal(t, "payments", r.Name, name)
	}
	for name, tok := range map[string]string{
		"billing's old key": sign(t, jwt.SigningMethodEdDSA, billingOldKey, claims("billing", time.Minute)),
		"billing's new key": sign(t, jwt.SigningMethodES256, billingNew, claims("billing", time.Minute)),
	} {
		r, err := v.Verify(tok)
		require.NoError(t, err, name)
		require.Equal(t, Requester{Name: "billing"}, r, name)
	}
	_, err = v.Verify(sign(t, jwt.SigningMethodES256, billingNew, claims("payments", time.Minute)))
	require.ErrorContains(t, err, "signature is invalid", "billing's second key speaks for billing only")
	_, err = v.Verify(sign(t, jwt.SigningMethodEdDSA, billingOldKey, func() Claims { c := claims("billing", time.Minute); c.Admin = true; return c }()))
	require.ErrorContains(t, err, "may not sign an admin claim")

	private, err := x509.MarshalPKCS8PrivateKey(billingOldKey)
	require.NoError(t, err)
	paymentsPub, _, _ := ed25519.GenerateKey(rand.Reader)
	for name, tc := range map[string]struct {
		second []byte
		want   string
	}{
		"a private key":           {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: private}), "payments.pem: PEM block 2: not a PEM public key"},
		"an issuer's key":         {pemBlock(t, newPub), "payments.pem: the same key as " + filepath.Join(issuers, "bundle.pem")},
		"another requester's key": {pemBlock(t, &billingNew.PublicKey), "payments.pem: the same key as " + billingFile},
	} {
		require.NoError(t, os.WriteFile(filepath.Join(requesters, "payments.pem"), slices.Concat(pemBlock(t, paymentsPub), tc.second), 0o600))
		_, err := NewVerifier(Config{KeysPath: issuers, RequesterKeysPath: requesters})
		require.ErrorContains(t, err, tc.want, name)
	}
}

// The verifier's own goroutine reloads the keys, without a Verify to set
// it off, and Verify never waits for a reload under way: it goes on with
// the keys in force, here the new ones, published before OnReload is told.
func TestKeysReloadedInTheBackground(t *testing.T) {
	dir := t.TempDir()
	pub1, key1, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(dir, "1.pem"), pub1)
	reloaded, release := make(chan error), make(chan struct{})
	v, err := NewVerifier(Config{KeysPath: dir, ReloadEvery: time.Millisecond, OnReload: func(_ int, err error) {
		reloaded <- err
		<-release
	}})
	require.NoError(t, err)
	pub2, key2, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(dir, "2.new"), pub2) // renamed whole, not read half written
	require.NoError(t, os.Rename(filepath.Join(dir, "2.new"), filepath.Join(dir, "2.pem")))
	select {
	case err := <-reloaded:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the key added was not reloaded: no reload runs but a Verify's")
	}
	for _, key := range []ed25519.PrivateKey{key1, key2} {
		_, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, key, claims("a", time.Minute)))
		require.NoError(t, err, "while the reload's OnReload waits")
	}
	close(release)
	v.Close()
}

// certificate is a certificate of pub signed by signer (self-signed when
// parent is nil), and its PEM block. Its subject is its own, and edit may
// change the rest.
func certificate(t testing.TB, pub, signer any, parent *x509.Certificate, ca bool, edit ...func(*x509.Certificate)) (*x509.Certificate, []byte) {
	t.Helper()
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: rand.Text()}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: ca, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature}
	if ca {
		tpl.KeyUsage |= x509.KeyUsageCertSign
	}
	for _, e := range edit {
		e(tpl)
	}
	if parent == nil {
		parent = tpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, parent, pub, signer)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// A certificate stands for its key; the CA certificates after it (its
// chain: fullchain.pem, an x5c in PEM) are not loaded, as the CA's key
// would then sign any token, and two requesters' chains through one CA
// would be refused as sharing a key. Keys and certificates in one file, or
// another kind of block, fail the file.
func TestKeyFileCertificates(t *testing.T) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ca, caPEM := certificate(t, &caKey.PublicKey, caKey, nil, true)
	leaf := func() (*ecdsa.PrivateKey, []byte) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		_, b := certificate(t, &k.PublicKey, caKey, ca, false)
		return k, b
	}
	issuerKey, issuerChain := leaf()
	issuers := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(issuers, "idp.pem"), slices.Concat(issuerChain, caPEM), 0o600))
	v, err := NewVerifier(Config{KeysPath: issuers})
	require.NoError(t, err)
	t.Cleanup(v.Close)
	_, err = v.Verify(sign(t, jwt.SigningMethodES256, caKey, claims("anyone", time.Minute)))
	require.ErrorContains(t, err, "signature is invalid", "the CA's key is no issuer key")

	requesters := t.TempDir()
	requesterKeys := map[string]*ecdsa.PrivateKey{}
	for _, name := range []string{"billing", "payments"} {
		k, chain := leaf()
		requesterKeys[name] = k
		require.NoError(t, os.WriteFile(filepath.Join(requesters, name+".pem"), slices.Concat(chain, caPEM), 0o600))
	}
	v, err = NewVerifier(Config{KeysPath: issuers, RequesterKeysPath: requesters})
	require.NoError(t, err, "two requesters' chains through one CA")
	t.Cleanup(v.Close)
	r, err := v.Verify(sign(t, jwt.SigningMethodES256, issuerKey, claims("payments", time.Minute)))
	require.NoError(t, err, "the issuer's certificate")
	require.Equal(t, "payments", r.Name)
	r, err = v.Verify(sign(t, jwt.SigningMethodES256, requesterKeys["billing"], claims("billing", time.Minute)))
	require.NoError(t, err, "billing's certificate")
	require.Equal(t, "billing", r.Name)
	_, err = v.Verify(sign(t, jwt.SigningMethodES256, caKey, claims("billing", time.Minute)))
	require.ErrorContains(t, err, "signature is invalid", "the CA's key is no requester key")

	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	_, edCert := certificate(t, edPub, edKey, nil, false)
	f := filepath.Join(t.TempDir(), "k.pem")
	require.NoError(t, os.WriteFile(f, edCert, 0o600))
	v, err = NewVerifier(Config{KeysPath: f})
	require.NoError(t, err)
	t.Cleanup(v.Close)
	_, err = v.Verify(sign(t, jwt.SigningMethodEdDSA, edKey, claims("a", time.Minute)))
	require.NoError(t, err, "an Ed25519 certificate")

	private, err := x509.MarshalPKCS8PrivateKey(edKey)
	require.NoError(t, err)
	for name, tc := range map[string]struct {
		file []byte
		want string
	}{
		"a key, then a certificate": {slices.Concat(pemBlock(t, edPub), edCert), "PEM block 2: public keys and certificates in one file"},
		"a certificate, then a key": {slices.Concat(edCert, pemBlock(t, edPub)), "PEM block 2: public keys and certificates in one file"},
		"a certificate and its key": {slices.Concat(edCert, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: private})), `PEM block 2: not a PEM public key of Ed25519, RSA or ECDSA: a "PRIVATE KEY" block`},
	} {
		require.NoError(t, os.WriteFile(f, tc.file, 0o600))
		_, err := NewVerifier(Config{KeysPath: f})
		require.ErrorContains(t, err, tc.want, name)
	}
}

// A PEM block that does not decode (a character changed in transit, an
// append cut short) fails the file, wherever it is: pem.Decode skips it,
// and the key it held would be missing unsaid. So does a text line
// starting like a block, which cannot be told from a damaged one: the
// message says which line. Other text around the blocks, CRLF line ends
// and PKCS #1 RSA keys still load.
func TestKeyFileDamagedBlock(t *testing.T) {
	pub1, key1, _ := ed25519.GenerateKey(rand.Reader)
	pub2, key2, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	block1, block2 := pemBlock(t, pub1), pemBlock(t, pub2)
	badBase64 := bytes.Replace(block2, []byte("MCow"), []byte("MC*w"), 1)
	require.NotEqual(t, block2, badBase64)
	f := filepath.Join(t.TempDir(), "k.pem")
	for name, tc := range map[string]struct {
		file []byte
		want string
	}{
		"the second block's base64 damaged": {slices.Concat(block1, badBase64), `PEM block 2 cannot be decoded, at line 4 ("-----BEGIN PUBLIC KEY-----")`},
		"the second block cut short":        {slices.Concat(block1, block2[:len(block2)-10]), "PEM block 2 cannot be decoded, at line 4"},
		"the first block cut short":         {slices.Concat(block1[:len(block1)-10], []byte("\n"), block2), "PEM block 1 cannot be decoded, at line 1"},
		"a damaged block between two":       {slices.Concat(block1, badBase64, block2), "PEM block 2 cannot be decoded, at line 4"},
		"only a damaged block":              {badBase64, "PEM block 1 cannot be decoded, at line 1"},
		"an indented damaged block":         {slices.Concat(block1, []byte("# old:\n"), indent(badBase64, "  ")), "PEM block 2 cannot be decoded, at line 5"},
		"a text line after the blocks, CRLF": {
			bytes.ReplaceAll(slices.Concat(block1, []byte("\n-----BEGIN next key here on rotation\n")), []byte("\n"), []byte("\r\n")),
			`PEM block 2 cannot be decoded, at line 5 ("-----BEGIN next key here on rotation"): damaged, without its END line, or text starting like a block`,
		},
		"a text line before the blocks": {slices.Concat([]byte("-----BEGIN issuer keys, see the wiki, then paste them below\n"), block1), `PEM block 1 cannot be decoded, at line 1 ("-----BEGIN issuer keys, see the wiki, th")`},
	} {
		require.NoError(t, os.WriteFile(f, tc.file, 0o600))
		_, err := NewVerifier(Config{KeysPath: f})
		require.ErrorContains(t, err, tc.want, name)
	}

	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)})
	text := slices.Concat([]byte("# -----BEGIN in a comment\nissuer keys -----\n"), block1, []byte("\nkey 2:\n"), pkcs1, block2, []byte("end\n"))
	for name, file := range map[string][]byte{"text around": text, "CRLF": bytes.ReplaceAll(text, []byte("\n"), []byte("\r\n"))} {
		require.NoError(t, os.WriteFile(f, file, 0o600))
		v, err := NewVerifier(Config{KeysPath: f})
		require.NoError(t, err, name)
		for _, tok := range []string{
			sign(t, jwt.SigningMethodEdDSA, key1, claims("a", time.Minute)),
			sign(t, jwt.SigningMethodRS256, rsaKey, claims("a", time.Minute)),
			sign(t, jwt.SigningMethodEdDSA, key2, claims("a", time.Minute)),
		} {
			_, err := v.Verify(tok)
			require.NoError(t, err, name)
		}
		v.Close()
	}
}

// Close does not wait for a reload that hangs (a hung network file system,
// here an OnReload that does not return): the process must still stop. The
// goroutine ends once its reload returns.
func TestCloseDoesNotWaitForAHungReload(t *testing.T) {
	dir := t.TempDir()
	pub1, key1, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(dir, "1.pem"), pub1)
	hung, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	v, err := NewVerifier(Config{KeysPath: dir, ReloadEvery: time.Millisecond, OnReload: func(int, error) {
		once.Do(func() { close(hung) })
		<-release
	}})
	require.NoError(t, err)
	pub2, _, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(dir, "2.new"), pub2)
	require.NoError(t, os.Rename(filepath.Join(dir, "2.new"), filepath.Join(dir, "2.pem")))
	<-hung

	closed := make(chan struct{})
	var closers sync.WaitGroup
	for range 2 {
		closers.Go(v.Close)
	}
	go func() {
		closers.Wait()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close waits for the hung reload")
	}
	_, err = v.Verify(sign(t, jwt.SigningMethodEdDSA, key1, claims("a", time.Minute)))
	require.NoError(t, err, "after Close, with the keys in force")

	close(release)
	<-v.stopped
	v.Close()
}
