// Package auth checks the requester tokens that commands carry when
// authentication is required (AUTH_REQUIRED): a JWT in the command record's
// authorization header, signed with a key whose public half the worker
// reads from AUTH_KEYS (Ed25519, RSA or ECDSA, PEM), or with the shared
// AUTH_HMAC_KEY_FILE secret. The token's subject is the requester: it scopes
// owners and names the only reply topic the requester may use. The crypto is
// golang-jwt's; this package only picks keys and reads claims.
package auth

import (
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/omninode/lockworker/topics"
)

// MaxSubjectBytes bounds a requester name, so that its reply topic
// (REPLY_TOPIC_PREFIX + name) stays within Kafka's 249 characters: with
// AUTH_REQUIRED, config refuses a REPLY_TOPIC_PREFIX over 249 - 200 = 49
// bytes (its maxRequesterBytes is this constant).
const MaxSubjectBytes = 200

// ErrUnauthenticated is a command without a token the worker accepts.
var ErrUnauthenticated = errors.New("unauthenticated")

// Claims are a requester token's claims: the registered ones (sub and exp
// required; aud and iss when the worker is configured to check them) and
// what the requester may do.
type Claims struct {
	jwt.RegisteredClaims
	// Namespaces limits the lock namespaces the requester may touch ("" is
	// the default namespace). Absent: every namespace.
	Namespaces []string `json:"namespaces,omitempty"`
	// Admin marks requesters that administrative operations require.
	Admin bool `json:"admin,omitempty"`
}

// Requester is who sent a command, as its token says.
type Requester struct {
	Name       string
	Namespaces []string // nil: every namespace
	Admin      bool
}

// MayUse reports whether the requester may touch locks of namespace ns.
func (r Requester) MayUse(ns string) bool {
	return r.Namespaces == nil || slices.Contains(r.Namespaces, ns)
}

// Config says where the verification keys are and what else to check.
type Config struct {
	// KeysPath is a PEM file, or a directory of them (every *.pem), of
	// public keys: Ed25519 (EdDSA), RSA (RS256/384/512, PS256/384/512) or
	// ECDSA (ES256/384/512). Read at start and again when a file changes.
	KeysPath string
	// HMACKeyFile holds a shared secret (HS256/384/512), for small
	// installs where every requester may be trusted with it.
	HMACKeyFile string
	// Audience and Issuer, when set, must be the token's aud and iss.
	Audience, Issuer string
	// Leeway allows clock skew on exp and nbf. Default 30 s.
	Leeway time.Duration
	// ReloadEvery bounds how often the key files are checked for changes.
	// Default 2 s.
	ReloadEvery time.Duration
	// OnReload, when set, is told of every reload and its error (the old
	// keys stay in force after a failed one, and files that failed are
	// not read again until they change).
	OnReload func(keys int, err error)
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	cfg     Config
	methods []string
	mu      sync.Mutex
	keys    []jwt.VerificationKey
	stamp   string // the key files' stamp (readAll) at the last load
	// failed is the stamp of the files as a failed load found them (or the
	// error that kept a stamp from being taken): they are read again, and
	// the failure reported again, only once they change.
	failed  string
	checked time.Time
}

// NewVerifier reads the keys; without any it fails.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.Leeway == 0 {
		cfg.Leeway = 30 * time.Second
	}
	if cfg.ReloadEvery <= 0 {
		cfg.ReloadEvery = 2 * time.Second
	}
	v := &Verifier{cfg: cfg}
	files, contents, stamp, err := v.read()
	if err != nil {
		return nil, err
	}
	keys, methods, err := v.parse(files, contents)
	if err != nil {
		return nil, err
	}
	v.keys, v.methods, v.stamp, v.checked = keys, methods, stamp, time.Now()
	return v, nil
}

