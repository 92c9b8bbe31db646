package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The key files' statStamp changes when any file's ChangeStamp does (a
// rewrite in place keeping size and mtime moves it:
// secretfile.TestChangeStamp) or a file is added, and is not trusted while
// a file changed within secretfile.SettleTime.
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

	pub2, _, _ := ed25519.GenerateKey(rand.Reader)
	writePublic(t, path, pub2)
	old := time.Now().Add(-time.Hour)
	require.NoError(t, os.Chtimes(path, old, old))
	require.NotEqual(t, loaded, statStamp(files, later), "the key replaced")

	other := filepath.Join(dir, "other.pem")
	writePublic(t, other, pub1)
	require.NotEqual(t, statStamp(files, later), statStamp(append(files, keyFile{path: other, kind: issuerKey}), later), "a file added")
}
