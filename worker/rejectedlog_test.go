package worker

import (
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/topics"
)

// The warn line of a refused record says what became of it: an
// UNAUTHENTICATED one is only dead-lettered, its reply_to not trusted, and
// the line must not say it was answered there.
func TestUnauthenticatedRefusalIsLoggedUnanswered(t *testing.T) {
	w, st, _ := authWorker(t)
	logs := &testlog.Buffer{}
	w.log = zerolog.New(logs)
	names := topics.DefaultNames()
	alice := names.ReplyTopic("alice")
	r := &kgo.Record{Topic: names.Commands, Partition: 0, Key: []byte("a"),
		Value: command(t, topics.Command{RequestID: "u1", Operation: topics.OpQuery, LockName: "a", ReplyTo: alice})}
	apply(w, segment{p: w.newPartition(w.hard, 0), records: []*kgo.Record{r}, polledAt: time.Now()})
	require.Len(t, outboxRows(t, st, names.DeadLetter, 0), 1)
	require.Empty(t, outboxRows(t, st, alice, 0), "not answered")
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	require.Len(t, lines, 1, "the refusal's line alone")
	require.Contains(t, lines[0], `"level":"warn"`)
	require.Contains(t, lines[0], `"error":"`+topics.CodeUnauthenticated+": ")
	require.Contains(t, lines[0], "never for UNAUTHENTICATED")
}
