package worker

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/topics"
)

// With RequireFencingToken, an owner id alone can neither end nor keep a
// lease: release and extend without fencing_token are refused and change
// nothing; with the holder's token they apply.
func TestRequireFencingToken(t *testing.T) {
	w, st := newApplier(t)
	w.cfg.RequireFencingToken = true
	p := w.newPartition(w.hard, 0)
	reply := "locks.replies.fenced"
	off := int64(0)
	send := func(c topics.Command) {
		c.LockName, c.OwnerID, c.ReplyTo, c.RequestID = "a", "alice", reply, "r-"+c.Operation+time.Now().String()
		r := &kgo.Record{Topic: topics.DefaultNames().Commands, Partition: 0, Offset: off, Key: []byte("a"), Value: command(t, c)}
		off++
		apply(w, segment{p: p, records: []*kgo.Record{r}, polledAt: time.Now()})
	}
	last := func() topics.Event {
		rows := outboxRows(t, st, reply, 0)
		var ev topics.Event
		require.NoError(t, json.Unmarshal(rows[len(rows)-1].value, &ev))
		return ev
	}
	send(topics.Command{Operation: topics.OpAcquire})
	tok := last().LockInfo.FencingToken
	for _, op := range []string{topics.OpRelease, topics.OpExtend} {
		send(topics.Command{Operation: op})
		ev := last()
		require.Equal(t, topics.CodeInvalidRequest, ev.ErrorCode, op)
		require.Contains(t, ev.ErrorMessage, "fencing_token is required")
	}
	var status string
	var extensions int
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT status, extension_count FROM locks WHERE lock_name = 'a'`).Scan(&status, &extensions))
	require.Equal(t, "acquired", status)
	require.Zero(t, extensions)
	require.Len(t, outboxRows(t, st, topics.DefaultNames().DeadLetter, 0), 2, "refusals are dead-lettered")

	send(topics.Command{Operation: topics.OpRelease, FencingToken: &tok})
	require.Equal(t, topics.TypeReleased, last().Type)
}
