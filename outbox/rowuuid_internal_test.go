package outbox

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// A row without ce_id gets a UUID of its identity, its id and created_at:
// the same row twice gets the same UUID, and a row that took a lost row's
// id after a failover (another created_at) gets another.
func TestMessageUUIDOfARowWithoutCEID(t *testing.T) {
	r := &Relay{cfg: Config{KeyMetadata: "partition_key"}}
	at := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	msg := func(x row) string {
		t.Helper()
		m, err := r.message(x)
		require.NoError(t, err)
		return m.UUID
	}
	copyOf := func(id int64, created time.Time) row {
		return row{rowRef: rowRef{id, created}, topic: "locks.commands.dlq", value: []byte("v"),
			headers: topics.EncodeHeaders(nil, []topics.Header{{Key: topics.HeaderError, Value: []byte("INVALID_REQUEST: x")}})}
	}
	first := msg(copyOf(7, at))
	require.Equal(t, first, msg(copyOf(7, at.In(time.FixedZone("elsewhere", 3600)))), "the same row, read back in another zone")
	require.NotEqual(t, first, msg(copyOf(7, at.Add(time.Microsecond))), "a row that took its id after a failover")
	require.NotEqual(t, first, msg(copyOf(8, at)), "another row")

	withCEID := copyOf(7, at)
	withCEID.headers = topics.EncodeHeaders(nil, []topics.Header{{Key: topics.HeaderCEID, Value: []byte("the-event")}})
	require.Equal(t, "the-event", msg(withCEID), "a row with ce_id carries it")
}
