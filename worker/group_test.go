package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

// A group renamed (KAFKA_CONSUMER_GROUP changed) finds no offsets stored
// under its name while the old group's are: started so, it would apply the
// topic again from its start. Run refuses to start, before joining the
// group, with an error naming both groups and the SQL that moves the old
// group's rows; nothing is applied. Once the rows are moved, with that
// very SQL, the new group starts where the old one stopped: the command
// the old group applied is not applied again, the next one is.
func TestRenamedGroupRefusesToStartUntilTheOffsetsAreMoved(t *testing.T) {
	e := e2e.New(t)
	ctx := context.Background()
	reply := "locks.replies.renamed"
	watch := e.Watch(reply)
	const partition = 3
	send := sendTo(t, e, partition)
	old := e.StartWorker(e2e.WorkerOpts{Name: "old"})
	send(cmd("acquire", "applied-by-old", "a", "o1", reply))
	watch.WaitEvent(t, "the old group applied it", e2e.ByRequest(reply, "applied-by-old", topics.TypeAcquired))
	old.Stop()
	send(cmd("acquire", "after-the-rename", "b", "o1", reply))

	const renamed = "lockworker-renamed"
	_, done := runWorker(t, e, renamed, nil, &testlog.Buffer{})
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not refuse to start")
	}
	require.ErrorIs(t, err, worker.ErrGroupChanged)
	msg := err.Error()
	require.Contains(t, msg, `"`+renamed+`"`)
	require.Contains(t, msg, `"`+e.Group+`"`)
	require.Contains(t, msg, "UPDATE consumer_offsets SET group_id = '"+renamed+"' WHERE group_id = '"+e.Group+"' AND topic = '"+e.Names.Commands+"'")
	require.Contains(t, msg, "UPDATE consumer_topics SET group_id = '"+renamed+"' WHERE group_id = '"+e.Group+"' AND topic = '"+e.Names.Commands+"'")
	require.Contains(t, msg, "DELETE FROM consumer_offsets WHERE group_id = '"+e.Group+"' AND topic = '"+e.Names.Commands+"'")
	require.Contains(t, msg, "If another deployment uses "+e.Group+" on this database, that is not supported")
	var rows int
	require.NoError(t, e.Store.Pool.QueryRow(ctx, `SELECT count(*) FROM consumer_offsets WHERE group_id = $1`, renamed).Scan(&rows))
	require.Zero(t, rows, "nothing applied under the new group")
	require.Equal(t, 1, answers(watch, reply, "applied-by-old"))
	require.Zero(t, answers(watch, reply, "after-the-rename"))

	move := msg[strings.Index(msg, "BEGIN;"):]
	move = move[:strings.Index(move, "COMMIT;")+len("COMMIT;")]
	_, err = e.Store.Pool.Exec(ctx, move)
	require.NoError(t, err, move)
	_, done = runWorker(t, e, renamed, nil, &testlog.Buffer{})
	watch.WaitEvent(t, "the command after the rename applied", e2e.ByRequest(reply, "after-the-rename", topics.TypeAcquired))
	select {
	case err := <-done:
		t.Fatalf("Run returned: %v", err)
	default:
	}
	require.Equal(t, 1, answers(watch, reply, "applied-by-old"), "the old group's command not applied (nor answered) again")
	offs, err := e.Store.Offsets(ctx, renamed, e.Names.Commands)
	require.NoError(t, err)
	require.Equal(t, int64(2), offs[partition].Next)
}

// answers counts the lock.acquired answers to request id watch saw.
func answers(watch *e2e.Watcher, reply, id string) (n int) {
	for _, r := range watch.All() {
		if e2e.ByRequest(reply, id, topics.TypeAcquired)(r) {
			n++
		}
	}
	return n
}

// The old group's offsets are offered to be moved as is only when they are
// known to be of the commands topic as it is now: without a topic ID stored
// with them (from before migration 013) they may be of an earlier topic of
// that name, and the error offers the move only with the caveat to make
// sure the topic was not created again since, beside the DELETE (starting
// the old group once would only store the current ID beside them).
func TestRenamedGroupWithoutATopicIDIsOfferedTheMoveWithACaveat(t *testing.T) {
	e := e2e.New(t)
	ctx := context.Background()
	reply := "locks.replies.renamed-no-id"
	watch := e.Watch(reply)
	send := sendTo(t, e, 2)
	old := e.StartWorker(e2e.WorkerOpts{Name: "old"})
	send(cmd("acquire", "applied-by-old", "a", "o1", reply))
	watch.WaitEvent(t, "the old group applied it", e2e.ByRequest(reply, "applied-by-old", topics.TypeAcquired))
	old.Stop()
	_, err := e.Store.Pool.Exec(ctx, `DELETE FROM consumer_topics WHERE group_id = $1`, e.Group)
	require.NoError(t, err)

	_, done := runWorker(t, e, "lockworker-renamed", nil, &testlog.Buffer{})
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not refuse to start")
	}
	require.ErrorIs(t, err, worker.ErrGroupChanged)
	msg := err.Error()
	require.Contains(t, msg, "UPDATE consumer_offsets SET group_id = 'lockworker-renamed' WHERE group_id = '"+e.Group+"'")
	require.Contains(t, msg, "no topic ID is stored with them")
	require.Contains(t, msg, "make sure the topic was not deleted and created again since that group's last start")
	require.NotContains(t, msg, "start once")
	require.Contains(t, msg, "DELETE FROM consumer_offsets WHERE group_id = '"+e.Group+"' AND topic = '"+e.Names.Commands+"'")
}
