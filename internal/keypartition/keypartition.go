// Package keypartition builds the Kafka producers whose records must go to
// the partition their key hashes to, as kgo's default partitioner (and
// Java's) puts them, by murmur2: the relay's, whose lock state records
// readers look for there only, and the SDK's, whose commands of one lock
// must share a partition to be applied in the order sent.
package keypartition

import (
	"errors"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrSet: the options given to NewClient set kgo.RecordPartitioner.
var ErrSet = errors.New("kgo.RecordPartitioner may not be set: records must go to the partition their key hashes to (murmur2, kgo's default partitioner)")

// NewClient is kgo.NewClient(opts...) with kgo's default partitioner,
// failing with ErrSet when opts set another (even one that hashes keys
// alike: which one does cannot be told from the option).
func NewClient(opts ...kgo.Opt) (*kgo.Client, error) {
	// kgo's default, set first so that another one in opts shows.
	keyed := kgo.UniformBytesPartitioner(64<<10, true, true, nil)
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.RecordPartitioner(keyed)}, opts...)...)
	if err != nil {
		return nil, err
	}
	if cl.OptValue(kgo.RecordPartitioner) != keyed {
		cl.Close()
		return nil, ErrSet
	}
	return cl, nil
}
