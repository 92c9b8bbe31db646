package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

// Key files that could not be read, for no fault of theirs (here the
// process's file limit; EIO or ESTALE on a network file system), are read
// again at the next check though they did not change: a rotation, or a
// revocation, is not dropped until they change once more.
func TestUnreadableKeysReadAgain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bundle.pem")
	pub1, key1, _ := ed25519.GenerateKey(rand.Reader)
	pub2, key2, _ := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, os.WriteFile(path, pemBlock(t, pub1), 0o600))
	v, reloads := reloadedByTest(t, Config{KeysPath: path})

	// The new key appended, the file replaced whole, and settled: its stat
	// stamp is trusted, so an unchanged file would not be read.
	require.NoError(t, os.WriteFile(path+".new", slices.Concat(pemBlock(t, pub1), pemBlock(t, pub2)), 0o600))
	require.NoError(t, os.Rename(path+".new", path))
	files := []keyFile{{path: path, kind: issuerKey}}
	require.Eventually(t, func() bool { return statStamp(files, time.Now()) != "" }, 10*time.Second, 10*time.Millisecond)

	var limit syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit))
	low := limit
	low.Cur = 3 // below the descriptors open: opening the file fails
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low))
	v.reload()
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit))
	require.ErrorContains(t, <-reloads, "too many open files")

	v.reload()
	require.Len(t, reloads, 1, "the unchanged file is read again")
	require.NoError(t, <-reloads)
	for _, key := range []ed25519.PrivateKey{key1, key2} {
		_, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, key, claims("a", time.Minute)))
		require.NoError(t, err)
	}
}
