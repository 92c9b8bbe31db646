package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
)

// TestVacuumOutageLogsOnce: passes failing every 10 ms interval back off
// (10 ms doubling) and log the first failure only, where every pass logged
// before: about seven attempts in a second, one line.
func TestVacuumOutageLogsOnce(t *testing.T) {
	st := testdb.New(t)
	st.Pool.Close() // every query fails
	var logs testlog.Buffer
	v, err := NewVacuumer(VacuumConfig{Store: st, Enabled: true, Interval: 10 * time.Millisecond, Logger: zerolog.New(&logs)})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	v.Run(ctx)
	require.Equal(t, 1, strings.Count(logs.String(), `"message":"vacuum pass"`), logs.String())
	require.NotEmpty(t, v.Status().Error)
}
