package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/auth"
	"github.com/omninode/lockworker/internal/secretfile"
	"github.com/omninode/lockworker/topics"
)

// clearCredentialsEnv empties every variable of Config's credentials for
// the test, so that its clients do not take those of the environment the
// tests run in.
func clearCredentialsEnv(t testing.TB) {
	for _, v := range []string{EnvToken, EnvTokenFile, EnvSigningKeyFile, EnvTokenAudience, EnvTokenIssuer} {
		t.Setenv(v, "")
	}
}

func TestCredentials(t *testing.T) {
	clearCredentialsEnv(t)
	none, err := loadCredentials(Config{})
	require.NoError(t, err)
	tok, err := none.token()
	require.NoError(t, err)
	require.Empty(t, tok, "no credentials: no header")

	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(secret, []byte(strings.Repeat("s", 32)+"\n"), 0o600))
	c, err := loadCredentials(Config{SigningKeyFile: secret})
	require.NoError(t, err)
	c.sub = "billing"
	first, err := c.token()
	require.NoError(t, err)
	again, err := c.token()
	require.NoError(t, err)
	require.Equal(t, first, again, "a signed token is reused while it has more than a minute left")
	var claims jwt.RegisteredClaims
	_, err = jwt.ParseWithClaims(strings.TrimPrefix(first, "Bearer "), &claims, func(*jwt.Token) (any, error) { return []byte(strings.Repeat("s", 32)), nil })
	require.NoError(t, err)
	require.Equal(t, "billing", claims.Subject)
	require.Equal(t, "billing", c.subject(), "owners are scoped by the requester the key signs for")
	require.Equal(t, acquireKey{"", "job", "billing:svc"}, (&Client{creds: c}).acquireKey("", "job", "svc"))
	require.WithinDuration(t, time.Now().Add(SignedTokenTTL), claims.ExpiresAt.Time, 5*time.Second)

	static, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "reports",
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}).SignedString([]byte("k"))
	require.NoError(t, err)
	tokenFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(static+"\n"), 0o600))
	t.Setenv(EnvTokenFile, tokenFile)
	c, err = loadCredentials(Config{})
	require.NoError(t, err)
	require.Equal(t, "reports", c.subject())
	tok, err = c.token()
	require.NoError(t, err)
	require.Equal(t, "Bearer "+static, tok)
	c, err = loadCredentials(Config{Token: "bearer " + static}) // the scheme in any case, as the worker reads it
	require.NoError(t, err)
	tok, err = c.token()
	require.NoError(t, err)
	require.Equal(t, "Bearer "+static, tok)

	expired, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "old",
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Minute))}).SignedString([]byte("k"))
	require.NoError(t, err)
	c, err = loadCredentials(Config{Token: expired})
	require.NoError(t, err)
	_, err = c.token()
	require.ErrorIs(t, err, ErrUnauthenticated)
	_, err = loadCredentials(Config{Token: "not a jwt"})
	require.ErrorIs(t, err, ErrUnauthenticated)

	_, err = loadCredentials(Config{Token: static, SigningKeyFile: secret})
	require.ErrorContains(t, err, "not both")
	short := filepath.Join(dir, "short")
	require.NoError(t, os.WriteFile(short, []byte("short"), 0o600))
	_, err = loadCredentials(Config{SigningKeyFile: short})
	require.ErrorContains(t, err, "at least 32 bytes")
	badPEM := filepath.Join(dir, "bad.pem")
	require.NoError(t, os.WriteFile(badPEM, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o600))
	_, err = loadCredentials(Config{SigningKeyFile: badPEM})
	require.ErrorContains(t, err, "not an Ed25519, RSA or ECDSA private key")
}

// wallAhead returns t with its wall clock moved on by d and its monotonic
// reading unchanged: what time.Now returns after a host suspend of d on
// Linux (CLOCK_MONOTONIC stands still while suspended), or after the wall
// clock was stepped forward. time has no API for it, so it writes the
// seconds field of t's wall word (the layout since Go 1.9); the callers
// check both clocks of the result, so a changed layout fails their test.
func wallAhead(t time.Time, d time.Duration) time.Time {
	type rawTime struct {
		wall uint64
		ext  int64
		loc  *time.Location
	}
	r := (*rawTime)(unsafe.Pointer(&t))
	const hasMonotonic = 1 << 63
	if r.wall&hasMonotonic == 0 {
		panic("no monotonic reading")
	}
	r.wall += uint64(d/time.Second) << 30 // the 33-bit seconds field
	return t
}

