// Package secretfile reads a secret's file (a worker's name_FILE setting,
// an SDK's token or signing key file) within a bound, and tells by stat
// whether it changed (ChangeStamp).
package secretfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// MaxBytes bounds a secret's file (Read): a connection
// string, a token or a PEM key is far smaller.
const MaxBytes = 64 << 10

// SettleTime is how long after a change a file's ChangeStamp is trusted:
// longer than the coarsest file time stamps (a second on some file
// systems, a jiffy on Linux's), within which a write in the same tick
// would leave the stamp as it was.
const SettleTime = 2 * time.Second

// Stamp is the ChangeStamp of the file at path (symbolic links followed,
// as a Kubernetes volume swaps them to renew its files) as of now: equal to
// a later one when the file did not change in between, and "" when that
// cannot be told: the file cannot be stat'ed, its file system keeps no
// change time, or it changed within SettleTime (fresh), when it may still
// be being written.
func Stamp(path string, now time.Time) (stamp string, fresh bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", false
	}
	stamp, changed, _ := ChangeStamp(fi)
	if changed.After(now.Add(-SettleTime)) {
		return "", true
	}
	return stamp, false
}

// Read reads the secret file at path (the workers' name_FILE
// settings, an SDK's token or signing key file), at most
// MaxBytes: a path that names something endless by mistake (a
// log) fails rather than fill the memory. Only a regular file is read, or
// a symbolic link to one (as Kubernetes mounts secrets): opening a FIFO
// waits for a writer, and reading a device or a terminal may wait for
// ever. Its errors do not name path, in case the secret itself was set
// there by mistake.
func Read(path string) ([]byte, error) { return ReadAtMost(path, MaxBytes) }

// ReadAtMost is Read with another bound (a CA bundle may be larger than a
// secret).
func ReadAtMost(path string, limit int) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cannot be opened: %w", pathless(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("is not a regular file")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot be opened: %w", pathless(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("cannot be read: %w", pathless(err))
	case len(b) > limit:
		return nil, fmt.Errorf("is over %d bytes", limit)
	}
	return b, nil
}

// pathless is err without the path an *os.PathError names.
func pathless(err error) error {
	if pe, ok := errors.AsType[*os.PathError](err); ok {
		return pe.Err
	}
	return err
}
