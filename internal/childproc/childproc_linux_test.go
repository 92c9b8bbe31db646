package childproc

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

// TestDieWithParent: a process started with DieWithParent is killed when
// the process that started it is. The test binary runs itself as that
// parent (CHILDPROC_PARENT), which starts sleep, prints its pid and waits
// to be killed.
func TestDieWithParent(t *testing.T) {
	if os.Getenv("CHILDPROC_PARENT") != "" {
		cmd := exec.Command("sleep", "60")
		DieWithParent(cmd)
		if err := cmd.Start(); err != nil {
			os.Exit(1)
		}
		os.Stdout.WriteString(strconv.Itoa(cmd.Process.Pid) + "\n")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	if _, err := exec.LookPath("sleep"); err != nil {
		testdb.SkipMissing(t, "no sleep binary on the PATH: install coreutils")
	}
	parent := exec.Command(os.Args[0], "-test.run=^TestDieWithParent$")
	parent.Env = append(os.Environ(), "CHILDPROC_PARENT=1")
	out, err := parent.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, parent.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	pid, err := strconv.Atoi(line[:len(line)-1])
	require.NoError(t, err)
	// A test that failed may have left sleep running: kill it, but only
	// it, for by then its pid may be another process's. os.FindProcess
	// holds the process by a pidfd (Linux 5.3 and later), so the process
	// whose stat still reads sleep, alive, after it is the one Kill reaches.
	t.Cleanup(func() {
		if !t.Failed() {
			return // sleep is gone, or a zombie
		}
		p, err := os.FindProcess(pid)
		if err != nil {
			return
		}
		defer func() { _ = p.Release() }()
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if comm, state, ok := parseStat(string(b)); err == nil && ok && comm == "sleep" && state != 'Z' {
			_ = p.Kill()
		}
		// The parent is this test's own child: until waited for, its pid is
		// its own; once waited for, Kill sends nothing (os.ErrProcessDone).
		_ = parent.Process.Kill()
		_ = parent.Wait()
	})

	require.NoError(t, parent.Process.Kill())
	_ = parent.Wait()
	// The child is reparented, and reaped by whoever adopts it: gone, or a
	// zombie at worst.
	require.Eventually(t, func() bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		return err != nil || zombie(string(b))
	}, 10*time.Second, 20*time.Millisecond, "sleep (pid %d) outlived its parent", pid)
}

// zombie says a /proc/<pid>/stat line is a zombie's.
func zombie(stat string) bool {
	_, state, ok := parseStat(stat)
	return ok && state == 'Z'
}

// parseStat returns the command name and the state of a /proc/<pid>/stat
// line. The name may hold spaces and parentheses: it runs from the first
// '(' to the last ')', and the state follows after a space.
func parseStat(stat string) (comm string, state byte, ok bool) {
	i, j := strings.IndexByte(stat, '('), strings.LastIndexByte(stat, ')')
	if i < 0 || j < i || j+2 >= len(stat) {
		return "", 0, false
	}
	return stat[i+1 : j], stat[j+2], true
}

func TestParseStat(t *testing.T) {
	for _, c := range []struct {
		stat, comm string
		state      byte
		ok         bool
	}{
		{"42 (sleep) S 1 42 42 0 -1", "sleep", 'S', true},
		{"42 (sleep) Z 1 42 42 0 -1", "sleep", 'Z', true},
		{"43 (my (odd) proc) R 1", "my (odd) proc", 'R', true},
		{"44 (sleep)", "", 0, false},
		{"", "", 0, false},
	} {
		comm, state, ok := parseStat(c.stat)
		require.Equal(t, c.comm, comm, c.stat)
		require.Equal(t, c.state, state, c.stat)
		require.Equal(t, c.ok, ok, c.stat)
	}
	require.True(t, zombie("42 (sleep) Z 1"))
	require.False(t, zombie("42 (sleep) S 1"))
}
