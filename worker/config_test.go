package worker_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/worker"
)

// Config.SessionTimeout comes with a heartbeat of a fifth of it; the
// caller's Kafka options, applied after, win over either.
func TestSessionTimeoutKeepsTheCallersHeartbeat(t *testing.T) {
	c := kafkatest.Cluster(t)
	w := idleWorker(t, c, worker.Config{SessionTimeout: 10 * time.Second})
	require.Equal(t, 2*time.Second, w.Client().OptValue(kgo.HeartbeatInterval))

	w = idleWorker(t, c, worker.Config{SessionTimeout: 10 * time.Second, KafkaOpts: []kgo.Opt{kgo.HeartbeatInterval(100 * time.Millisecond)}})
	require.Equal(t, 100*time.Millisecond, w.Client().OptValue(kgo.HeartbeatInterval))
	require.Equal(t, 10*time.Second, w.Client().OptValue(kgo.SessionTimeout))

	// The caller's session timeout wins, with the heartbeat they set beside
	// it.
	w = idleWorker(t, c, worker.Config{SessionTimeout: time.Minute,
		KafkaOpts: []kgo.Opt{kgo.SessionTimeout(5 * time.Second), kgo.HeartbeatInterval(time.Second)}})
	require.Equal(t, 5*time.Second, w.Client().OptValue(kgo.SessionTimeout))
	require.Equal(t, time.Second, w.Client().OptValue(kgo.HeartbeatInterval))

	// Without it, the heartbeat stays a fifth of 60 s, longer than their
	// session timeout, which kgo refuses.
	_, err := worker.New(worker.Config{Store: &store.Store{}, Relay: idleRelay{}, SessionTimeout: time.Minute,
		KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.SessionTimeout(5 * time.Second)}})
	require.ErrorContains(t, err, "heartbeat interval")
}

// GroupInstanceID is applied after the caller's Kafka options: it wins.
func TestGroupInstanceIDWinsOverKafkaOpts(t *testing.T) {
	c := kafkatest.Cluster(t)
	w := idleWorker(t, c, worker.Config{GroupInstanceID: "mine", KafkaOpts: []kgo.Opt{kgo.InstanceID("theirs")}})
	require.Equal(t, "mine", w.Client().OptValue(kgo.InstanceID))
}

// A fetched batch may decompress to 16 MiB, not kgo's 1 GiB: a batch of
// about 1 MiB that inflates to a gigabyte must not reach memory. A fetch
// response is at most 256 KiB, not kgo's 50 MiB, which with the ratio bound
// (internal/fetchbound) bounds what one response inflates to. The caller's
// Kafka options may set another bound.
func TestDecompressedBatchesAreBounded(t *testing.T) {
	c := kafkatest.Cluster(t)
	w := idleWorker(t, c, worker.Config{})
	require.Equal(t, 16<<20, w.Client().OptValue(kgo.MaxDecompressBatchBytes))
	require.EqualValues(t, 256<<10, w.Client().OptValue(kgo.FetchMaxBytes))

	w = idleWorker(t, c, worker.Config{KafkaOpts: []kgo.Opt{kgo.MaxDecompressBatchBytes(1 << 10)}})
	require.Equal(t, 1<<10, w.Client().OptValue(kgo.MaxDecompressBatchBytes))
}

// The fetch CRC check may not be turned off: a batch that cannot be
// decompressed is skipped for good, and only the check keeps one damaged in
// transit, which the next fetch would read whole, from being taken for it.
func TestFetchCRCValidationCannotBeDisabled(t *testing.T) {
	c := kafkatest.Cluster(t)
	w := idleWorker(t, c, worker.Config{})
	require.Equal(t, false, w.Client().OptValue(kgo.DisableFetchCRCValidation))
	_, err := worker.New(worker.Config{Store: &store.Store{}, Relay: idleRelay{},
		KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.DisableFetchCRCValidation()}})
	require.ErrorContains(t, err, "DisableFetchCRCValidation")
}
