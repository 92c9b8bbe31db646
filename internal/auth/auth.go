// Package auth checks the requester tokens that commands carry when
// authentication is required (AUTH_REQUIRED): a JWT in the command record's
// authorization header. The token's subject is the requester: it scopes
// owners and names the only reply topic the requester may use. Two kinds of
// keys verify tokens:
//
//   - issuer keys, the public keys of AUTH_KEYS (Ed25519, RSA or ECDSA, PEM:
//     public keys, or certificates, their chains not loaded)
//     and the shared AUTH_HMAC_KEY_FILE secret: a token they verify is
//     taken as written, any sub, namespaces and admin, so their private
//     halves (and the secret) belong to token issuers, never to a
//     requester;
//   - requester keys, the public keys of AUTH_REQUESTER_KEYS, a directory
//     of <requester>.pem (one key or more): a token a key of billing.pem
//     verifies must have sub "billing" and may not claim admin. Such a key
//     is tried only for a token whose sub names it.
//
// The crypto is golang-jwt's; this package only picks keys and reads claims.
package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/omninode/lockworker/internal/secretfile"
	"github.com/omninode/lockworker/topics"
)

// ErrUnauthenticated is a command without a token the worker accepts.
var ErrUnauthenticated = errors.New("unauthenticated")

// errNoKey is a token that no key verifies when there are no issuer keys,
// whether or not its sub names a requester key.
var errNoKey = errors.New("no issuer key (AUTH_KEYS, AUTH_HMAC_KEY_FILE), and no requester key (AUTH_REQUESTER_KEYS) named by the token's sub verifies it")

// Claims are a requester token's claims: the registered ones (sub and exp
// required; aud and iss when the worker is configured to check them) and
// what the requester may do. They are read by topics.ParseTokenClaims
// (UnmarshalJSON), the rule the Go SDK shares, not as encoding/json would
// read them.
type Claims struct {
	jwt.RegisteredClaims
	// Namespaces limits the lock namespaces the requester may touch ("" is
	// the default namespace). Absent: every namespace; [] allows none, and
	// null is refused as a malformed token.
	Namespaces []string `json:"namespaces,omitempty"`
	// Admin marks requesters that administrative operations require.
	Admin bool `json:"admin,omitempty"`
}

// UnmarshalJSON reads the claims the worker checks or acts on by
// topics.ParseTokenClaims, refusing the payloads it refuses (a member
// twice, a checked claim's name in another case, a null namespaces claim,
// a checked claim of the wrong type): the SDK refuses such a token by the
// same rule before it sends it.
func (c *Claims) UnmarshalJSON(b []byte) error {
	p, err := topics.ParseTokenClaims(b)
	if err != nil {
		return err
	}
	*c = Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: p.Subject, Issuer: p.Issuer, Audience: p.Audience,
			ExpiresAt: numericDate(p.ExpiresAt), NotBefore: numericDate(p.NotBefore)},
		Namespaces: p.Namespaces,
		Admin:      p.Admin,
	}
	return nil
}

