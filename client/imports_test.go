package client_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The SDK depends on the contract (topics), the watermill adapter
// (kafkapubsub), the readers' bounded decompressor (internal/fetchbound)
// and wait after refused fetches (internal/pollpause), the bounded
// reader of its credential files (internal/secretfile), and the keyed
// producer (internal/keypartition) and retry options (internal/kafkaretry)
// it shares with the relay of this module, never on the worker's packages (config, store, worker,
// ...), so programs that take locks do not build the service.
func TestImportsNoWorkerPackages(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	const module = "github.com/omninode/lockworker/"
	var ours []string
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, module) {
			ours = append(ours, strings.TrimPrefix(p, module))
		}
	}
	assert.ElementsMatch(t, []string{"client", "internal/fetchbound", "internal/kafkaretry", "internal/keypartition", "internal/pollpause", "internal/secretfile", "kafkapubsub", "topics"}, ours)
	assert.NotContains(t, string(out), "github.com/rs/zerolog", "the worker's logger stays out of the SDK")
}
