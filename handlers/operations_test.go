package handlers

import (
	"maps"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// The worker applies exactly the contract's operations.
func TestOperationsTable(t *testing.T) {
	require.ElementsMatch(t, topics.OperationNames(), slices.Collect(maps.Keys(operations)))
	for name, op := range operations {
		require.NotNil(t, op.apply, name)
	}
}