// numericDate is t as golang-jwt has it (to its TimePrecision), nil for
// nil.
func numericDate(t *time.Time) *jwt.NumericDate {
	if t == nil {
		return nil
	}
	return jwt.NewNumericDate(*t)
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
	// issuer public keys, one or more a file: Ed25519 (EdDSA), RSA
	// (RS256/384/512, PS256/384/512) or ECDSA (ES256/384/512). A file may
	// instead hold certificates, standing for their keys, each followed by
	// its chain, which is not loaded (publicKeys). A token they verify may
	// name any requester and claim anything: never give their private
	// halves to a requester. Read at start and again when a file changes.
	KeysPath string
	// RequesterKeysPath is a directory of requester public keys (of the
	// same kinds and forms), <requester>.pem each, holding one key or more
	// (a rotation appends the new key or certificate): a token verified by
	// a key of billing.pem must have sub "billing" and no admin claim: the
	// keys tried are those of the token's sub (a kid header is ignored). A
	// file whose name before .pem is not a valid requester name
	// (topics.SubjectProblem), or whose key is also another file's (here
	// or in KeysPath), is refused as a broken key is. Reloaded with the
	// others.
	RequesterKeysPath string
	// HMACKeyFile holds a shared secret (HS256/384/512; topics.HMACSecret: at
	// least 32 bytes, no PEM file). Like the KeysPath keys it is an issuer
	// key: whoever holds it may sign as any requester, admin included, so
	// it belongs to token issuers, never to a requester (which signs with
	// its own key, RequesterKeysPath).
	HMACKeyFile string
	// Audience and Issuer, when set, must be the token's aud and iss.
	Audience, Issuer string
	// Leeway allows clock skew on exp and nbf. Default 30 s.
	Leeway time.Duration
	// ReloadEvery is how often a goroutine of the verifier checks the key
	// files for changes (Verify never waits for it). Default 2 s.
	ReloadEvery time.Duration
	// OnReload, when set, is told of every reload and its error (the old
	// keys stay in force after a failed one; files that failed to parse
	// are not read again until they change, files that could not be read
	// or listed are at every check, and the same error is told once), on
	// the reloading goroutine, after Close too for a reload Close stopped
	// waiting for. A KeysPath directory left without a key is a failed
	// load, whatever keys the other sources hold: an emptied mount must
	// not drop every issuer key; to take its last key away, unset
	// AUTH_KEYS and restart. RequesterKeysPath may be left empty: deleting
	// a requester's key revokes it, the last one too, unless no key of any
	// source would remain (a failed load).
	OnReload func(keys int, err error)
}

// Verifier checks tokens. It is safe for concurrent use. Close stops its
// reloads.
type Verifier struct {
	cfg Config
	// keys is the key set in force: Verify only loads it, so that a
	// reload (thousands of requester files, a hung network file system)
	// never holds up a command.
	keys     atomic.Pointer[keySet]
	stop     chan struct{}
	stopOnce sync.Once
	stopped  chan struct{} // closed when the reloading goroutine ends

	mu    sync.Mutex // the reload's state below
	meta  string     // the key files' statStamp at the last read, "" when not to be trusted
	stamp string     // the key files' stamp (readAll) at the last load
	// failed is the stamp of the files as a failed load found them (or the
	// error that kept a stamp from being taken): a failure is reported
	// again only once they change (or the error does).
	failed string
}

// NewVerifier reads the keys, and starts checking them for changes every
// Config.ReloadEvery; without any it fails.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.Leeway == 0 {
		cfg.Leeway = 30 * time.Second
	}
	if cfg.ReloadEvery <= 0 {
		cfg.ReloadEvery = 2 * time.Second
	}
	v := &Verifier{cfg: cfg, stop: make(chan struct{}), stopped: make(chan struct{})}
	files, meta, err := v.scan()
	if err != nil {
		return nil, err
	}
	contents, stamp, err := readAll(files)
	if err != nil {
		return nil, err
	}
	keys, err := parse(files, contents)
	if err != nil {
		return nil, err
	}
	v.keys.Store(&keys)
	v.meta, v.stamp = meta, stamp
	go v.reloadEvery()
	return v, nil
}

// Close stops the reloads, waiting at most closeWait for one under way: on
// a hung file system (a hard-mounted NFS server gone) a reload ends only
// when the file system answers, and the process must stop meanwhile. Such
// a reload still ends, and is told to OnReload, after Close returned.
// Verify goes on with the keys in force.
func (v *Verifier) Close() {
	v.stopOnce.Do(func() { close(v.stop) })
	select {
	case <-v.stopped:
	case <-time.After(closeWait):
	}
}

// closeWait is far longer than a reload takes on a file system that
// answers (about 150 ms for 5,000 requester keys).
const closeWait = time.Second

