package client

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// Every error code of the contract has its sentinel.
func TestEveryCodeHasASentinel(t *testing.T) {
	for _, code := range topics.ErrorCodes {
		require.NotNil(t, codeErrors[code], code)
	}
	require.Len(t, codeErrors, len(topics.ErrorCodes))
}
