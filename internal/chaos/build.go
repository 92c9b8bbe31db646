package chaos

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
)

// Build compiles this module's commands (names under cmd/, e.g.
// "lockworker") into dir and returns their paths in the same order. The Go
// build cache makes it quick after the first time.
func Build(ctx context.Context, dir string, commands ...string) ([]string, error) {
	bins := make([]string, len(commands))
	for i, name := range commands {
		bins[i] = filepath.Join(dir, name)
		pkg := "github.com/omninode/lockworker/cmd/" + name
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", bins[i], pkg).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %w: %s", pkg, err, out)
		}
	}
	return bins, nil
}
