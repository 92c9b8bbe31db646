//go:build !linux

package secretfile

import (
	"io/fs"
	"time"
)

// ChangeStamp is none where no change time is read (see the Linux one): a
// file rewritten keeping its size and modification time would go unseen,
// so the file is to be read at every check. changed is its modification
// time.
func ChangeStamp(fi fs.FileInfo) (string, time.Time, bool) { return "", fi.ModTime(), false }