func (v *Verifier) reloadEvery() {
	defer close(v.stopped)
	t := time.NewTicker(v.cfg.ReloadEvery)
	defer t.Stop()
	for {
		select {
		case <-v.stop:
			return
		case <-t.C:
			v.reload()
		}
	}
}

// keySet is the keys of one load.
type keySet struct {
	issuers    []jwt.VerificationKey            // AUTH_KEYS and the HMAC secret
	requesters map[string][]jwt.VerificationKey // AUTH_REQUESTER_KEYS, by requester
	methods    []string                         // the JWT methods they verify
}

// count is the number of keys, as OnReload reports it.
func (ks keySet) count() int {
	n := len(ks.issuers)
	for _, keys := range ks.requesters {
		n += len(keys)
	}
	return n
}

// Verify checks a token (with or without the "Bearer " prefix, its scheme
// case-insensitive as RFC 7235 has it) and returns its requester. Its
// errors wrap ErrUnauthenticated and never quote the token.
func (v *Verifier) Verify(token string) (Requester, error) {
	token = topics.BearerToken(token)
	switch {
	case token == "":
		return Requester{}, fmt.Errorf("%w: no token", ErrUnauthenticated)
	case len(token) > topics.MaxTokenBytes:
		return Requester{}, fmt.Errorf("%w: token longer than %d bytes", ErrUnauthenticated, topics.MaxTokenBytes)
	}
	keys := v.keys.Load()
	opts := []jwt.ParserOption{jwt.WithExpirationRequired(), jwt.WithLeeway(v.cfg.Leeway), jwt.WithValidMethods(keys.methods)}
	if v.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.cfg.Audience))
	}
	if v.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.cfg.Issuer))
	}
	// The requester keys of the token's sub are tried first, alone, so
	// that their success is known; a token they do not verify goes to the
	// issuer keys. Looked up by sub, a requester key verifies only its own
	// requester's tokens: one signed by billing's key naming sub payments
	// is tried with payments' keys (and the issuers'), and fails.
	var bound string // the requester whose key verified the token
	issuers := func(*jwt.Token) (any, error) {
		if len(keys.issuers) == 0 {
			return nil, errNoKey
		}
		return jwt.VerificationKeySet{Keys: keys.issuers}, nil
	}
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		// The claims are decoded before the key is asked for.
		if k, ok := keys.requesters[c.Subject]; ok {
			bound = c.Subject
			return jwt.VerificationKeySet{Keys: k}, nil
		}
		return issuers(t)
	}, opts...)
	if bound != "" && errors.Is(err, jwt.ErrTokenSignatureInvalid) && len(keys.issuers) > 0 {
		bound, c = "", Claims{}
		_, err = jwt.ParseWithClaims(token, &c, issuers, opts...)
	}
	if len(keys.issuers) == 0 && (errors.Is(err, errNoKey) || bound != "" && errors.Is(err, jwt.ErrTokenSignatureInvalid)) {
		// One answer whether or not the sub names a requester that has a
		// key, so that the dead-letter topic does not tell which do.
		return Requester{}, fmt.Errorf("%w: %v", ErrUnauthenticated, errNoKey)
	}
	if err != nil {
		return Requester{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	if p := topics.SubjectProblem(c.Subject); p != "" {
		return Requester{}, fmt.Errorf("%w: %s", ErrUnauthenticated, p)
	}
	if bound != "" && c.Admin {
		// A requester key speaks for its requester only (the key of its
		// sub), and grants nothing an issuer has not: its namespaces claim
		// can only narrow (absent, all), and admin is refused as a whole
		// token rather than dropped, so the mistake shows at once, not at
		// a revoke.
		return Requester{}, fmt.Errorf("%w: requester %q's own key (AUTH_REQUESTER_KEYS) may not sign an admin claim: only an issuer key may", ErrUnauthenticated, bound)
	}
	return Requester{Name: c.Subject, Namespaces: c.Namespaces, Admin: c.Admin}, nil
}

// reload loads the keys again when their files changed.
func (v *Verifier) reload() {
	v.mu.Lock()
	defer v.mu.Unlock()
	files, meta, err := v.scan()
	if err == nil && meta != "" && meta == v.meta {
		return // unchanged since the last read
	}
	var contents [][]byte
	var stamp string
	if err == nil {
		contents, stamp, err = readAll(files)
	}
	if err != nil {
		// Read again at the next check, though the files may not change:
		// an error of the system's (EMFILE, EIO or ESTALE on a network file
		// system) is no fault of theirs and passes. A file that does not
		// parse is its own fault, and waits for its change.
		meta, stamp = "", errorStamp(err)
	}
	v.meta = meta
	if stamp == v.stamp {
		v.failed = "" // back as loaded: breaking them again is news
		return
	}
	if stamp == v.failed {
		return
	}
	var keys keySet
	if err == nil {
		keys, err = parse(files, contents)
	}
	if err == nil {
		v.keys.Store(&keys)
		v.stamp, v.failed = stamp, ""
	} else {
		v.failed = stamp
	}
	if v.cfg.OnReload != nil {
		v.cfg.OnReload(v.keys.Load().count(), err)
	}
}

// keyFile is a key file and what kind of key it holds.
type keyFile struct {
	path string
	kind keyKind
}

type keyKind int

const (
	issuerKey    keyKind = iota // AUTH_KEYS
	requesterKey                // AUTH_REQUESTER_KEYS: <requester>.pem
	hmacKey                     // AUTH_HMAC_KEY_FILE
)

// files lists the key files: KeysPath itself, or its *.pem; the *.pem of
// RequesterKeysPath; HMACKeyFile. A configured directory without a *.pem
// is an error of its own, whatever keys the others hold: at start the
// verifier is not made, and on a reload the keys in force stay (an
// emptied AUTH_KEYS does not silently leave only the requester keys, nor
// an emptied AUTH_REQUESTER_KEYS only the issuer keys).
func (v *Verifier) files() ([]keyFile, error) {
	var files []keyFile
	if v.cfg.KeysPath != "" {
		fi, err := os.Stat(v.cfg.KeysPath)
		if err != nil {
			return nil, fmt.Errorf("reading AUTH_KEYS: %w", err)
		}
		if fi.IsDir() {
			pems, err := pemFiles(v.cfg.KeysPath, issuerKey)
			if err != nil {
				return nil, fmt.Errorf("reading AUTH_KEYS: %w", err)
			}
			if len(pems) == 0 {
				return nil, fmt.Errorf("AUTH_KEYS directory %s holds no verification keys (*.pem)", v.cfg.KeysPath)
			}
			files = append(files, pems...)
		} else {
			files = append(files, keyFile{path: v.cfg.KeysPath, kind: issuerKey})
		}
	}
	if v.cfg.RequesterKeysPath != "" {
		fi, err := os.Stat(v.cfg.RequesterKeysPath)
		if err != nil {
			return nil, fmt.Errorf("reading AUTH_REQUESTER_KEYS: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("AUTH_REQUESTER_KEYS %s is not a directory (of <requester>.pem files)", v.cfg.RequesterKeysPath)
		}
		pems, err := pemFiles(v.cfg.RequesterKeysPath, requesterKey)
		if err != nil {
			return nil, fmt.Errorf("reading AUTH_REQUESTER_KEYS: %w", err)
		}
		files = append(files, pems...)
	}
	if v.cfg.HMACKeyFile != "" {
		files = append(files, keyFile{path: v.cfg.HMACKeyFile, kind: hmacKey})
	}
	return files, nil
}

// pemFiles lists the *.pem entries of directory dir, by name. dir is read
// as a name, never as a pattern (filepath.Glob): "keys[prod]" is a legal
// directory, and a pattern would list nothing, fail, or read another
// directory's keys. Every *.pem entry is listed whatever it is: a
// symlink (a Kubernetes Secret's, into its ..data) is read as its target,
// and an entry of no regular file fails its read (readAll) rather than
// leave its keys out unsaid.
func pemFiles(dir string, kind keyKind) ([]keyFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []keyFile
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".pem") {
			files = append(files, keyFile{path: filepath.Join(dir, e.Name()), kind: kind})
		}
	}
	return files, nil
}