// Verify checks a token (with or without the "Bearer " prefix) and returns
// its requester. Its errors wrap ErrUnauthenticated and never quote the
// token.
func (v *Verifier) Verify(token string) (Requester, error) {
	token = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(token), "Bearer "))
	switch {
	case token == "":
		return Requester{}, fmt.Errorf("%w: no token", ErrUnauthenticated)
	case len(token) > topics.MaxTokenBytes:
		return Requester{}, fmt.Errorf("%w: token longer than %d bytes", ErrUnauthenticated, topics.MaxTokenBytes)
	}
	keys, methods := v.current()
	opts := []jwt.ParserOption{jwt.WithExpirationRequired(), jwt.WithLeeway(v.cfg.Leeway), jwt.WithValidMethods(methods)}
	if v.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.cfg.Audience))
	}
	if v.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.cfg.Issuer))
	}
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return jwt.VerificationKeySet{Keys: keys}, nil }, opts...)
	if err != nil {
		return Requester{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	if p := SubjectProblem(c.Subject); p != "" {
		return Requester{}, fmt.Errorf("%w: %s", ErrUnauthenticated, p)
	}
	return Requester{Name: c.Subject, Namespaces: c.Namespaces, Admin: c.Admin}, nil
}

// SubjectProblem says what is wrong with a requester name, or "". It must
// be usable as the end of a Kafka topic name.
func SubjectProblem(sub string) string {
	switch {
	case sub == "":
		return "the token has no sub (the requester's name)"
	case len(sub) > MaxSubjectBytes:
		return fmt.Sprintf("sub is longer than %d bytes", MaxSubjectBytes)
	}
	for i := 0; i < len(sub); i++ {
		c := sub[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return "sub may hold only letters, digits, '.', '_' and '-' (it names the reply topic)"
		}
	}
	return ""
}

// current returns the keys and the methods they verify, reloading them
// first when their files changed.
func (v *Verifier) current() ([]jwt.VerificationKey, []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if time.Since(v.checked) < v.cfg.ReloadEvery {
		return v.keys, v.methods
	}
	v.checked = time.Now()
	files, contents, stamp, err := v.read()
	if stamp == v.stamp {
		v.failed = "" // back as loaded: breaking them again is news
		return v.keys, v.methods
	}
	if stamp == v.failed {
		return v.keys, v.methods
	}
	var keys []jwt.VerificationKey
	var methods []string
	if err == nil {
		keys, methods, err = v.parse(files, contents)
	}
	if err == nil {
		v.keys, v.methods, v.stamp, v.failed = keys, methods, stamp, ""
	} else {
		v.failed = stamp
	}
	if v.cfg.OnReload != nil {
		v.cfg.OnReload(len(v.keys), err)
	}
	return v.keys, v.methods
}

// files lists the key files: KeysPath itself, or its *.pem.
func (v *Verifier) files() ([]string, error) {
	var files []string
	if v.cfg.KeysPath != "" {
		fi, err := os.Stat(v.cfg.KeysPath)
		if err != nil {
			return nil, fmt.Errorf("reading AUTH_KEYS: %w", err)
		}
		if fi.IsDir() {
			pems, err := filepath.Glob(filepath.Join(v.cfg.KeysPath, "*.pem"))
			if err != nil {
				return nil, err
			}
			files = append(files, pems...)
		} else {
			files = append(files, v.cfg.KeysPath)
		}
	}
	if v.cfg.HMACKeyFile != "" {
		files = append(files, v.cfg.HMACKeyFile)
	}
	return files, nil
}

// readAll reads the key files, and returns their contents and their
// stamp: a hash of their names and contents. It changes when they do, also
// for a key replaced by one of the same size with its modification time
// kept (cp -p, rsync -a, a restored archive), which a stamp of sizes and
// times would miss. Key files are small.
func readAll(files []string) (contents [][]byte, stamp string, err error) {
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, "", fmt.Errorf("reading key %s: %w", f, err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
		contents = append(contents, b)
	}
	return contents, string(h.Sum(nil)), nil
}

// errorStamp stands for key files that could not be read: a stamp is a
// binary hash, so the two cannot meet.
func errorStamp(err error) string { return "error: " + err.Error() }

// read lists and reads the key files: their contents and stamp, or the
// failure's stamp (errorStamp).
func (v *Verifier) read() (files []string, contents [][]byte, stamp string, err error) {
	files, err = v.files()
	if err == nil {
		contents, stamp, err = readAll(files)
	}
	if err != nil {
		return nil, nil, errorStamp(err), err
	}
	return files, contents, stamp, nil
}

// parse reads every key of the files' contents and the methods they
// verify.
func (v *Verifier) parse(files []string, contents [][]byte) (keys []jwt.VerificationKey, methods []string, err error) {
	known := map[string]bool{}
	for i, f := range files {
		b := contents[i]
		if f == v.cfg.HMACKeyFile {
			secret := []byte(strings.TrimSpace(string(b)))
			if len(secret) < 32 {
				return nil, nil, fmt.Errorf("AUTH_HMAC_KEY_FILE %s: the secret must be at least 32 bytes", f)
			}
			keys = append(keys, secret)
			known["HS256"], known["HS384"], known["HS512"] = true, true, true
			continue
		}
		k, ms, err := publicKey(b)
		if err != nil {
			return nil, nil, fmt.Errorf("key %s: %w", f, err)
		}
		keys = append(keys, k)
		for _, m := range ms {
			known[m] = true
		}
	}
	if len(keys) == 0 {
		return nil, nil, errors.New("no verification keys: set AUTH_KEYS (PEM public keys) or AUTH_HMAC_KEY_FILE")
	}
	for m := range known {
		methods = append(methods, m)
	}
	slices.Sort(methods)
	return keys, methods, nil
}

// publicKey reads a PEM public key and the JWT methods it verifies.
func publicKey(b []byte) (crypto.PublicKey, []string, error) {
	if k, err := jwt.ParseEdPublicKeyFromPEM(b); err == nil {
		return k, []string{"EdDSA"}, nil
	}
	if k, err := jwt.ParseRSAPublicKeyFromPEM(b); err == nil {
		return k, []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}, nil
	}
	if k, err := jwt.ParseECPublicKeyFromPEM(b); err == nil {
		return k, []string{"ES256", "ES384", "ES512"}, nil
	}
	return nil, nil, errors.New("not a PEM public key of Ed25519, RSA or ECDSA")
}
