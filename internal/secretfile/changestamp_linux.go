package secretfile

import (
	"fmt"
	"io/fs"
	"syscall"
	"time"
)

// ChangeStamp identifies a file's version by stat alone: its device and
// inode (a file replaced by a rename), size, modification time, and change
// time, which a file rewritten in place keeping its size and modification
// time (cp -p, rsync --inplace -a), or a new file in a freed inode with
// both equal, still moves, as no one can set it. It also returns when the
// file last changed. A file system that keeps no change time gets none (ok
// false): its files are to be read at every check. A stamp taken within
// SettleTime of changed cannot be trusted.
func ChangeStamp(fi fs.FileInfo) (stamp string, changed time.Time, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Ctim.Sec == 0 && st.Ctim.Nsec == 0 {
		return "", fi.ModTime(), false
	}
	ctime := time.Unix(st.Ctim.Unix())
	changed = fi.ModTime()
	if ctime.After(changed) {
		changed = ctime
	}
	return fmt.Sprintf("%d:%d %d %d %d", st.Dev, st.Ino, fi.Size(), fi.ModTime().UnixNano(), ctime.UnixNano()), changed, true
}