// readAll reads the key files, and returns their contents and their
// stamp: a hash of their names and contents, so that files rewritten as
// they were (their statStamp changed) are no reload and no log line.
func readAll(files []keyFile) (contents [][]byte, stamp string, err error) {
	h := sha256.New()
	for _, f := range files {
		b, err := secretfile.ReadAtMost(f.path, maxKeyFileBytes)
		if err != nil {
			return nil, "", fmt.Errorf("reading key %s: %w", f.path, err)
		}
		fmt.Fprintf(h, "%s %d\n", f.path, len(b))
		h.Write(b)
		contents = append(contents, b)
	}
	return contents, string(h.Sum(nil)), nil
}

// maxKeyFileBytes bounds a key file (a bundle of hundreds of PEM keys is
// far smaller): a path naming something endless by mistake fails the read
// rather than fill the memory, and a FIFO is refused rather than waited on.
const maxKeyFileBytes = 1 << 20

// errorStamp stands for key files that could not be listed or read: a
// stamp is a binary hash, so the two cannot meet.
func errorStamp(err error) string { return "error: " + err.Error() }

// scan lists the key files and takes their statStamp, before they are
// read: a file changed meanwhile is read again at the next check.
func (v *Verifier) scan() ([]keyFile, string, error) {
	files, err := v.files()
	if err != nil {
		return nil, "", err
	}
	return files, statStamp(files, time.Now()), nil
}