// A signed token's freshness is judged by the wall clock, as the workers
// judge its exp: after a suspend, which the monotonic clock does not
// count, the client signs a new token rather than send one that expired
// while the host slept.
func TestSignedTokenRenewedAfterSuspend(t *testing.T) {
	clearCredentialsEnv(t)
	secret := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secret, []byte(strings.Repeat("s", 32)), 0o600))
	c, err := loadCredentials(Config{SigningKeyFile: secret})
	require.NoError(t, err)
	c.sub = "billing"
	start := time.Now()
	c.now = func() time.Time { return start }
	first, err := c.token()
	require.NoError(t, err)

	resumed := wallAhead(start.Add(time.Second), time.Hour) // an hour asleep
	require.Equal(t, time.Second, resumed.Sub(start), "monotonic: 1 s later")
	require.Equal(t, time.Hour+time.Second, resumed.Round(0).Sub(start.Round(0)), "wall: an hour later")
	c.now = func() time.Time { return resumed }
	again, err := c.token()
	require.NoError(t, err)
	require.NotEqual(t, first, again, "signed anew")
	var claims jwt.RegisteredClaims
	_, _, err = jwt.NewParser().ParseUnverified(strings.TrimPrefix(again, "Bearer "), &claims)
	require.NoError(t, err)
	require.Equal(t, resumed.Round(0).Add(SignedTokenTTL).Unix(), claims.ExpiresAt.Unix(), "its exp is SignedTokenTTL past the wall clock's now")
}

// A worker that checks aud and iss (AUTH_AUDIENCE, AUTH_ISSUER) accepts
// the tokens a client signs with TokenAudience and TokenIssuer, given in
// Config or by their environment variables (trimmed, as the worker trims
// its own); without them it refuses them. A token the claims' JSON escapes
// carry past the workers' limit is refused before it is sent.
func TestSignedTokenAudienceAndIssuer(t *testing.T) {
	clearCredentialsEnv(t)
	secret := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secret, []byte(strings.Repeat("s", 32)), 0o600))
	v, err := auth.NewVerifier(auth.Config{HMACKeyFile: secret, Audience: "locks.example", Issuer: "billing-ci"})
	require.NoError(t, err)
	verify := func(cfg Config) error {
		t.Helper()
		c, err := loadCredentials(cfg)
		require.NoError(t, err)
		c.sub = "billing"
		tok, err := c.token()
		require.NoError(t, err)
		_, err = v.Verify(tok)
		return err
	}

	require.ErrorIs(t, verify(Config{SigningKeyFile: secret}), auth.ErrUnauthenticated, "no aud, no iss")
	require.NoError(t, verify(Config{SigningKeyFile: secret, TokenAudience: "locks.example", TokenIssuer: "billing-ci"}))
	t.Setenv(EnvTokenAudience, "locks.example\n") // as a Secret's file often ends
	t.Setenv(EnvTokenIssuer, " billing-ci\n")
	require.NoError(t, verify(Config{SigningKeyFile: secret}), "from the environment")
	require.ErrorIs(t, verify(Config{SigningKeyFile: secret, TokenIssuer: "other"}), auth.ErrUnauthenticated, "Config wins")

	_, err = loadCredentials(Config{SigningKeyFile: secret, TokenAudience: strings.Repeat("a", MaxTokenClaimBytes+1)})
	require.ErrorContains(t, err, "token audience is 1025 bytes, over the limit of 1024")

	c, err := loadCredentials(Config{SigningKeyFile: secret, TokenAudience: strings.Repeat("<", MaxTokenClaimBytes)})
	require.NoError(t, err, "within the claim limit")
	_, err = c.token()
	require.ErrorIs(t, err, ErrUnauthenticated)
	require.ErrorContains(t, err, "over the workers' limit of 8192: shorten the token audience or issuer")
}

// A requester signing with its own key names itself in the sub (and sets
// no kid header, which the workers ignore), and a worker that has its public key in AUTH_REQUESTER_KEYS (billing.pem)
// accepts its tokens, and only for its own name.
func TestSignedTokenWithARequesterKey(t *testing.T) {
	clearCredentialsEnv(t)
	requesters := t.TempDir()
	keyFile := requesterKey(t, requesters, "billing")
	v, err := auth.NewVerifier(auth.Config{RequesterKeysPath: requesters})
	require.NoError(t, err)

	for _, sub := range []string{"billing", "payments"} {
		c, err := loadCredentials(Config{SigningKeyFile: keyFile})
		require.NoError(t, err)
		c.sub = sub
		tok, err := c.token()
		require.NoError(t, err)
		parsed, _, err := jwt.NewParser().ParseUnverified(strings.TrimPrefix(tok, "Bearer "), &jwt.RegisteredClaims{})
		require.NoError(t, err)
		got, err := parsed.Claims.GetSubject()
		require.NoError(t, err)
		require.Equal(t, sub, got)
		require.NotContains(t, parsed.Header, "kid")
		r, err := v.Verify(tok)
		if sub == "billing" {
			require.NoError(t, err)
			require.Equal(t, auth.Requester{Name: "billing"}, r)
		} else {
			require.ErrorIs(t, err, auth.ErrUnauthenticated, "billing's key does not sign for payments")
		}
	}
}

