package client_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/topics"
)

// A record batch of the lock state topic that cannot be decompressed (junk
// after its gzip member, its CRC matching, which kfake stores as it comes)
// is skipped unread as one past the bound is: a watch reads the revision
// after it and tells OnFetchError, and Locks returns the table with an
// error saying a batch was skipped. kgo's own decompressor would fail on
// it on every fetch, and the partition would be read no further.
func TestCorruptStateBatchIsSkipped(t *testing.T) {
	ctx := ctxT(t)
	cluster, c, produce := stateTopic(t, kafkatest.StateRecord(t, "job", 1))
	state := topics.DefaultNames().State
	corrupt := kafkatest.Corrupt(t, cluster, state, 0, "job")
	produce(kafkatest.StateRecord(t, "job", 2))

	told := make(toldErrors, 100)
	ch, err := c.Watch(ctx, "job", told.opt())
	require.NoError(t, err)
	require.EqualValues(t, 2, next(t, ch).Revision, "the revision after the batch")
	err = told.next(t)
	require.ErrorIs(t, err, kgo.ErrMaxDecompress)
	require.ErrorContains(t, err, fmt.Sprintf("offsets %d..%d of partition 0 of %q", corrupt, corrupt, state))

	table, err := c.Locks(ctx)
	require.ErrorIs(t, err, kgo.ErrMaxDecompress)
	require.ErrorContains(t, err, "1 record batch(es) skipped")
	require.Len(t, table, 1)
	require.EqualValues(t, 2, table[0].Revision)
}
