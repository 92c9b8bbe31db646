package childproc

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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
		t.Skip("no sleep binary")
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
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })

	require.NoError(t, parent.Process.Kill())
	_ = parent.Wait()
	// The child is reparented, and reaped by whoever adopts it: gone, or a
	// zombie at worst.
	require.Eventually(t, func() bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		return err != nil || zombie(string(b))
	}, 10*time.Second, 20*time.Millisecond, "sleep (pid %d) outlived its parent", pid)
}

// zombie says a /proc/<pid>/stat line is a zombie's: state Z after the
// command name.
func zombie(stat string) bool {
	for i := len(stat) - 1; i >= 0; i-- {
		if stat[i] == ')' {
			return i+2 < len(stat) && stat[i+2] == 'Z'
		}
	}
	return false
}
