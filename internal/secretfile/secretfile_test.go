package secretfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Only a regular file, or a symbolic link to one (a Kubernetes secret
// mount's), is read: a FIFO nobody writes to is refused at once rather than
// waited on for ever (os.Open waits for a writer), as are a directory and a
// device; the errors do not name the path.
func TestRead(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(secret, []byte("s3cret\n"), 0o600))
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(secret, link))
	b, err := Read(link)
	require.NoError(t, err)
	require.Equal(t, "s3cret\n", string(b))

	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	done := make(chan error, 1)
	go func() { _, err := Read(fifo); done <- err }()
	select {
	case err := <-done:
		require.EqualError(t, err, "is not a regular file")
	case <-time.After(10 * time.Second):
		// Let the blocked Read go: a writer that opens and closes.
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		t.Fatal("Read of a FIFO with no writer blocks")
	}

	for _, p := range []string{dir, "/dev/zero"} {
		_, err := Read(p)
		require.EqualError(t, err, "is not a regular file", p)
	}
	_, err = Read(filepath.Join(dir, "missing"))
	require.ErrorContains(t, err, "cannot be opened: ")
	require.NotContains(t, err.Error(), dir)

	big := filepath.Join(dir, "big")
	require.NoError(t, os.WriteFile(big, []byte(strings.Repeat("s", MaxBytes+1)), 0o600))
	_, err = Read(big)
	require.EqualError(t, err, "is over 65536 bytes")
}
