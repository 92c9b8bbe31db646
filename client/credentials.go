package client

import (
	"cmp"
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/omninode/lockworker/internal/secretfile"
	"github.com/omninode/lockworker/topics"
)

// Environment variables of Config's credentials.
const (
	EnvToken          = "LOCKWORKER_TOKEN"
	EnvTokenFile      = "LOCKWORKER_TOKEN_FILE"
	EnvSigningKeyFile = "LOCKWORKER_SIGNING_KEY_FILE"
	EnvTokenAudience  = "LOCKWORKER_TOKEN_AUDIENCE"
	EnvTokenIssuer    = "LOCKWORKER_TOKEN_ISSUER"
)

// MaxTokenClaimBytes bounds Config.TokenAudience and TokenIssuer: with the
// subject (at most 200 bytes) and a signature they keep a signed token
// below the 8 KiB the workers accept, unless JSON escapes inflate them
// (each '<', '>', '&' or control character takes 6 bytes), which token
// checks.
const MaxTokenClaimBytes = 1024

// SignedTokenTTL is the lifetime of the tokens a client signs itself
// (Config.SigningKeyFile); it signs a new one at half the last one's life,
// so a command carries at least half of it: the workers judge a token when
// they apply its command (after a backlog, or a retry of its batch), not
// when it was sent.
const SignedTokenTTL = 5 * time.Minute

// credentials give the token each command carries, or "" without
// authentication.
type credentials struct {
	key    any // a private key or an HMAC secret, to sign tokens
	method jwt.SigningMethod
	sub    string
	aud    string // the aud and iss a signed token names, when not ""
	iss    string
	admin  bool // a signed token claims admin (Config.SignAdmin)

	// file is LOCKWORKER_TOKEN_FILE, made absolute, when static came from
	// it: token reads it again when it changed (reread).
	file string

	// now is time.Now; tests move it past a token's expiry, or a file's
	// SettleTime.
	now func() time.Time

	// static and claims.ExpiresAt change under mu when file does;
	// claims.Subject, which subject reads unlocked, never changes.
	mu     sync.Mutex
	static string
	claims jwt.RegisteredClaims // of static, read unverified: sub and exp
	seen   string               // file's stamp when last read (secretfile.Stamp)
	// fileErr is why file's new contents were not taken, nil when they
	// were.
	fileErr error
	signed  string
	until   time.Time
}

// loadCredentials reads Config's Token or SigningKeyFile, and for a
// signing key TokenAudience and TokenIssuer (or their environment
// variables). sub is the requester a signed token names.
func loadCredentials(cfg Config) (*credentials, error) {
	token, keyFile, file, seen := cfg.Token, cfg.SigningKeyFile, "", ""
	if token == "" && keyFile == "" {
		token, keyFile = os.Getenv(EnvToken), os.Getenv(EnvSigningKeyFile)
		if f := os.Getenv(EnvTokenFile); token == "" && f != "" {
			// Absolute: it is read again at later commands, which may
			// come after the program changed directory.
			var err error
			if file, err = filepath.Abs(f); err != nil {
				return nil, fmt.Errorf("%s names a relative path, and the working directory cannot be found: %w", EnvTokenFile, err)
			}
			seen, _ = secretfile.Stamp(file, time.Now())
			if token, err = readTokenFile(file); err != nil {
				return nil, err
			}
		}
	}
	switch {
	case token != "" && keyFile != "":
		return nil, errors.New("credentials: give a token or a signing key, not both")
	case token != "":
		static, claims, err := parseToken(token, cfg.ReadOnly)
		if err != nil {
			return nil, err
		}
		return &credentials{static: static, claims: claims, file: file, seen: seen, now: time.Now}, nil
	case keyFile == "":
		return &credentials{now: time.Now}, nil
	}
	b, err := secretfile.Read(keyFile)
	if err != nil {
		return nil, fmt.Errorf("reading the signing key: the file %w", err)
	}
	// Trimmed as the workers trim AUTH_AUDIENCE and AUTH_ISSUER: a value
	// from a file or Secret often ends in a newline.
	c := &credentials{now: time.Now,
		aud: cmp.Or(cfg.TokenAudience, strings.TrimSpace(os.Getenv(EnvTokenAudience))),
		iss: cmp.Or(cfg.TokenIssuer, strings.TrimSpace(os.Getenv(EnvTokenIssuer)))}
	for _, f := range []struct{ name, v string }{{"audience", c.aud}, {"issuer", c.iss}} {
		if len(f.v) > MaxTokenClaimBytes {
			return nil, fmt.Errorf("token %s is %d bytes, over the limit of %d", f.name, len(f.v), MaxTokenClaimBytes)
		}
	}
	if c.key, c.method, err = signingKey(b); err != nil {
		return nil, fmt.Errorf("signing key %s: %w", keyFile, err)
	}
	// Only with the HMAC secret, an issuer's: a private key may be a
	// requester's, whose token claiming admin the workers refuse whole,
	// every command then unanswered.
	c.admin = cfg.SignAdmin && c.method == jwt.SigningMethodHS256
	return c, nil
}