// statStamp is a hash of the key files' names and of what stat says of
// each (secretfile.Stamp), taken without reading them, so that a
// check of unchanged files reads none. It is "" when it cannot be trusted, and
// then every key file is read: where the change stamp is none, or while
// any file changed within secretfile.SettleTime, as a write in the same
// tick of the file system's clock would leave its times as they were.
func statStamp(files []keyFile, now time.Time) string {
	h := sha256.New()
	for _, f := range files {
		s, _ := secretfile.Stamp(f.path, now)
		if s == "" {
			return ""
		}
		fmt.Fprintf(h, "%s %s\n", f.path, s)
	}
	return string(h.Sum(nil))
}

// parse reads every key of the files' contents and the methods they
// verify. A requester key in another file too is refused: also an issuer
// key, or another requester's, it would speak for more than its requester.
// An issuer key in two files of AUTH_KEYS is no such mistake (a rotation, a
// projected Secret) and is loaded as before.
func parse(files []keyFile, contents [][]byte) (keySet, error) {
	ks := keySet{requesters: map[string][]jwt.VerificationKey{}}
	known := map[string]bool{}
	type seen struct {
		path string
		kind keyKind
	}
	// The first file of each key, by its DER: equal keys have equal DER,
	// and a map keeps thousands of requester keys from being compared
	// pairwise. A key twice in one file is no mistake.
	public := map[string]seen{}
	for i, f := range files {
		b := contents[i]
		if f.kind == hmacKey {
			secret, err := topics.HMACSecret(b)
			if errors.Is(err, topics.ErrHMACSecretPEM) {
				err = fmt.Errorf("%w (a public key would let anyone sign tokens): give AUTH_KEYS or AUTH_REQUESTER_KEYS the PEM public keys, and this file a random secret", err)
			}
			if err != nil {
				return keySet{}, fmt.Errorf("AUTH_HMAC_KEY_FILE %s: %w", f.path, err)
			}
			ks.issuers = append(ks.issuers, secret)
			known["HS256"], known["HS384"], known["HS512"] = true, true, true
			continue
		}
		requester := strings.TrimSuffix(filepath.Base(f.path), ".pem")
		if f.kind == requesterKey && topics.SubjectProblem(requester) != "" {
			return keySet{}, fmt.Errorf("requester key %s: the name before .pem must be the requester's (a token's sub): letters, digits, '.', '_' and '-', 1 to %d bytes", f.path, topics.MaxSubjectBytes)
		}
		keys, ms, err := publicKeys(b)
		if err != nil {
			return keySet{}, fmt.Errorf("key %s: %w", f.path, err)
		}
		for _, k := range keys {
			der, err := x509.MarshalPKIXPublicKey(k)
			if err != nil {
				return keySet{}, fmt.Errorf("key %s: %w", f.path, err)
			}
			s, dup := public[string(der)]
			if dup && s != (seen{f.path, f.kind}) && (f.kind == requesterKey || s.kind == requesterKey) {
				what := "another requester's (AUTH_REQUESTER_KEYS)"
				if f.kind != s.kind {
					what = "an issuer key (AUTH_KEYS), whose tokens may name any requester and claim admin"
				}
				return keySet{}, fmt.Errorf("key %s: the same key as %s: a requester key (AUTH_REQUESTER_KEYS) must be its requester's alone, never %s", f.path, s.path, what)
			}
			if !dup {
				public[string(der)] = seen{f.path, f.kind}
			}
			if f.kind == requesterKey {
				ks.requesters[requester] = append(ks.requesters[requester], k)
			} else {
				ks.issuers = append(ks.issuers, k)
			}
		}
		for _, m := range ms {
			known[m] = true
		}
	}
	if ks.count() == 0 {
		return keySet{}, errors.New("no verification keys: set AUTH_KEYS (issuers' PEM public keys), AUTH_REQUESTER_KEYS (requesters' own) or AUTH_HMAC_KEY_FILE")
	}
	for m := range known {
		ks.methods = append(ks.methods, m)
	}
	slices.Sort(ks.methods)
	return ks, nil
}