// SignAdmin makes the tokens signed with the workers' HMAC secret, an
// issuer's, claim admin, which the workers honour; a requester's private
// key signs none (the workers would refuse its token whole), nor does a
// client without SignAdmin, and a static token is sent as given.
func TestSignAdmin(t *testing.T) {
	clearCredentialsEnv(t)
	secret, _ := workersHMAC(t)
	requesters := t.TempDir()
	keyFile := requesterKey(t, requesters, "billing")
	v, err := auth.NewVerifier(auth.Config{HMACKeyFile: secret, RequesterKeysPath: requesters})
	require.NoError(t, err)
	t.Cleanup(v.Close)

	for _, tc := range []struct {
		name  string
		cfg   Config
		admin bool
	}{
		{"HMAC secret, SignAdmin", Config{SigningKeyFile: secret, SignAdmin: true}, true},
		{"HMAC secret", Config{SigningKeyFile: secret}, false},
		{"requester key, SignAdmin", Config{SigningKeyFile: keyFile, SignAdmin: true}, false},
	} {
		c, err := loadCredentials(tc.cfg)
		require.NoError(t, err)
		c.sub = "billing"
		tok, err := c.token()
		require.NoError(t, err)
		r, err := v.Verify(tok)
		require.NoError(t, err, tc.name)
		require.Equal(t, auth.Requester{Name: "billing", Admin: tc.admin}, r, tc.name)
	}

	static := billingToken(t, time.Now().Add(time.Hour))
	c, err := loadCredentials(Config{Token: static, SignAdmin: true})
	require.NoError(t, err)
	tok, err := c.token()
	require.NoError(t, err)
	require.Equal(t, "Bearer "+static, tok, "a static token's claims are its issuer's")
}

// newRefused calls New with cfg, which it requires to fail with
// ErrInvalidConfig, and returns its error.
func newRefused(t *testing.T, cfg Config) error {
	t.Helper()
	// Never reached: the config fails first (and without that, New fails
	// unreachable within the second).
	cfg.Brokers = []string{"127.0.0.1:1"}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	_, err := New(ctx, cfg)
	require.ErrorIs(t, err, ErrInvalidConfig)
	return err
}

// A token longer than the workers accept (topics.MaxTokenBytes, without
// its scheme), from Config or either environment variable, fails New
// rather than every command after RequestTimeout (ErrNoReply, the workers
// dropping it); one at the limit is taken.
func TestNewRefusesATokenOverTheWorkersLimit(t *testing.T) {
	clearCredentialsEnv(t)
	// Tokens around the limit: a claim grown until the token passes it.
	var fits, over string
	for n := topics.MaxTokenBytes*3/4 - 200; over == ""; n++ { // base64 takes 4 bytes for 3
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "billing", "groups": strings.Repeat("g", n),
			"exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(strings.Repeat("k", 32)))
		require.NoError(t, err)
		if len(tok) <= topics.MaxTokenBytes {
			fits = tok
		} else {
			over = tok
		}
	}
	require.Greater(t, len(fits), topics.MaxTokenBytes-3, "a token at the limit")
	c, err := loadCredentials(Config{Token: "Bearer " + fits})
	require.NoError(t, err, "at the limit, the scheme not counted")
	tok, err := c.token()
	require.NoError(t, err)
	require.Equal(t, "Bearer "+fits, tok)

	want := fmt.Sprintf("the token is %d bytes, over the workers' limit of %d", len(over), topics.MaxTokenBytes)
	err = newRefused(t, Config{Token: over})
	require.ErrorIs(t, err, ErrUnauthenticated)
	refusedFromEveryPlace(t, over, want)
}

// refusedFromEveryPlace: New refuses token, with an error containing want,
// from Config.Token, LOCKWORKER_TOKEN and LOCKWORKER_TOKEN_FILE alike.
func refusedFromEveryPlace(t *testing.T, token, want string) {
	t.Helper()
	require.ErrorContains(t, newRefused(t, Config{Token: token}), want, "Config.Token")
	t.Setenv(EnvToken, token)
	require.ErrorContains(t, newRefused(t, Config{}), want, EnvToken)
	t.Setenv(EnvToken, "")
	file := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(file, []byte(token+"\n"), 0o600))
	t.Setenv(EnvTokenFile, file)
	require.ErrorContains(t, newRefused(t, Config{}), want, EnvTokenFile)
}

