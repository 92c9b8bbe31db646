package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/topics"
)

// evilOwner is an owner_id the contract accepts (it refuses only NUL):
// it would clear the screen, set the terminal's title and forge a line.
const evilOwner = "x\x1b[2J\x1b]0;pwned\x07\nFAKE orders/42 free"

// assertNoControls fails when out holds a character a terminal acts on,
// other than the newlines that end lockctl's own lines, or a line forged
// by evilOwner.
func assertNoControls(t *testing.T, out string) {
	t.Helper()
	for _, r := range out {
		if r != '\n' && !unicode.IsPrint(r) {
			assert.Failf(t, "a control character reaches the terminal", "%U in %q", r, out)
			return
		}
	}
	assert.NotContains(t, out, "\nFAKE", "a forged line")
}

// Every text line that shows an owner_id or owner_metadata quotes one that
// is not printable; printable ones stay as they were.
func TestTextOutputQuotesWhatIsNotPrintable(t *testing.T) {
	at := topics.NewTime(time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC))
	// A raw CSI (U+009B) and a right-to-left override: valid JSON, stored
	// as is by jsonb.
	metadata := "{\"note\":\"\u009b2J \u202etxt.exe\"}"
	li := &topics.LockInfo{LockName: "a", OwnerID: evilOwner, Status: topics.StatusAcquired, FencingToken: 7,
		OwnerMetadata: []byte(metadata), Mode: topics.ModeShared, HolderCount: 2, Holders: []topics.Holder{
			{OwnerID: evilOwner, Mode: topics.ModeShared, FencingToken: 7, ExpiresAt: at},
			{OwnerID: "p", Mode: topics.ModeShared, FencingToken: 8, ExpiresAt: at}}}
	d := describe(topics.Event{LockInfo: li})
	assertNoControls(t, d)
	assert.Contains(t, d, "a acquired owner="+strconv.Quote(evilOwner)+" token=7")
	assert.Contains(t, d, " metadata="+strconv.Quote(metadata))
	assert.Contains(t, d, "\n  "+strconv.Quote(evilOwner)+" shared token=7")
	assert.Contains(t, d, "\n  p shared token=8", "a printable owner as is")

	var out testlog.Buffer
	c := &cli{stdout: &out}
	c.printRevision(client.LockRevision{Name: "a", Revision: 3, Status: client.StatusAcquired,
		Holders: []client.Holder{{Owner: evilOwner, Mode: client.Exclusive, Token: 7, ExpiresAt: at.Time}}})
	c.printWatched(topics.Event{Type: topics.TypeAcquired, OccurredAt: at, LockInfo: li}, nil)
	assertNoControls(t, out.String())
	assert.Contains(t, out.String(), "a rev=3 acquired holder="+strconv.Quote(evilOwner)+"/exclusive/token=7/")
	assert.Contains(t, out.String(), " a owner="+strconv.Quote(evilOwner)+" token=7")
}

// The acquire's release hint writes an owner that is not printable as
// $'...': no control character on screen, and bash reads it back as the
// owner itself, whatever its locale (cron's and minimal images' is C):
// every ASCII character but NUL, beside a quote and a backslash, and
// characters beyond ASCII, printable or not (sampled), one a hex digit
// follows.
func TestShellQuoteOfWhatIsNotPrintable(t *testing.T) {
	cases := []string{evilOwner, "it's \"quoted\" \\ \u009b\u202e\U0001F600 \x7f", "\U000e0001\u2028f", "plain-owner"}
	for b := 1; b < utf8.RuneSelf; b++ {
		cases = append(cases, "a"+string(rune(b))+"'\\f")
	}
	for r := rune(utf8.RuneSelf); r <= unicode.MaxRune; r++ {
		if !unicode.IsPrint(r) && utf8.ValidRune(r) && (r < 0x200 || r%97 == 0) {
			cases = append(cases, "o"+string(r)+"0f")
		}
	}
	var script strings.Builder
	for _, s := range cases {
		q := shellQuote(s)
		assertNoControls(t, q)
		script.WriteString("printf '%s\\0' " + q + "\n")
	}
	for _, locale := range []string{"C", "C.UTF-8"} {
		bash := exec.Command("bash") // the script on stdin: longer than an argument may be
		bash.Stdin = strings.NewReader(script.String())
		bash.Env = append(os.Environ(), "LC_ALL="+locale)
		out, err := bash.Output()
		require.NoError(t, err, locale)
		got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
		require.Len(t, got, len(cases), locale)
		bad := 0
		for i, s := range cases {
			if got[i] != s {
				if bad++; bad <= 3 {
					t.Errorf("bash with LC_ALL=%s reads %s back as %q, not %q", locale, shellQuote(s), got[i], s)
				}
			}
		}
		assert.Zero(t, bad, "of %d owners, bash with LC_ALL=%s reads back otherwise", len(cases), locale)
	}
	assert.Equal(t, "plain-owner", shellQuote("plain-owner"))
}

// End to end: one requester's owner_id with escapes and a line feed does
// not reach another's query or locks, nor the acquirer's screen, whose
// hint releases the lock.
func TestOwnerControlCharactersAreQuoted(t *testing.T) {
	const lock = "ctl-owner-controls"
	bin := buildLockctl(t)
	r := lockctl(t, "acquire", "--lock", lock, "--owner", evilOwner, "--lease", "60")
	require.Equal(t, exitOK, r.code, r.stderr)
	assertNoControls(t, r.stdout)
	_, hint, ok := strings.Cut(r.stdout, "release with: ")
	require.True(t, ok, r.stdout)

	r = lockctl(t, "query", "--lock", lock)
	require.Equal(t, exitOK, r.code, r.stderr)
	assertNoControls(t, r.stdout)
	assert.Contains(t, r.stdout, lock+" acquired owner="+strconv.Quote(evilOwner)+" token=")
	r = lockctl(t, "locks")
	require.Equal(t, exitOK, r.code, r.stderr)
	assertNoControls(t, r.stdout)
	assert.Regexp(t, `(?m)^\S+Z `+lock+` rev=\d+ acquired by=acquire holder=`+regexp.QuoteMeta(strconv.Quote(evilOwner))+`/`, r.stdout)

	sh := exec.Command("bash", "-c", hint)
	sh.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := sh.CombinedOutput()
	require.NoError(t, err, "%s: %s", hint, out)
	assert.Contains(t, string(out), "released "+lock+" released owner="+strconv.Quote(evilOwner))
}