// publicKeys reads a key file's PEM blocks and the JWT methods their keys
// verify, each block read by what it holds whatever its label (blockKey).
// A file holds either public keys, every one loaded (a rotation appends
// the new key to the old, an identity provider exports its keys as one
// bundle), or certificates, standing for their keys: the first only is
// loaded, whatever it is (a self-signed signing certificate often says
// CA:TRUE); the ones after it are its chain, whose private keys' holders
// could sign any token, and are never loaded. Anything else fails the file
// rather than leave a key out unsaid or trust one by mistake: a first
// certificate that may issue certificates followed by others (a CA first:
// a bundle before the leaf, a leaf removed and its chain left), a later
// certificate naming the first as its issuer (a chain in reverse order),
// a block of no public key (a private key), keys and certificates in one
// file, or a block that does not decode (damaged, an append cut short, or
// a text line starting "-----BEGIN ", which cannot be told from one).
// Other text around the blocks is ignored, and so are the spaces, tabs and
// byte-order marks that start a line (dropLineIndents).
func publicKeys(file []byte) ([]crypto.PublicKey, []string, error) {
	b := dropLineIndents(file)
	whole := b
	var keys []crypto.PublicKey
	var methods []string
	var first *x509.Certificate // the first block, when a certificate
	for n := 1; ; n++ {
		block, rest := pem.Decode(b)
		read := b[:len(b)-len(rest)] // this block and the ones pem.Decode skipped
		if block == nil {
			read = b
		}
		if begun := beginLines(read); len(begun) > 1 || block == nil && len(begun) > 0 {
			at := len(whole) - len(b) + begun[0]
			line, _, _ := bytes.Cut(whole[at:], []byte("\n"))
			return nil, nil, fmt.Errorf("PEM block %d cannot be decoded, at line %d (%.40q): damaged, without its END line, or text starting like a block", n, bytes.Count(whole[:at], []byte("\n"))+1, bytes.TrimSuffix(line, []byte("\r")))
		}
		if block == nil {
			break
		}
		b = rest
		k, c, err := blockKey(block)
		// A later certificate, parsed or not (x509 refuses some a CA may
		// have issued, a negative serial since Go 1.23), is of the first's
		// chain and never loaded. One that does not parse is passed over,
		// though it cannot be checked for naming the first as its issuer.
		if first != nil && (c != nil || err != nil && strings.HasSuffix(block.Type, "CERTIFICATE")) {
			if mayIssue(first) {
				return nil, nil, fmt.Errorf("PEM block %d: a certificate after block 1, which may issue certificates (CA:TRUE, X.509 v1 or keyCertSign): only a file's first certificate is loaded, and a CA's key would sign any token; put the signing certificate (the leaf) first, then its chain (a leaf removed, remove its chain too)", n)
			}
			if c != nil && bytes.Equal(c.RawIssuer, first.RawSubject) && !selfSigned(c) && !bytes.Equal(c.RawSubjectPublicKeyInfo, first.RawSubjectPublicKeyInfo) {
				return nil, nil, fmt.Errorf("PEM block %d: a certificate naming block 1 as its issuer: a chain in reverse order, and only a file's first certificate is loaded, here a CA's, whose key would sign any token; put the signing certificate (the leaf) first, then its issuer, up to the root", n)
			}
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		if n == 1 {
			first = c
		}
		if (c != nil) != (first != nil) {
			return nil, nil, fmt.Errorf("PEM block %d: public keys and certificates in one file: a file holds public keys, or certificates (a signing certificate followed by its chain)", n)
		}
		ms := methodsOf(k)
		if ms == nil {
			return nil, nil, fmt.Errorf("PEM block %d: %w: a %.40q block of another kind of key", n, errNotPublicKey, block.Type)
		}
		if p := unusable(k); p != "" {
			return nil, nil, fmt.Errorf("PEM block %d: %s: no token could be verified with it", n, p)
		}
		keys, methods = append(keys, k), append(methods, ms...)
	}
	if len(keys) == 0 {
		return nil, nil, errNotPublicKey
	}
	if first != nil && mayIssue(first) && !selfSigned(first) {
		// Alone (with others it was refused above): certbot's chain.pem
		// copied among the keys, say. A self-signed one may be a
		// signing certificate; an intermediate's key signs certificates.
		return nil, nil, errors.New("PEM block 1: a CA certificate that is not self-signed (an intermediate, a chain.pem): its key signs certificates, not tokens, and would sign any; give the signing certificate (the leaf)")
	}
	return keys, methods, nil
}

var errNotPublicKey = errors.New("not a PEM public key of Ed25519, RSA or ECDSA")

// blockKey reads a PEM block as a public key (a SubjectPublicKeyInfo, or
// PKCS #1 for RSA) or as a certificate, and returns its key, and its
// certificate when it is one, whatever its label says: the prior release
// read a block through golang-jwt's parsers, which ignore it, and tools
// write loose ones ("X509 CERTIFICATE", "EC PUBLIC KEY", an "RSA PUBLIC
// KEY" holding a SubjectPublicKeyInfo). The label picks only what is told
// of a block none of them reads.
func blockKey(block *pem.Block) (crypto.PublicKey, *x509.Certificate, error) {
	k, pkixErr := x509.ParsePKIXPublicKey(block.Bytes)
	if pkixErr == nil {
		return k, nil, nil
	}
	c, certErr := x509.ParseCertificate(block.Bytes)
	if certErr == nil {
		return c.PublicKey, c, nil
	}
	rsaKey, pkcs1Err := x509.ParsePKCS1PublicKey(block.Bytes)
	if pkcs1Err == nil {
		return rsaKey, nil, nil
	}
	var err error
	switch {
	case strings.HasSuffix(block.Type, "CERTIFICATE"):
		err = certErr
	case block.Type == "RSA PUBLIC KEY":
		err = pkcs1Err
	case strings.HasSuffix(block.Type, "PUBLIC KEY"):
		err = pkixErr
	default: // a private key, a certificate request: the label says it all
		return nil, nil, fmt.Errorf("%w: a %.40q block", errNotPublicKey, block.Type)
	}
	return nil, nil, fmt.Errorf("%w: a %.40q block that does not parse (%v)", errNotPublicKey, block.Type, err)
}

// beginLines is where the lines of b that begin a PEM block start, as
// pem.Decode finds them: more than the blocks it decoded is a block it
// skipped.
func beginLines(b []byte) []int {
	var at []int
	for i := 0; i < len(b); {
		line, _, _ := bytes.Cut(b[i:], []byte("\n"))
		if bytes.HasPrefix(line, []byte("-----BEGIN ")) {
			at = append(at, i)
		}
		i += len(line) + 1
	}
	return at
}

// mayIssue reports whether c may sign certificates, as OpenSSL takes it:
// its basicConstraints say so; or, without them, its key usage says
// keyCertSign, or it is an X.509 v1 root (self-signed: old roots cannot
// say they are CAs, while `openssl x509 -req` without extensions writes v1
// leaves).
func mayIssue(c *x509.Certificate) bool {
	if c.BasicConstraintsValid {
		return c.IsCA
	}
	return c.KeyUsage&x509.KeyUsageCertSign != 0 || c.Version < 3 && selfSigned(c)
}

// selfSigned reports whether c names itself as its issuer (a root, or a
// self-signed signing certificate).
func selfSigned(c *x509.Certificate) bool { return bytes.Equal(c.RawIssuer, c.RawSubject) }

// dropLineIndents drops the spaces, tabs and UTF-8 byte-order marks that
// start each line of b. pem.Decode finds a block only at a line's start,
// and would pass over unsaid a key pasted indented from YAML, or written
// by a tool that begins its files with a byte-order mark (PowerShell 5.1,
// old Notepad), also where cat joined such a file to another.
func dropLineIndents(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for line := range bytes.Lines(b) {
		out = append(out, bytes.TrimLeft(line, " \t\ufeff")...)
	}
	return out
}

// unusable says why no token could be verified with k, a key of
// methodsOf, or "". x509 reads keys that crypto/rsa refuses when it
// verifies (under 1024 bits since Go 1.24, an even modulus or exponent),
// and ECDSA keys of curves golang-jwt's ES methods do not take (P-224):
// loaded, such a key would refuse every token unsaid.
func unusable(k crypto.PublicKey) string {
	switch k := k.(type) {
	case *rsa.PublicKey:
		// crypto/rsa checks the key before the signature: a wrong one
		// fails as wrong only with a key it takes.
		digest := sha256.Sum256(nil)
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], make([]byte, k.Size())); !errors.Is(err, rsa.ErrVerification) {
			return fmt.Sprintf("an RSA key that crypto/rsa refuses (%v)", err)
		}
	case *ecdsa.PublicKey:
		if c := k.Curve; c != elliptic.P256() && c != elliptic.P384() && c != elliptic.P521() {
			return fmt.Sprintf("an ECDSA key of curve %s, not P-256, P-384 or P-521 (ES256, ES384, ES512)", c.Params().Name)
		}
	}
	return ""
}

// methodsOf is the JWT methods a public key verifies, nil for a key of
// another kind.
func methodsOf(k crypto.PublicKey) []string {
	switch k.(type) {
	case ed25519.PublicKey:
		return []string{"EdDSA"}
	case *rsa.PublicKey:
		return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	case *ecdsa.PublicKey:
		return []string{"ES256", "ES384", "ES512"}
	}
	return nil
}
