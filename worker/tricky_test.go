package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/topics"
)

// Records at the edges of what validation takes, and past them, go through
// the real applier each in its own batch, then all in one batch: every
// batch commits, the offset moves past every record, the valid command
// after them is applied, and only the records validation refuses without
// an answerable command are dead-lettered, each once. None stops its
// partition, and none reaches PostgreSQL as a refusal (a refusal would
// make findPoison dead-letter it too).
func TestTrickyRecordsNeitherStopNorDeadLetterValidCommands(t *testing.T) {
	w, st := newApplier(t)
	const reply = "locks.replies.t"
	session := strings.Repeat("é", 64) // 128 bytes, the most a session_id takes
	records := []struct {
		name, value string
		// deadLetter: the start of the copy's error header; "": no copy.
		deadLetter string
	}{
		{name: "metadata 2,040 levels deep", value: `{"operation":"acquire","lock_name":"deep","owner_id":"o","owner_metadata":{"a":` +
			strings.Repeat("[", 2040) + strings.Repeat("]", 2040) + `}}`},
		{name: "a day's lease", value: `{"operation":"acquire","lock_name":"held","owner_id":"h","lease_duration":86400}`},
		{name: "wait_timeout 1e-300: queued, then LOCK_TIMEOUT",
			value: `{"operation":"acquire","lock_name":"held","owner_id":"w","wait_timeout":1e-300,"reply_to":"` + reply + `"}`},
		{name: "lock_delay 1e-300 and the smallest max_hold",
			value: `{"operation":"acquire","lock_name":"held","owner_id":"w2","wait_timeout":3600,"lease_duration":0.1,"lock_delay":1e-300,"max_hold":0.1}`},
		{name: "fencing_token -2^63", value: `{"operation":"release","lock_name":"held","owner_id":"h","fencing_token":-9223372036854775808}`},
		{name: "fencing_token 2^63-1",
			value: `{"operation":"extend","lock_name":"held","owner_id":"h","fencing_token":9223372036854775807,"extension_duration":86400}`},
		{name: "cleanup max_age ten years", value: `{"operation":"cleanup","lock_name":"*","namespace":"n","max_age_seconds":315360000}`},
		{name: "cleanup max_age 1e-300", value: `{"operation":"cleanup","lock_name":"*","max_age_seconds":1e-300}`},
		{name: "session_id of 128 multibyte bytes", value: `{"operation":"session_open","session_id":"` + session + `","owner_id":"o","ttl":3600}`},
		{name: "an unknown session", value: `{"operation":"acquire","lock_name":"s","owner_id":"o","session_id":"nosuch"}`},
		{name: "metadata numbers at their edges", value: `{"operation":"acquire","lock_name":"s","owner_id":"o","session_id":"` + session +
			`","owner_metadata":{"n":[1e308,-1e-999,0e-999]}}`},
		{name: "a reason of 1,024 control characters",
			value: `{"operation":"revoke","lock_name":"held","reason":"` + strings.Repeat(`\u0001`, 1024) + `"}`},
		{name: "multibyte lock_name and owner_id of 255 bytes, a DEL request_id of 128",
			value: `{"operation":"acquire","lock_name":"` + strings.Repeat("€", 85) + `","owner_id":"` + strings.Repeat("€", 85) +
				`","request_id":"` + strings.Repeat(`\u007f`, 128) + `"}`},
		{name: "control characters and LIKE patterns in owner_id",
			value: `{"operation":"acquire","lock_name":"ctl","owner_id":"\u0001\t\n\\%_","request_id":"dup"}`},
		{name: "the same request_id again", value: `{"operation":"release","lock_name":"ctl","owner_id":"\u0001\t\n\\%_","request_id":"dup"}`},
		{name: "a 60 KB owner_id on a query", value: `{"operation":"query","lock_name":"ctl","owner_id":"` + strings.Repeat("x", 60000) + `"}`},
		{name: "* on acquire", value: `{"operation":"acquire","lock_name":"*","owner_id":"o"}`,
			deadLetter: topics.CodeInvalidRequest + `: lock_name "*" is only for cleanup`},
		{name: "v of 10^20", value: `{"v":99999999999999999999,"operation":"acquire","reply_to":"` + reply + `"}`,
			deadLetter: topics.CodeUnsupportedVersion + ": "},
		{name: "JSON 10,001 levels deep", value: `{"a":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
			deadLetter: topics.CodeInvalidRequest + ": not a valid command"},
		{name: "the largest limit", value: `{"operation":"acquire","lock_name":"lim","owner_id":"o","limit":10000,"wait_timeout":1}`},
		{name: "another limit", value: `{"operation":"acquire","lock_name":"lim","owner_id":"o2","limit":9999,"wait_timeout":1}`},
		{name: "session_keepalive", value: `{"operation":"session_keepalive","session_id":"` + session + `","owner_id":"o"}`},
		{name: "session_close", value: `{"operation":"session_close","session_id":"` + session + `","owner_id":"o"}`},
		{name: "a reply_to of 249 characters", value: `{"operation":"acquire","lock_name":"a","owner_id":"o","reply_to":"locks.replies.` +
			strings.Repeat("r", 249-len("locks.replies.")) + `"}`},
		{name: "a slash in the namespace", value: `{"operation":"acquire","namespace":"a/b","lock_name":"c","owner_id":"o"}`},
		{name: "a slash in the lock_name (the same key)", value: `{"operation":"acquire","namespace":"a","lock_name":"b/c","owner_id":"o"}`},
		{name: "a query of that key", value: `{"operation":"query","namespace":"a","lock_name":"b/c"}`},
	}
	topic := topics.DefaultNames().Commands
	// run applies values at offsets from.. of p in one batch, with a valid
	// acquire after them.
	run := func(t *testing.T, p *partition, from int64, values ...string) {
		t.Helper()
		var recs []*kgo.Record
		for i, v := range values {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p.id, Offset: from + int64(i), Key: []byte("k"), Value: []byte(v)})
		}
		after := fmt.Sprintf("after-%d-%d", p.id, from)
		recs = append(recs, &kgo.Record{Topic: topic, Partition: p.id, Offset: from + int64(len(values)),
			Value: []byte(`{"operation":"acquire","lock_name":"` + after + `","owner_id":"o"}`)})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		p.pending.Add(1)
		w.applySegments(ctx, []segment{{p: p, records: recs, polledAt: time.Now()}})
		require.NoError(t, ctx.Err(), "batch at %d..%d never committed", from, from+int64(len(values)))
		require.Equal(t, from+int64(len(recs)), storedOffset(t, st, p.id), "the offset past every record")
		require.EqualValues(t, 1, acquisitions(t, st, after), "the command after them applied")
	}
	// Each in its own batch on partition 0 (at even offsets), then all in
	// one on partition 1.
	p0, p1 := w.newPartition(w.hard, 0), w.newPartition(w.hard, 1)
	var all []string
	want := map[string]string{} // partition@offset -> error header's start
	for i, r := range records {
		t.Run(r.name, func(t *testing.T) { run(t, p0, 2*int64(i), r.value) })
		all = append(all, r.value)
		if r.deadLetter != "" {
			want[fmt.Sprintf("0@%d", 2*i)] = r.deadLetter
			want[fmt.Sprintf("1@%d", i)] = r.deadLetter
		}
	}
	run(t, p1, 0, all...)

	copies := outboxRows(t, st, topics.DefaultNames().DeadLetter, 0)
	got := map[string]string{}
	for _, c := range copies {
		part, _ := c.header(topics.HeaderSourcePartition)
		off, _ := c.header(topics.HeaderSourceOffset)
		e, _ := c.header(topics.HeaderError)
		at := part + "@" + off
		require.NotContains(t, got, at, "dead-lettered twice")
		got[at] = e
	}
	require.Len(t, got, len(want), "the copies: %v", got)
	for at, prefix := range want {
		require.True(t, strings.HasPrefix(got[at], prefix), "%s: %q", at, got[at])
	}
	// The answers to the reply_to both runs give, in order.
	var answers []string
	for _, r := range outboxRows(t, st, reply, 0) {
		ev, err := topics.DecodeEvent(r.value)
		require.NoError(t, err)
		answers = append(answers, ev.Type+" "+ev.ErrorCode)
	}
	once := []string{topics.TypeQueued + " ", topics.TypeRejected + " " + topics.CodeLockTimeout,
		topics.TypeRejected + " " + topics.CodeUnsupportedVersion}
	require.Equal(t, append(once, once...), answers)
}
