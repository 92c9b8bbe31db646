package config

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzFromEnv sets one of the variables WorkerFromEnv reads to any string
// (a secret's NAME_FILE: to a file holding it) and the others not at all,
// so that their defaults stand: the configuration is accepted, or refused
// by errors that each name the variable (a rule between two settings
// names both). A secret is never quoted, in an error or in Redacted, nor
// is a key pasted in place of a secret file's path (secretPath). FromEnv,
// whose rules WorkerFromEnv's include, accepts what WorkerFromEnv does,
// and HTTPAddrFromEnv takes HTTP_ADDR as they take it.
func FuzzFromEnv(f *testing.F) {
	read := map[string]bool{}
	_, err := WorkerFromEnv(func(name string) string { read[name] = true; return "" })
	require.NoError(f, err)
	names := slices.Sorted(func(yield func(string) bool) {
		for name := range read {
			if !yield(name) {
				return
			}
		}
	})
	secrets := map[string]bool{}
	for _, name := range names {
		if s, ok := strings.CutSuffix(name, "_FILE"); ok && read[s] {
			secrets[s] = true
		}
	}
	secretPaths := map[string]bool{}
	for _, s := range Default().secretPaths() {
		secretPaths[s.name] = true
	}

	values := []string{"", " ", "1", "0", "-1", "2.5", " 30 ", "1e-10", "1e309", "NaN", "0x10", "9223372036854775808",
		"true", "No", "maybe", "k1:9093, k2", "[::1]", "[::1]:0", "host:http", ":8062", "a b:1", ",",
		"postgres://app:p4ssw0rd-s3cret@db:5432/locks?sslmode=require", "host=db password='p4ss w0rd' pool_max_conns=3",
		"postgres://app:p@ss@db/x", "s3cret-password-of-some-length\n", strings.Repeat("k", 40), "-----BEGIN PRIVATE KEY-----",
		"lockworker.", "json", "WARN", "CONSUMER", "zstd", "\x00", "é"}
	for i := range names {
		for _, v := range values {
			f.Add(uint8(i), v)
		}
	}

	secretFile := filepath.Join(f.TempDir(), "secret")
	f.Fuzz(func(t *testing.T, i uint8, value string) {
		name := names[int(i)%len(names)]
		setting, setValue := name, value
		if s, ok := strings.CutSuffix(name, "_FILE"); ok && secrets[s] {
			require.NoError(t, os.WriteFile(secretFile, []byte(value), 0o600))
			setting, setValue = s, secretFile
		}
		getenv := func(n string) string {
			if n == name {
				return setValue
			}
			return ""
		}
		c, err := WorkerFromEnv(getenv)
		if name == "HTTP_ADDR" {
			_, httpErr := HTTPAddrFromEnv(getenv)
			require.Equal(t, err == nil, httpErr == nil, "HTTP_ADDR %q: WorkerFromEnv says %v, HTTPAddrFromEnv %v", value, err, httpErr)
		}
		secret := secrets[setting] || secretPaths[setting] && len(strings.TrimSpace(value)) >= minBareKeyBytes && !strings.Contains(strings.TrimSpace(value), "/")
		if err == nil {
			fromEnv, err := FromEnv(getenv)
			require.NoError(t, err, "FromEnv refuses what WorkerFromEnv accepts: %s=%q", name, value)
			require.Equal(t, c, fromEnv)
			if secrets[setting] && setting != "DATABASE_URL" {
				require.Contains(t, []any{"", masked}, c.Redacted()[setting], "%s shown", setting)
			}
			return
		}
		joined, ok := err.(interface{ Unwrap() []error })
		require.True(t, ok, "%T", err)
		for _, e := range joined.Unwrap() {
			require.Contains(t, e.Error(), setting, "%s=%q: an error naming another variable", name, value)
		}
		if secret {
			for _, v := range []string{value, strings.TrimSpace(value)} {
				if v == "" {
					continue
				}
				require.NotContains(t, err.Error(), strconv.Quote(v), "%s quoted", setting)
				// Shorter, it may be a word of the error's own text
				// ("postgres").
				if len(v) >= 16 {
					require.NotContains(t, err.Error(), v, "%s shown", setting)
				}
			}
		}
	})
}
