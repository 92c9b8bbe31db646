package embedded

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// kfake subscribes every client to all its metrics, so a kgo client of a
// broker advertising client telemetry (KIP-714) gzips and pushes them for
// nothing, for its whole life and once more at Close: with 1,000 SDK
// Clients, twice their idle heap and CPU. The broker must not advertise it,
// and a kgo client must then not ask for a subscription.
func TestNoClientTelemetry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := start(t, ctx, t.TempDir(), map[string]Topic{"a": {Partitions: 1}}, zerolog.Nop())

	for _, k := range apiVersions(t, b.Addr()).ApiKeys {
		assert.NotContains(t, []int16{int16(kmsg.GetTelemetrySubscriptions), int16(kmsg.PushTelemetry)}, k.ApiKey,
			"advertised: %s", kmsg.NameForKey(k.ApiKey))
	}

	var asked atomic.Int32
	b.Cluster().ControlKey(int16(kmsg.GetTelemetrySubscriptions), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().KeepControl()
		asked.Add(1)
		return nil, nil, false // kfake answers
	})
	cl := client(t, b)
	defer cl.Close()
	// kgo decides whether to push after its first response, and asks for
	// a subscription at once if the broker advertises telemetry.
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: "a", Value: []byte("1")}).FirstErr())
	assert.Never(t, func() bool { return asked.Load() > 0 }, time.Second, 10*time.Millisecond,
		"the client asked for a telemetry subscription")
}