// A requester the workers refuse as a token's sub (topics.SubjectProblem)
// fails New: with a signing key it is Config.Requester, with a token the
// token's subject. Otherwise its tokens would be sent, and every command
// dropped unanswered (ErrNoReply).
func TestNewRefusesARequesterTheWorkersRefuseAsSub(t *testing.T) {
	clearCredentialsEnv(t)
	secret, v := workersHMAC(t)
	longest, over := strings.Repeat("n", topics.MaxSubjectBytes), strings.Repeat("n", topics.MaxSubjectBytes+1)
	require.True(t, topics.ValidTopicName(topics.DefaultNames().ReplyTopic(over)), "its reply topic is valid: only the sub rule refuses it")

	for sub, refused := range map[string]bool{longest: false, over: true} {
		c, err := loadCredentials(Config{SigningKeyFile: secret})
		require.NoError(t, err)
		c.sub = sub
		tok, err := c.token()
		require.NoError(t, err)
		_, err = v.Verify(tok)
		require.Equal(t, refused, err != nil, "the workers on a token signed for %d bytes: %v", len(sub), err)
	}
	require.ErrorContains(t, newRefused(t, Config{SigningKeyFile: secret, Requester: over}), "sub is longer than 200 bytes")
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	_, err := New(ctx, Config{Brokers: []string{"127.0.0.1:1"}, SigningKeyFile: secret, Requester: longest})
	require.ErrorIs(t, err, ErrUnreachable, "the longest sub is taken")

	for name, claims := range map[string]jwt.MapClaims{
		"no sub":         {"exp": time.Now().Add(time.Hour).Unix()},
		"a sub too long": {"sub": over, "exp": time.Now().Add(time.Hour).Unix()},
	} {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(strings.Repeat("s", 32)))
		require.NoError(t, err)
		_, err = v.Verify(tok)
		require.ErrorIs(t, err, auth.ErrUnauthenticated, name)
		require.ErrorContains(t, newRefused(t, Config{Token: tok}), "as the tokens' sub", name)
	}
}

// The token and signing key files are read up to secretfile.MaxBytes
// (a path naming something endless by mistake fails, rather than fill the
// memory), and a token file holding nothing but spaces is refused rather
// than taken as no credentials: New fails at once with ErrInvalidConfig.
func TestCredentialFilesBoundedAndNotEmpty(t *testing.T) {
	clearCredentialsEnv(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	t.Run("over the bound", func(t *testing.T) {
		big := write("big", strings.Repeat("s", secretfile.MaxBytes+1))
		t.Setenv(EnvTokenFile, big)
		require.ErrorContains(t, newRefused(t, Config{}), "reading LOCKWORKER_TOKEN_FILE: the file it names is over 65536 bytes")
		t.Setenv(EnvTokenFile, "")
		require.ErrorContains(t, newRefused(t, Config{SigningKeyFile: big}), "reading the signing key: the file is over 65536 bytes")
		t.Setenv(EnvSigningKeyFile, big)
		require.ErrorContains(t, newRefused(t, Config{}), "reading the signing key: the file is over 65536 bytes")
	})
	t.Run("empty token file", func(t *testing.T) {
		for _, content := range []string{"", "\n", " \t\r\n"} {
			t.Setenv(EnvTokenFile, write("empty", content))
			require.ErrorContains(t, newRefused(t, Config{}), "LOCKWORKER_TOKEN_FILE: the file it names holds no token (it is empty, or only spaces)", "%q", content)
		}
	})
}

// A ReadOnly client sends no command, so no token: New does not refuse it
// for a token's sub, size or missing exp that the workers would refuse
// (lockctl locks and watch --lock in a shell holding such a token).
func TestReadOnlyTakesATokenTheWorkersWouldRefuse(t *testing.T) {
	clearCredentialsEnv(t)
	secret := []byte(strings.Repeat("s", 32))
	noSub, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()}).SignedString(secret)
	require.NoError(t, err)
	big, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "billing", "exp": time.Now().Add(time.Hour).Unix(),
		"pad": strings.Repeat("p", topics.MaxTokenBytes)}).SignedString(secret)
	require.NoError(t, err)
	noExp, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "billing"}).SignedString(secret)
	require.NoError(t, err)
	for name, tok := range map[string]string{"no sub": noSub, "over the limit": big, "no exp": noExp} {
		cfg := Config{Token: tok, Brokers: []string{"127.0.0.1:1"}}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err := New(ctx, cfg)
		cancel()
		require.ErrorIs(t, err, ErrInvalidConfig, "%s: a client that sends commands is refused", name)
		cfg.ReadOnly = true
		ctx, cancel = context.WithTimeout(t.Context(), time.Second)
		_, err = New(ctx, cfg)
		cancel()
		require.NotErrorIs(t, err, ErrInvalidConfig, name)
		require.ErrorIs(t, err, ErrUnreachable, name)
	}
}

