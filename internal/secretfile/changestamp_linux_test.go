package secretfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// changeTime is path's change time (ctime), read apart from ChangeStamp.
func changeTime(t *testing.T, path string) time.Time {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return time.Unix(fi.Sys().(*syscall.Stat_t).Ctim.Unix())
}

// awaitFileClockPast waits until a file written now gets a later change
// time than path's: until then a write could keep it, which is what
// SettleTime is for.
func awaitFileClockPast(t *testing.T, path string) {
	t.Helper()
	probe := filepath.Join(t.TempDir(), "probe")
	require.Eventually(t, func() bool {
		return os.WriteFile(probe, nil, 0o600) == nil && changeTime(t, probe).After(changeTime(t, path))
	}, 10*time.Second, time.Millisecond)
}

// A file rewritten in place keeping its size and modification time (cp -p,
// rsync --inplace -a) gets another ChangeStamp, as its change time moved;
// changed is that change time, later than the modification time kept.
func TestChangeStamp(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	old := time.Now().Add(-time.Hour)
	write := func(content string) os.FileInfo {
		t.Helper()
		require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
		require.NoError(t, os.Chtimes(path, old, old))
		fi, err := os.Stat(path)
		require.NoError(t, err)
		return fi
	}
	before := write("first")
	stamp, changed, ok := ChangeStamp(before)
	require.True(t, ok)
	require.Equal(t, changeTime(t, path), changed)
	again, err := os.Stat(path)
	require.NoError(t, err)
	s, _, _ := ChangeStamp(again)
	require.Equal(t, stamp, s, "unchanged: the same stamp")

	awaitFileClockPast(t, path)
	after := write("again")
	require.True(t, os.SameFile(before, after), "rewritten in place")
	require.Equal(t, before.Size(), after.Size())
	require.Equal(t, before.ModTime(), after.ModTime())
	s, rewritten, ok := ChangeStamp(after)
	require.True(t, ok)
	require.NotEqual(t, stamp, s, "the change time moved")
	require.True(t, rewritten.After(changed), "changed is the change time, not the modification time kept")
}
