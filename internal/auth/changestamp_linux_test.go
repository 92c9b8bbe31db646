package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// changeTime is path's change time (ctime), zero when it cannot be read.
func changeTime(path string) time.Time {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(fi.Sys().(*syscall.Stat_t).Ctim.Unix())
}

// The key files' statStamp changes with any change of their contents, a
// key replaced in place keeping its size and modification time too, and
// is not trusted while a file changed within secretfile.SettleTime.
func TestStatStamp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.pem")
	pub1, _, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, path, pub1)
	files := []keyFile{{path: path, kind: issuerKey}}
	require.Empty(t, statStamp(files, time.Now()), "just written: a write in the same tick of the file system's clock would leave the stamp as it is")
	later := time.Now().Add(time.Hour) // as if the files had settled
	loaded := statStamp(files, later)
	require.NotEmpty(t, loaded)
	require.Equal(t, loaded, statStamp(files, later), "unchanged: the same stamp, and nothing to read")

	// Until the file system's clock has moved on, a write could keep the
	// change time: that is what secretfile.SettleTime is for.
	probe := filepath.Join(dir, "probe")
	require.Eventually(t, func() bool {
		return os.WriteFile(probe, nil, 0o600) == nil && changeTime(probe).After(changeTime(path))
	}, 10*time.Second, time.Millisecond)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	pub2, _, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, path, pub2)
	require.NoError(t, os.Chtimes(path, fi.ModTime(), fi.ModTime()))
	after, err := os.Stat(path)
	require.NoError(t, err)
	require.True(t, os.SameFile(fi, after), "replaced in place")
	require.Equal(t, fi.Size(), after.Size())
	require.Equal(t, fi.ModTime(), after.ModTime())
	require.NotEqual(t, loaded, statStamp(files, later), "the change time moved")

	require.NotEqual(t, statStamp(files, later), statStamp(append(files, keyFile{path: probe, kind: issuerKey}), later), "a file added")
}
