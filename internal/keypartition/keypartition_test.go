package keypartition

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// NewClient refuses any partitioner, even kgo's murmur2 one, which cannot
// be told from another, and takes options without one.
func TestNewClient(t *testing.T) {
	seeds := kgo.SeedBrokers("127.0.0.1:1") // never reached
	for _, p := range []kgo.Partitioner{kgo.RoundRobinPartitioner(), kgo.StickyKeyPartitioner(nil)} {
		_, err := NewClient(seeds, kgo.RecordPartitioner(p))
		require.ErrorIs(t, err, ErrSet)
	}
	cl, err := NewClient(seeds, kgo.ProducerLinger(0))
	require.NoError(t, err)
	cl.Close()
}