// readTokenFile reads the token in the file LOCKWORKER_TOKEN_FILE names.
func readTokenFile(path string) (string, error) {
	b, err := secretfile.Read(path)
	if err != nil {
		return "", fmt.Errorf("reading %s: the file it names %w", EnvTokenFile, err)
	}
	// Refused rather than taken as no credentials: a Secret not populated
	// yet, or a file truncated, would have the client send unauthenticated
	// commands that a worker requiring tokens leaves unanswered, failing
	// only after RequestTimeout.
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("%s: the file it names holds no token (it is empty, or only spaces)", EnvTokenFile)
	}
	return token, nil
}

// parseToken reads a static token unverified, dropping its scheme: only the
// workers can judge it; the client reads it to learn its requester and to
// fail fast once it has expired. It refuses one that is not a JWT and,
// unless readOnly (no token is sent), one the workers would refuse every
// command of.
func parseToken(token string, readOnly bool) (string, jwt.RegisteredClaims, error) {
	token = topics.BearerToken(token)
	if !readOnly && len(token) > topics.MaxTokenBytes {
		// The workers would drop every command unanswered (ErrNoReply).
		return "", jwt.RegisteredClaims{}, fmt.Errorf("%w: the token is %d bytes, over the workers' limit of %d", ErrUnauthenticated, len(token), topics.MaxTokenBytes)
	}
	var claims staticClaims
	_, _, err := jwt.NewParser().ParseUnverified(token, &claims)
	switch {
	case claims.refused != nil && !readOnly:
		// The workers would drop every command unanswered (ErrNoReply).
		return "", jwt.RegisteredClaims{}, fmt.Errorf("%w: the workers refuse the token's claims: %v", ErrUnauthenticated, claims.refused)
	case claims.refused == nil && err != nil:
		return "", jwt.RegisteredClaims{}, fmt.Errorf("%w: the token is not a JWT: %v", ErrUnauthenticated, err)
	case claims.refused == nil && claims.ExpiresAt == nil && !readOnly:
		// The workers would drop every command unanswered (ErrNoReply).
		return "", jwt.RegisteredClaims{}, fmt.Errorf("%w: the token has no exp, which the workers require", ErrUnauthenticated)
	}
	// A ReadOnly client sends no token: claims the workers refuse are left
	// unread, naming no requester.
	return token, claims.RegisteredClaims, nil
}

// staticClaims reads a static token's claims by the workers' rule
// (topics.ParseTokenClaims), through the JWT parser the workers use, so
// that both read the same bytes; only what the client uses is kept.
type staticClaims struct {
	jwt.RegisteredClaims
	refused error // ParseTokenClaims's error, the one the workers give
}

func (s *staticClaims) UnmarshalJSON(b []byte) error {
	c, err := topics.ParseTokenClaims(b)
	if err != nil {
		s.refused = err
		return err
	}
	s.Subject = c.Subject
	if c.ExpiresAt != nil {
		s.ExpiresAt = jwt.NewNumericDate(*c.ExpiresAt)
	}
	return nil
}

// signingKey reads a PEM private key (Ed25519, RSA, ECDSA), or else takes
// the file as an HMAC secret (topics.HMACSecret, the workers' rule for
// AUTH_HMAC_KEY_FILE: never a PEM file, at least 32 bytes).
func signingKey(b []byte) (any, jwt.SigningMethod, error) {
	if k, err := jwt.ParseEdPrivateKeyFromPEM(b); err == nil {
		return k.(crypto.Signer), jwt.SigningMethodEdDSA, nil
	}
	if k, err := jwt.ParseRSAPrivateKeyFromPEM(b); err == nil {
		return k, jwt.SigningMethodRS256, nil
	}
	if k, err := jwt.ParseECPrivateKeyFromPEM(b); err == nil {
		switch k.Curve.Params().BitSize {
		case 384:
			return k, jwt.SigningMethodES384, nil
		case 521:
			return k, jwt.SigningMethodES512, nil
		}
		return k, jwt.SigningMethodES256, nil
	}
	secret, err := topics.HMACSecret(b)
	if errors.Is(err, topics.ErrHMACSecretPEM) {
		return nil, nil, errors.New("a PEM file that is not an Ed25519, RSA or ECDSA private key")
	}
	if err != nil {
		return nil, nil, err
	}
	return secret, jwt.SigningMethodHS256, nil
}

