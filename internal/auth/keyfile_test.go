package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

// signer signs tokens with a private key of a test.
type signer struct {
	m   jwt.SigningMethod
	key any
}

// verifiedBy loads file as AUTH_KEYS and returns which of signers'
// tokens it verifies, sorted.
func verifiedBy(t *testing.T, file []byte, signers map[string]signer) ([]string, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "k.pem")
	require.NoError(t, os.WriteFile(f, file, 0o600))
	v, err := NewVerifier(Config{KeysPath: f})
	if err != nil {
		return nil, err
	}
	defer v.Close()
	var ok []string
	for name, s := range signers {
		if _, err := v.Verify(sign(t, s.m, s.key, claims("a", time.Minute))); err == nil {
			ok = append(ok, name)
		}
	}
	slices.Sort(ok)
	return ok, nil
}

// indent puts prefix before every line of b.
func indent(b []byte, prefix string) []byte {
	var out []byte
	for line := range bytes.Lines(b) {
		out = append(append(out, prefix...), line...)
	}
	return out
}

// A block whose lines are indented (a key pasted from YAML), or after a
// UTF-8 byte-order mark (a file written by PowerShell 5.1 or old Notepad,
// and cat of such a file and another), loads as any other: pem.Decode
// passed over it, and its key was left out unsaid.
func TestKeyFileIndentedOrAfterAByteOrderMark(t *testing.T) {
	pub1, key1, _ := ed25519.GenerateKey(rand.Reader)
	pub2, key2, _ := ed25519.GenerateKey(rand.Reader)
	block1, block2 := pemBlock(t, pub1), pemBlock(t, pub2)
	const bom = "\xef\xbb\xbf"
	crlf := func(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")) }
	signers := map[string]signer{"1": {jwt.SigningMethodEdDSA, key1}, "2": {jwt.SigningMethodEdDSA, key2}}
	for name, tc := range map[string]struct {
		file []byte
		want []string
	}{
		"a byte-order mark at the start":          {slices.Concat([]byte(bom), block1, block2), []string{"1", "2"}},
		"a byte-order mark at the start, CRLF":    {crlf(slices.Concat([]byte(bom), block1, block2)), []string{"1", "2"}},
		"a byte-order mark, one key":              {slices.Concat([]byte(bom), block1), []string{"1"}},
		"a byte-order mark before the second key": {slices.Concat(block1, []byte(bom), block2), []string{"1", "2"}},
		"the second key indented by two spaces":   {slices.Concat(block1, indent(block2, "  ")), []string{"1", "2"}},
		"only the second BEGIN line indented":     {slices.Concat(block1, []byte(" "), block2), []string{"1", "2"}},
		"every key indented by a tab, CRLF":       {crlf(slices.Concat(indent(block1, "\t"), indent(block2, "\t"))), []string{"1", "2"}},
		"a YAML literal block":                    {slices.Concat([]byte("keys: |\n"), indent(slices.Concat(block1, block2), "    ")), []string{"1", "2"}},
	} {
		got, err := verifiedBy(t, tc.file, signers)
		require.NoError(t, err, name)
		require.Equal(t, tc.want, got, name)
	}
}
