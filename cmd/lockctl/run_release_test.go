package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/topics"
)

// A release after the command that gets no answer (here: lockctl's reply
// topic cannot be read once the command runs) keeps the command's exit
// code, and says that the lock may stay held until its lease runs out,
// and for the lock-delay after.
func TestRunSaysWhenTheReleaseIsNotConfirmed(t *testing.T) {
	const lock = "ctl-run-release-unanswered"
	requester := fmt.Sprintf("ctl-unanswered-%d", time.Now().UnixNano())
	done := filepath.Join(t.TempDir(), "done")
	_, stderr, wait := start(context.Background(), "run", "--lock", lock, "--requester", requester, "--timeout", "2s", "--",
		"sh", "-c", `while [ ! -e "$1" ]; do sleep 0.01; done; exit 5`, "sh", done)
	eventually(t, "run to hold the lock", func() bool { return strings.Contains(stderr.String(), "holding") })
	deaf := env.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: topics.DefaultNames().ReplyTopic(requester),
		Err: kerr.NotLeaderForPartition, Count: -1})
	defer deaf.Remove()
	assert.NoError(t, os.WriteFile(done, nil, 0o600))
	r := wait()
	assert.Equal(t, 5, r.code, "the command's own code: %s", r.stderr)
	assert.Regexp(t, `lockctl: the release of `+lock+` was not confirmed \(releasing lock "`+lock+`": .+\): `+
		`unless the worker applied it, the lock stays held until its lease runs out at \S+Z, then for --lock-delay 10\.667s more\n`, r.stderr)
}
