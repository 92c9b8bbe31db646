package worker

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A detached record keeps its key, value and headers when the buffer it
// was fetched into is reused: it no longer points into it (so holding it
// does not hold the batch).
func TestDetachCopiesOutOfTheFetchBuffer(t *testing.T) {
	batch := []byte("keyvaluehv1hv2")
	r := &kgo.Record{Key: batch[0:3], Value: batch[3:8], Offset: 7, Partition: 2, Topic: "commands",
		Headers: []kgo.RecordHeader{{Key: "a", Value: batch[8:11]}, {Key: "b", Value: batch[11:14]}, {Key: "c"}}}
	noKey := &kgo.Record{Value: batch[3:8], Offset: 8}
	got, bytes := detach([]*kgo.Record{r, noKey})
	clear(batch)
	require.Len(t, got, 2)
	d := got[0]
	require.Equal(t, "key", string(d.Key))
	require.Equal(t, "value", string(d.Value))
	require.Equal(t, []kgo.RecordHeader{{Key: "a", Value: []byte("hv1")}, {Key: "b", Value: []byte("hv2")}, {Key: "c"}}, d.Headers)
	require.NotSame(t, r, d, "a record of its own, not one of the batch's")
	require.Equal(t, int64(7), d.Offset)
	require.Equal(t, int32(2), d.Partition)
	require.Equal(t, "commands", d.Topic)
	require.Nil(t, got[1].Key, "no key stays no key")
	require.Nil(t, got[1].Headers)
	require.Equal(t, "value", string(got[1].Value))
	require.Equal(t, 3+5+6+3+5, bytes, "keys, values and headers")
	// The copies share one buffer, each capped.
	_ = append(d.Key, 'X')
	require.Equal(t, "value", string(d.Value))
}