// subject is the requester the tokens name: a static token's, or the one a
// signing key signs for (set by New); "" without credentials. The worker
// scopes owners by it, so the client's view of an owner must too.
func (c *credentials) subject() string {
	if c.key != nil {
		return c.sub
	}
	return c.claims.Subject
}

// token is the value of the authorization header, or "".
func (c *credentials) token() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.static != "":
		if c.file != "" {
			c.reread()
		}
		if exp := c.claims.ExpiresAt; exp != nil && c.now().After(exp.Time) {
			return "", c.expired(exp.Time)
		}
		return "Bearer " + c.static, nil
	case c.key == nil:
		return "", nil
	}
	// The wall clock, which the workers judge exp by: the monotonic one
	// (which Before would compare) stands still while the host sleeps, and
	// would keep a token that expired meanwhile.
	now := c.now().Round(0)
	if now.Add(SignedTokenTTL / 2).Before(c.until) {
		return c.signed, nil
	}
	until := now.Add(SignedTokenTTL)
	claims := signedClaims{RegisteredClaims: jwt.RegisteredClaims{Subject: c.sub, Issuer: c.iss,
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(until)}, Admin: c.admin}
	if c.aud != "" {
		claims.Audience = jwt.ClaimStrings{c.aud}
	}
	// No kid header: the workers try the requester key of the sub
	// (AUTH_REQUESTER_KEYS/<sub>.pem), then their issuer keys (AUTH_KEYS,
	// the HMAC secret).
	s, err := jwt.NewWithClaims(c.method, claims).SignedString(c.key)
	if err != nil {
		return "", fmt.Errorf("signing a token: %w", err)
	}
	if len(s) > topics.MaxTokenBytes {
		// The workers would drop every command unanswered (ErrNoReply).
		return "", fmt.Errorf("%w: the signed token is %d bytes, over the workers' limit of %d: shorten the token audience or issuer",
			ErrUnauthenticated, len(s), topics.MaxTokenBytes)
	}
	c.signed, c.until = "Bearer "+s, until
	return c.signed, nil
}

// signedClaims are the claims of a token the client signs.
type signedClaims struct {
	jwt.RegisteredClaims
	Admin bool `json:"admin,omitempty"`
}

// reread takes the token file's new token when the file changed since it
// was last read: a sidecar renewing it (a Kubernetes projected token or
// Secret, Vault agent) keeps the client authenticated without being made
// again, which would lose its leases and sessions. A command costs a stat
// of the file, a read only when it changed. A token New would refuse, or
// naming another sub (the requester is fixed at New), is not taken: the
// one held serves until it expires, its error then saying why (expired).
// c.mu is held.
func (c *credentials) reread() {
	now := c.now()
	stamp, fresh := secretfile.Stamp(c.file, now)
	if stamp != "" && stamp == c.seen {
		return
	}
	// A file changed within SettleTime may still be being written (in
	// place, in more than one write): a token cut inside its signature
	// parses unverified, and the workers would refuse it. So the token
	// held is kept while it is valid beyond SettleTime, and the file is
	// read once it has settled.
	if exp := c.claims.ExpiresAt; fresh && (exp == nil || exp.After(now.Add(secretfile.SettleTime))) {
		return
	}
	// The stamp from before the read: a write during or after the read
	// changes the file's, and it is read again.
	c.seen = stamp
	token, err := readTokenFile(c.file)
	var claims jwt.RegisteredClaims
	if err == nil {
		token, claims, err = parseToken(token, false)
	}
	if err == nil && claims.Subject != c.claims.Subject {
		err = fmt.Errorf("%w: its sub %q is not the requester's, %q", ErrUnauthenticated, claims.Subject, c.claims.Subject)
	}
	if c.fileErr = err; err == nil {
		c.static, c.claims.ExpiresAt = token, claims.ExpiresAt
	}
}

// expired is the error of a static token past its exp, saying why the
// token file did not renew it.
func (c *credentials) expired(exp time.Time) error {
	at := exp.Format(time.RFC3339)
	switch {
	case c.fileErr != nil:
		return fmt.Errorf("%w: the token expired at %s; %s changed since, but its new token is not taken: %v", ErrUnauthenticated, at, EnvTokenFile, c.fileErr)
	case c.file != "":
		return fmt.Errorf("%w: the token expired at %s, and %s holds no newer one", ErrUnauthenticated, at, EnvTokenFile)
	}
	return fmt.Errorf("%w: the token expired at %s", ErrUnauthenticated, at)
}
