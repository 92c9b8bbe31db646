package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

// Key directories whose paths hold glob metacharacters, in their last
// component or a parent's, are read as the directories they name: both
// kinds of keys load.
func TestKeyDirectoriesNamedLikePatterns(t *testing.T) {
	for _, name := range []string{"keys[prod]", "keys[old", "keys*", "keys?", `keys\`} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			issuers := filepath.Join(root, name, "issuers")
			requesters := filepath.Join(root, "requesters", name)
			require.NoError(t, os.MkdirAll(issuers, 0o700))
			require.NoError(t, os.MkdirAll(requesters, 0o700))
			issuerPub, issuerKey, _ := ed25519.GenerateKey(rand.Reader)
			writePublic(t, filepath.Join(issuers, "issuer.pem"), issuerPub)
			billingPub, billingKey, _ := ed25519.GenerateKey(rand.Reader)
			writePublic(t, filepath.Join(requesters, "billing.pem"), billingPub)

			v, err := NewVerifier(Config{KeysPath: issuers, RequesterKeysPath: requesters, ReloadEvery: time.Hour})
			require.NoError(t, err)
			t.Cleanup(v.Close)
			_, err = v.Verify(sign(t, jwt.SigningMethodEdDSA, issuerKey, claims("payments", time.Minute)))
			require.NoError(t, err, "issuer key")
			r, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, billingKey, claims("billing", time.Minute)))
			require.NoError(t, err, "requester key")
			require.Equal(t, Requester{Name: "billing"}, r)
		})
	}
}

// A directory named "keys[ab]" is not the pattern matching "keysa": the
// keys of a sibling "keysa" are never read.
func TestKeyDirectoryNotReadAsPattern(t *testing.T) {
	root := t.TempDir()
	otherPub, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, d := range []string{"keys[ab]", "keysa", "requesters[ab]", "requestersa"} {
		require.NoError(t, os.Mkdir(filepath.Join(root, d), 0o700))
	}
	writePublic(t, filepath.Join(root, "keysa", "issuer.pem"), otherPub)
	_, err := NewVerifier(Config{KeysPath: filepath.Join(root, "keys[ab]")})
	require.ErrorContains(t, err, "AUTH_KEYS directory "+filepath.Join(root, "keys[ab]")+" holds no verification keys")

	issuers := t.TempDir()
	issuerPub, _, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(issuers, "issuer.pem"), issuerPub)
	writePublic(t, filepath.Join(root, "requestersa", "billing.pem"), otherPub)
	v, err := NewVerifier(Config{KeysPath: issuers, RequesterKeysPath: filepath.Join(root, "requesters[ab]"), ReloadEvery: time.Hour})
	require.NoError(t, err)
	t.Cleanup(v.Close)
	_, err = v.Verify(sign(t, jwt.SigningMethodEdDSA, otherKey, claims("billing", time.Minute)))
	require.ErrorIs(t, err, ErrUnauthenticated, "requestersa/billing.pem is no key of AUTH_REQUESTER_KEYS")
}

// A directory's *.pem entries are listed whatever they are, as before:
// symlinks, as a Kubernetes Secret projects its keys through ..data, load
// their targets; an entry of no regular file fails the load rather than
// leave its keys out unsaid.
func TestKeyDirectoryEntries(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys[prod]")
	version := filepath.Join(dir, "..2026_01_01_00_00_00.000000001")
	require.NoError(t, os.MkdirAll(version, 0o700))
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, filepath.Join(version, "issuer.pem"), pub)
	require.NoError(t, os.Symlink(filepath.Base(version), filepath.Join(dir, "..data")))
	require.NoError(t, os.Symlink(filepath.Join("..data", "issuer.pem"), filepath.Join(dir, "issuer.pem")))

	v, err := NewVerifier(Config{KeysPath: dir, ReloadEvery: time.Hour})
	require.NoError(t, err)
	_, err = v.Verify(sign(t, jwt.SigningMethodEdDSA, key, claims("billing", time.Minute)))
	require.NoError(t, err, "the key behind issuer.pem -> ..data/issuer.pem")
	v.Close()

	require.NoError(t, os.Mkdir(filepath.Join(dir, "old.pem"), 0o700))
	_, err = NewVerifier(Config{KeysPath: dir, ReloadEvery: time.Hour})
	require.ErrorContains(t, err, "reading key "+filepath.Join(dir, "old.pem")+": is not a regular file")
	require.NoError(t, os.Remove(filepath.Join(dir, "old.pem")))

	require.NoError(t, os.Symlink("gone.pem", filepath.Join(dir, "dangling.pem")))
	_, err = NewVerifier(Config{KeysPath: dir, ReloadEvery: time.Hour})
	require.ErrorContains(t, err, "reading key "+filepath.Join(dir, "dangling.pem")+": cannot be opened")
}
