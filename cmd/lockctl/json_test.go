package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// grantOnStderr is the lock.acquired event run --json and elect --json print
// as stderr's first line, stdout being COMMAND's.
func grantOnStderr(t *testing.T, r result) topics.Event {
	t.Helper()
	first, _, _ := strings.Cut(r.stderr, "\n")
	var ev topics.Event
	require.NoError(t, json.Unmarshal([]byte(first), &ev), "stderr: %q", r.stderr)
	require.Equal(t, topics.TypeAcquired, ev.Type)
	require.NotNil(t, ev.LockInfo)
	assert.NotContains(t, r.stderr, "lockctl: holding", "the event replaces the text line")
	assert.NotContains(t, r.stderr, "lockctl: leader of", "the event replaces the text line")
	return ev
}

// run --json prints the grant on stderr, as acquire --json encodes it,
// leaving stdout to the command; a refusal's event goes there too, beside
// the error's text.
func TestRunJSONPrintsTheGrant(t *testing.T) {
	const lock = "ctl-run-json"
	r := lockctl(t, "run", "--lock", lock, "--owner", "scripted", "--json", "--", "sh", "-c", `echo "token=$LOCKCTL_FENCING_TOKEN"`)
	require.Equal(t, exitOK, r.code, r.stderr)
	ev := grantOnStderr(t, r)
	assert.Equal(t, lock, ev.LockInfo.LockName)
	assert.Equal(t, "scripted", ev.LockInfo.OwnerID)
	assert.Equal(t, "token="+strconv.FormatInt(ev.LockInfo.FencingToken, 10)+"\n", r.stdout, "stdout is the command's alone")

	r = lockctl(t, "acquire", "--lock", lock, "--owner", "holder", "--lease", "60")
	require.Equal(t, exitOK, r.code, r.stderr)
	r = lockctl(t, "run", "--lock", lock, "--json", "--", "true")
	assert.Equal(t, exitRefused, r.code, r.stderr)
	assert.Empty(t, r.stdout)
	first, rest, _ := strings.Cut(r.stderr, "\n")
	var refusal topics.Event
	require.NoError(t, json.Unmarshal([]byte(first), &refusal), "stderr: %q", r.stderr)
	assert.Equal(t, "LOCK_HELD", refusal.ErrorCode)
	assert.Regexp(t, `^lockctl run: .*LOCK_HELD: lock "ctl-run-json" is held by "holder"`, rest, "the error is told as without --json")
	r = lockctl(t, "release", "--lock", lock, "--owner", "holder")
	require.Equal(t, exitOK, r.code, r.stderr)
}

// elect --json prints the grant of its leadership on stderr, the value in
// its owner_metadata.
func TestElectJSONPrintsTheGrant(t *testing.T) {
	const name = "ctl-elect-json"
	r := lockctl(t, "elect", "--name", name, "--value", "v1", "--json", "--", "sh", "-c", `echo "token=$LOCKCTL_FENCING_TOKEN"`)
	require.Equal(t, exitOK, r.code, r.stderr)
	ev := grantOnStderr(t, r)
	assert.Equal(t, name, ev.LockInfo.LockName)
	assert.JSONEq(t, `{"value":"v1"}`, string(ev.LockInfo.OwnerMetadata))
	assert.Equal(t, "token="+strconv.FormatInt(ev.LockInfo.FencingToken, 10)+"\n", r.stdout, "stdout is the command's alone")
}