// A static token whose claims the workers refuse (topics.ParseTokenClaims:
// a member twice, a checked claim's name in another case, a null
// namespaces claim, a checked claim of the wrong type) fails New rather
// than every command after RequestTimeout (ErrNoReply), with the workers'
// reason; one whose claims they take is taken, though it break what
// golang-jwt's RegisteredClaims would read (an iat of no number, which the
// workers do not read). A ReadOnly client, which sends no token, takes it
// without reading its claims.
func TestNewRefusesATokenWhoseClaimsTheWorkersRefuse(t *testing.T) {
	clearCredentialsEnv(t)
	_, v := workersHMAC(t)
	token := func(members string) string {
		seg := base64.RawURLEncoding.EncodeToString
		signing := seg([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." +
			seg(fmt.Appendf(nil, `{"sub":"billing","exp":%d%s}`, time.Now().Add(time.Hour).Unix(), members))
		sig, err := jwt.SigningMethodHS256.Sign(signing, []byte(strings.Repeat("s", 32)))
		require.NoError(t, err)
		return signing + "." + seg(sig)
	}

	for members, want := range map[string]string{
		`,"ADMIN":true`:               `claim "ADMIN" is not "admin"`,
		`,"Sub":"payments"`:           `claim "Sub" is not "sub"`,
		`,"\u017fub":"payments"`:      `claim "ſub" is not "sub"`, // ſ folds to s
		`,"sub":"payments"`:           `claim "sub" appears twice`,
		`,"groups":[],"groups":["x"]`: `claim "groups" appears twice`,
		`,"namespaces":null`:          "the namespaces claim is null",
		`,"namespaces":"billing"`:     `claim "namespaces": json: cannot unmarshal string`,
		`,"admin":"true"`:             `claim "admin": json: cannot unmarshal string`,
		`,"aud":1`:                    `claim "aud": invalid type for claim`,
		`,"nbf":true`:                 `claim "nbf": could not parse NumericData`,
	} {
		tok := token(members)
		_, err := v.Verify(tok)
		require.ErrorContains(t, err, want, "the workers refuse %s", members)
		_, err = loadCredentials(Config{Token: tok})
		require.ErrorIs(t, err, ErrUnauthenticated, members)
		require.ErrorContains(t, err, "the workers refuse the token's claims: "+want, members)

		c, err := loadCredentials(Config{Token: tok, ReadOnly: true})
		require.NoError(t, err, "ReadOnly: %s", members)
		require.Empty(t, c.subject(), "ReadOnly: no requester read from %s", members)
	}

	for _, members := range []string{``, `,"iat":"bogus","jti":1`, `,"Groups":1,"groups":2`, `,"namespaces":[],"admin":true,"aud":["a","b"],"nbf":1`} {
		tok := token(members)
		r, err := v.Verify(tok)
		require.NoError(t, err, "the workers take %s", members)
		c, err := loadCredentials(Config{Token: tok})
		require.NoError(t, err, members)
		require.Equal(t, r.Name, c.subject(), members)
	}

	err := newRefused(t, Config{Token: token(`,"ADMIN":true`)})
	require.ErrorIs(t, err, ErrUnauthenticated)
	require.ErrorContains(t, err, `the workers refuse the token's claims: claim "ADMIN" is not "admin"`)
}

// The tokens a client signs itself hold the claims as the workers read
// them (topics.ParseTokenClaims), whatever its requester, audience and
// issuer (JSON escapes included).
func TestSignedTokensHaveTheWorkersShape(t *testing.T) {
	clearCredentialsEnv(t)
	secret := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secret, []byte(strings.Repeat("s", 32)), 0o600))
	for _, tc := range []struct{ sub, aud, iss string }{
		{"billing", "", ""},
		{"a.B_c-9", "locks.example", "billing-ci"},
		{strings.Repeat("n", topics.MaxSubjectBytes), `"<&>\` + "\x00\n\u2028é", "Sub ADMIN \"sub\":1"},
	} {
		c, err := loadCredentials(Config{SigningKeyFile: secret, TokenAudience: tc.aud, TokenIssuer: tc.iss})
		require.NoError(t, err)
		c.sub = tc.sub
		tok, err := c.token()
		require.NoError(t, err)
		parts := strings.Split(strings.TrimPrefix(tok, "Bearer "), ".")
		require.Len(t, parts, 3)
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		require.NoError(t, err)
		claims, err := topics.ParseTokenClaims(payload)
		require.NoError(t, err, "%s", payload)
		var aud []string
		if tc.aud != "" {
			aud = []string{tc.aud}
		}
		require.Equal(t, tc.sub, claims.Subject)
		require.Equal(t, tc.iss, claims.Issuer)
		require.Equal(t, aud, claims.Audience)
		require.NotNil(t, claims.ExpiresAt)
		require.WithinDuration(t, time.Now().Add(SignedTokenTTL), *claims.ExpiresAt, 5*time.Second)
	}
}

// A static token without exp, which every worker refuses (it requires
// one) and leaves its commands unanswered, fails New at once, from
// Config.Token or either environment variable, rather than every command
// after RequestTimeout (ErrNoReply).
func TestNewRefusesAStaticTokenWithoutExp(t *testing.T) {
	clearCredentialsEnv(t)
	_, v := workersHMAC(t)
	noExp, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "billing"}).SignedString([]byte(strings.Repeat("s", 32)))
	require.NoError(t, err)
	_, err = v.Verify(noExp)
	require.ErrorIs(t, err, auth.ErrUnauthenticated, "the workers refuse it")

	const want = "the token has no exp, which the workers require"
	_, err = loadCredentials(Config{Token: noExp})
	require.ErrorIs(t, err, ErrUnauthenticated)
	require.ErrorContains(t, err, want)
	refusedFromEveryPlace(t, noExp, want)
}

// A token file that a sidecar renews (a Kubernetes projected token or
// Secret, swapping a symbolic link; Vault agent) is read again when it
// changes: the client takes the new token without being made again, which
// would lose its leases and sessions. A new token New would refuse, or one
// naming another requester, is not taken: the one held serves until it
// expires, and the error then says why the new one was not taken.
func TestTokenFileReadAgainWhenItChanges(t *testing.T) {
	clearCredentialsEnv(t)
	start := time.Now()
	sign := func(claims jwt.MapClaims) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(strings.Repeat("s", 32)))
		require.NoError(t, err)
		return tok
	}
	first := billingToken(t, start.Add(time.Minute))
	p := mountProjected(t, projected{}, first)
	c, err := loadCredentials(Config{})
	require.NoError(t, err)
	at := func(now time.Time) { c.now = func() time.Time { return now } }
	require.Equal(t, first, tokenSent(t, c))

	second := billingToken(t, start.Add(time.Hour))
	p.swap(&second)
	require.Equal(t, first, tokenSent(t, c), "just written: the valid token held is kept until the file settles")
	settle(c)
	require.Equal(t, second, tokenSent(t, c), "taken once the file has settled, before the first expires")

	for name, content := range map[string]*string{
		"no file":       nil,
		"empty":         new(" \n"),
		"not a JWT":     new("garbage"),
		"no exp":        new(sign(jwt.MapClaims{"sub": "billing"})),
		"claims":        new(sign(jwt.MapClaims{"sub": "billing", "exp": start.Add(3 * time.Hour).Unix(), "ADMIN": true})),
		"another sub":   new(sign(jwt.MapClaims{"sub": "payments", "exp": start.Add(3 * time.Hour).Unix()})),
		"over the size": new(sign(jwt.MapClaims{"sub": "billing", "exp": start.Add(3 * time.Hour).Unix(), "pad": strings.Repeat("p", topics.MaxTokenBytes)})),
	} {
		p.swap(content)
		settle(c)
		require.Equal(t, second, tokenSent(t, c), "%s: the token held is kept", name)
		at(start.Add(2 * time.Hour))
		_, err := c.token()
		require.ErrorIs(t, err, ErrUnauthenticated, name)
		require.ErrorContains(t, err, "the token expired at "+start.Add(time.Hour).Format(time.RFC3339)+
			"; LOCKWORKER_TOKEN_FILE changed since, but its new token is not taken: ", name)
		if content != nil && strings.TrimSpace(*content) != "" {
			require.NotContains(t, err.Error(), strings.TrimSpace(*content), "%s: the token is not told", name)
		}
	}
	third := billingToken(t, start.Add(3*time.Hour))
	p.swap(&third)
	require.Equal(t, third, tokenSent(t, c), "a valid one is taken again")
	at(start.Add(4 * time.Hour))
	_, err = c.token()
	require.ErrorContains(t, err, "expired at "+start.Add(3*time.Hour).Format(time.RFC3339)+", and LOCKWORKER_TOKEN_FILE holds no newer one")
}

// projected is a token file as Kubernetes mounts it (AtomicWriter):
// token -> ..data/token, ..data -> ..N, which a renewal swaps for a new
// directory.
type projected struct {
	t       *testing.T
	dir     string
	file    string // the token's path, at LOCKWORKER_TOKEN_FILE
	version int
	mtime   time.Time // the tokens' mtime, as a writer keeping mtimes (tar, cp -p, rsync -t) sets it; zero: left as written
	prune   bool      // each old directory removed after its swap, as kubelet does
}

// mountProjected mounts first in p's layout at LOCKWORKER_TOKEN_FILE.
func mountProjected(t *testing.T, p projected, first string) *projected {
	t.Helper()
	p.t, p.dir = t, t.TempDir()
	p.file = filepath.Join(p.dir, "token")
	p.swap(&first)
	require.NoError(t, os.Symlink(filepath.Join("..data", "token"), p.file))
	t.Setenv(EnvTokenFile, p.file)
	return &p
}

// swap renews the token: content (no file when nil) in a new directory,
// ..data swapped to it.
func (p *projected) swap(content *string) {
	p.t.Helper()
	p.version++
	v := fmt.Sprintf("..%d", p.version)
	require.NoError(p.t, os.Mkdir(filepath.Join(p.dir, v), 0o700))
	if content != nil {
		f := filepath.Join(p.dir, v, "token")
		require.NoError(p.t, os.WriteFile(f, []byte(*content), 0o600))
		if !p.mtime.IsZero() {
			require.NoError(p.t, os.Chtimes(f, p.mtime, p.mtime))
		}
	}
	require.NoError(p.t, os.Symlink(v, filepath.Join(p.dir, "..data_tmp")))
	require.NoError(p.t, os.Rename(filepath.Join(p.dir, "..data_tmp"), filepath.Join(p.dir, "..data")))
	if p.prune && p.version > 1 {
		require.NoError(p.t, os.RemoveAll(filepath.Join(p.dir, fmt.Sprintf("..%d", p.version-1))))
	}
}

// billingToken is a token of billing expiring at exp, signed with the
// HMAC secret of 32 "s".
func billingToken(t *testing.T, exp time.Time) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "billing",
		ExpiresAt: jwt.NewNumericDate(exp)}).SignedString([]byte(strings.Repeat("s", 32)))
	require.NoError(t, err)
	return tok
}

// tokenSent is the token c's next command carries, without its scheme.
func tokenSent(t *testing.T, c *credentials) string {
	t.Helper()
	tok, err := c.token()
	require.NoError(t, err)
	return strings.TrimPrefix(tok, "Bearer ")
}

// settle moves c's clock SettleTime ahead, as if every file written so
// far had settled.
func settle(c *credentials) {
	c.now = func() time.Time { return time.Now().Add(secretfile.SettleTime) }
}

// awaitFileClockPast waits until a file written now gets a later change
// time than path's. Outside tests, a change stamp is trusted only
// SettleTime after the change, so a later write never shares its tick.
func awaitFileClockPast(t *testing.T, path string) {
	t.Helper()
	changed := func(p string) time.Time {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		_, at, _ := secretfile.ChangeStamp(fi)
		return at
	}
	probe := filepath.Join(t.TempDir(), "probe")
	require.Eventually(t, func() bool {
		return os.WriteFile(probe, nil, 0o600) == nil && changed(probe).After(changed(path))
	}, 10*time.Second, time.Millisecond)
}

// A token file rewritten in place is read again when its stat changed:
// its size, mtime or change time, which a rewrite keeping both (cp -p,
// rsync --inplace -a) still moves. A stat taken within SettleTime of a
// write is not trusted: a write in the same tick of the file system's
// clock keeps all three.
func TestTokenFileRewrittenInPlace(t *testing.T) {
	clearCredentialsEnv(t)
	start := time.Now()
	file := filepath.Join(t.TempDir(), "token")
	t.Setenv(EnvTokenFile, file)
	old := start.Add(-time.Hour)
	write := func(tok string) {
		require.NoError(t, os.WriteFile(file, []byte(tok), 0o600))
		require.NoError(t, os.Chtimes(file, old, old))
	}
	first, second, third := billingToken(t, start.Add(time.Minute)), billingToken(t, start.Add(time.Hour)), billingToken(t, start.Add(2*time.Hour))
	require.Equal(t, len(first), len(second), "renewals of the same size")

	write(first)
	c, err := loadCredentials(Config{})
	require.NoError(t, err)
	settle(c)
	require.Equal(t, first, tokenSent(t, c))
	awaitFileClockPast(t, file)
	write(second)
	require.Equal(t, second, tokenSent(t, c), "the same inode, size and mtime: read again, as its change time moved")

	write(first)
	c, err = loadCredentials(Config{})
	require.NoError(t, err)
	write(third) // maybe within the same tick of the file system's clock
	settle(c)
	require.Equal(t, third, tokenSent(t, c), "a stat taken within SettleTime of a write is not trusted")
}

// Kubernetes' AtomicWriter layout, each old directory removed after its
// swap (as kubelet does), renewed by a writer keeping mtimes (tar, cp -p,
// rsync -t) with renewals of the same size: two swaps between commands
// let the third file take the inode of the first (ext4 reuses a freed
// inode at once), which only its change time tells apart.
func TestTokenFileRenewedInAReusedInode(t *testing.T) {
	clearCredentialsEnv(t)
	start := time.Now()
	first, second, third := billingToken(t, start.Add(time.Hour)), billingToken(t, start.Add(2*time.Hour)), billingToken(t, start.Add(3*time.Hour))
	p := mountProjected(t, projected{mtime: start.Add(-time.Hour), prune: true}, first)
	c, err := loadCredentials(Config{})
	require.NoError(t, err)
	settle(c)
	require.Equal(t, first, tokenSent(t, c))

	awaitFileClockPast(t, p.file)
	p.swap(&second) // missed
	p.swap(&third)
	require.Equal(t, third, tokenSent(t, c))
}

// A renewal written in place in more than one write (a script, a writer
// that is not atomic) may be read between its writes: a token cut inside
// its signature still parses unverified, yet the workers refuse it
// (UNAUTHENTICATED, answered only in the dead-letter topic). While the
// file changed within SettleTime, the valid token held is kept; the new
// one is taken once the file has settled, or at once when the one held is
// about to expire.
func TestTokenFileCaughtHalfWrittenIsNotTaken(t *testing.T) {
	clearCredentialsEnv(t)
	start := time.Now()
	first, second := billingToken(t, start.Add(time.Hour)), billingToken(t, start.Add(2*time.Hour))
	file := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(file, []byte(first), 0o600))
	t.Setenv(EnvTokenFile, file)
	c, err := loadCredentials(Config{})
	require.NoError(t, err)

	// HS256's signature is 43 base64url characters: cut 3, the 40 left
	// decode.
	cut := second[:len(second)-3]
	_, _, err = jwt.NewParser().ParseUnverified(cut, &jwt.RegisteredClaims{})
	require.NoError(t, err, "a token so cut parses unverified")
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
	require.NoError(t, err)
	_, err = f.WriteString(cut)
	require.NoError(t, err)
	require.Equal(t, first, tokenSent(t, c), "between the writes: the valid token held is kept")
	_, err = f.WriteString(second[len(cut):])
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, first, tokenSent(t, c), "kept until the file has settled")
	settle(c)
	require.Equal(t, second, tokenSent(t, c), "taken once the file has settled")

	// exp is in whole seconds: at most SettleTime away.
	require.NoError(t, os.WriteFile(file, []byte(billingToken(t, time.Now().Add(secretfile.SettleTime))), 0o600))
	c, err = loadCredentials(Config{})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(file, []byte(second), 0o600))
	require.Equal(t, second, tokenSent(t, c), "the one held is about to expire: taken at once")
}

// A relative LOCKWORKER_TOKEN_FILE is made absolute at New: the file is
// read again after the program changed directory (a daemon's chdir("/")).
// New refuses one when the working directory is gone.
func TestRelativeTokenFileReadAgainAfterChdir(t *testing.T) {
	clearCredentialsEnv(t)
	start := time.Now()
	dir := t.TempDir()
	t.Chdir(dir)
	first, second := billingToken(t, start.Add(time.Minute)), billingToken(t, start.Add(time.Hour))
	require.NoError(t, os.WriteFile("token", []byte(first), 0o600))
	t.Setenv(EnvTokenFile, "token")
	c, err := loadCredentials(Config{})
	require.NoError(t, err)
	t.Chdir(t.TempDir())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "token"), []byte(second), 0o600))
	settle(c)
	require.Equal(t, second, tokenSent(t, c), "the renewal is taken (fileErr: %v)", c.fileErr)

	gone := t.TempDir()
	t.Chdir(gone)
	require.NoError(t, os.Remove(gone))
	require.ErrorContains(t, newRefused(t, Config{}), "LOCKWORKER_TOKEN_FILE names a relative path, and the working directory cannot be found: ")
}

// requesterKey makes an Ed25519 key pair for requester name: its public
// half goes in requesters (the workers' AUTH_REQUESTER_KEYS) as
// <name>.pem, its private half in a file of its own, whose path it
// returns.
func requesterKey(t *testing.T, requesters, name string) string {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(requesters, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600))
	der, err = x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	keyFile := filepath.Join(t.TempDir(), name+".key")
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	return keyFile
}

// workersHMAC writes an HMAC secret of 32 bytes ("s" each) to a file and
// returns its path and the workers' verifier of tokens signed with it.
func workersHMAC(t *testing.T) (string, *auth.Verifier) {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secret, []byte(strings.Repeat("s", 32)), 0o600))
	v, err := auth.NewVerifier(auth.Config{HMACKeyFile: secret})
	require.NoError(t, err)
	return secret, v
}
