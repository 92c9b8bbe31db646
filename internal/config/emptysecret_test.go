package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A secret's NAME_FILE naming an empty file, or one holding only the line
// end that is dropped, is refused, naming the variable, with the other
// errors: taken as unset, it would leave INSPECT_TOKEN off (the inspection
// endpoints open to anyone), DATABASE_URL to the POSTGRES_* defaults, a
// password empty. lockctl's ClientFromEnv refuses its one the same way.
func TestSecretFileEmpty(t *testing.T) {
	// The secrets: each NAME FromEnv reads with its NAME_FILE.
	asked := map[string]bool{}
	_, err := FromEnv(func(name string) string { asked[name] = true; return "" })
	require.NoError(t, err)
	var secrets []string
	for name := range asked {
		if s, ok := strings.CutSuffix(name, "_FILE"); ok && asked[s] {
			secrets = append(secrets, s)
		}
	}
	require.ElementsMatch(t, []string{"DATABASE_URL", "POSTGRES_PASSWORD", "INSPECT_TOKEN", "KAFKA_SASL_PASSWORD"}, secrets)

	dir := t.TempDir()
	for _, name := range secrets {
		for _, contents := range []string{"", "\n", "\r\n"} {
			path := filepath.Join(dir, name+strings.ReplaceAll(strings.ReplaceAll(contents, "\r", "r"), "\n", "n"))
			require.NoError(t, os.WriteFile(path, []byte(contents), 0o600))
			e := map[string]string{name + "_FILE": path, "LOG_FORMAT": "xml"}
			if name == "KAFKA_SASL_PASSWORD" {
				// Else refused as needing KAFKA_SASL_MECHANISM, or as
				// lacking the password it needs, whatever the file.
				e = map[string]string{name + "_FILE": path, "LOG_FORMAT": "xml", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}
			}
			_, err := FromEnv(env(e))
			require.ErrorContains(t, err, name+"_FILE: the file it names is empty", "%q", contents)
			assert.ErrorContains(t, err, `LOG_FORMAT: "xml" is not json or console`, "reported with the other errors")
			assert.NotContains(t, err.Error(), path, "the path is not named")
			if slices.Contains(clientVariables, name+"_FILE") {
				_, err = ClientFromEnv(env(e))
				require.ErrorContains(t, err, name+"_FILE: the file it names is empty", "ClientFromEnv, %q", contents)
			}
		}
	}
}
