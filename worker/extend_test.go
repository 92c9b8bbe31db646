package worker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/topics"
)

// A lease already near year 9999 (as about 2.9 million extends of a day
// each made it, before extends were bounded) is not extended past it: the
// extend is refused INVALID_REQUEST (answered, not dead-lettered), its
// answer decodes from the table as the relay reads it, and a resend of it
// is answered with that stored answer. Extended to year 10000, the answer could not be read back: the
// relay parked it as corrupt, and the resend was refused
// REQUEST_ID_CONFLICT as if the database were damaged.
func TestExtendPastYear9999IsRefusedWithAReadableAnswer(t *testing.T) {
	ctx := context.Background()
	w, st := newApplier(t)
	p := w.newPartition(w.hard, 0)
	const reply = "locks.replies.far"
	send := func(off int64, c topics.Command) {
		c.ReplyTo = reply
		apply(w, segment{p: p, records: []*kgo.Record{{Topic: topics.DefaultNames().Commands, Partition: 0, Offset: off,
			Key: []byte("far"), Value: command(t, c)}}, polledAt: time.Now()})
		require.Equal(t, off+1, storedOffset(t, st, 0))
	}
	send(0, topics.Command{RequestID: "a1", Operation: topics.OpAcquire, LockName: "far", OwnerID: "o", LeaseDuration: 86400})
	far := time.Date(9999, 12, 31, 12, 0, 0, 0, time.UTC)
	_, err := st.Pool.Exec(ctx, `UPDATE lock_holders SET expires_at = $1 WHERE lock_name = 'far'`, far)
	require.NoError(t, err)
	extend := topics.Command{RequestID: "x1", Operation: topics.OpExtend, LockName: "far", OwnerID: "o", ExtensionDuration: 86400}
	send(1, extend)
	send(2, extend) // a resend

	var answers []topics.Event
	for _, r := range outboxRows(t, st, reply, 0) { // decoded as the relay reads them
		ev, err := topics.DecodeEvent(r.value)
		require.NoError(t, err)
		answers = append(answers, ev)
	}
	require.Len(t, answers, 3)
	require.Equal(t, topics.TypeAcquired, answers[0].Type)
	refused := answers[1]
	require.Equal(t, topics.TypeRejected, refused.Type)
	require.Equal(t, topics.CodeInvalidRequest, refused.ErrorCode)
	require.Contains(t, refused.ErrorMessage, "past now")
	require.Equal(t, far, refused.LockInfo.ExpiresAt.Time.UTC(), "the lease as it was")
	require.Equal(t, refused.EventID, answers[2].EventID, "the resend answered with the stored answer")
	require.Empty(t, outboxRows(t, st, topics.DefaultNames().DeadLetter, 0), "answered, not dead-lettered: the lease's state refused it, not the record")
	var expires time.Time
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT expires_at FROM lock_holders WHERE lock_name = 'far'`).Scan(&expires))
	require.Equal(t, far, expires.UTC())
}
