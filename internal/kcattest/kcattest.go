// Package kcattest finds kcat for the interoperability tests, which talk to
// lockworker's Kafka through librdkafka, a client that shares no code with
// franz-go or kfake.
package kcattest

import (
	"os"
	"os/exec"
	"testing"
)

// SkipEnv, set to 1, skips the kcat tests.
const SkipEnv = "LOCKWORKER_SKIP_KCAT"

// Path returns kcat's path. With LOCKWORKER_SKIP_KCAT=1 it skips t, saying
// so; otherwise a kcat missing from PATH fails t with how to install it.
func Path(t testing.TB) string {
	t.Helper()
	if os.Getenv(SkipEnv) == "1" {
		t.Skip(SkipEnv + "=1: skipping this kcat interoperability test")
	}
	path, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat is not on PATH: install it (apt-get install kcat; .ci/run does) or set %s=1 to skip the kcat tests", SkipEnv)
	}
	return path
}
