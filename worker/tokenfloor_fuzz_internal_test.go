package worker

import (
	"bytes"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/topics"
)

// FuzzTokenFloorRecord reads any record of the lock.acquired topic (a
// value, plain or in the outbox's compacted form, and two headers) as the
// token floor does (publishedGrants, countGrants): anyone with Write on the
// topic chooses its bytes. Nothing panics. A record the floor cannot read
// as a lock.acquired event (a value that does not expand or decode,
// another type, no lock_info, a ce_type header of another type) is skipped:
// no grant, and the floor as it was. Every token taken is above 0 and
// written in the value, and the floor becomes the highest of them at most
// MaxPlausibleToken. Then two events as the relay publishes them, of any
// locks, owners and one token: each gives its tokens back, of another type
// none, and the token is reported granted twice exactly when their locks
// or owners differ. `go test` runs the seeds; `go test -fuzz
// FuzzTokenFloorRecord ./worker` explores.
func FuzzTokenFloorRecord(f *testing.F) {
	grantValue := func(token int64) []byte {
		return relayed(f, topics.TypeAcquired, grantee{"ns", "a", "o"}, token, nil, false).Value
	}
	plain := grantValue(7)
	compacted := topics.CompactEvent(nil, plain)
	const acquired = `{"v":1,"type":"lock.acquired","lock_info":`
	for _, s := range []struct {
		value  []byte
		k1, k2 string
		v1, v2 []byte
	}{
		{value: plain},
		{value: compacted},
		{value: compacted[:len(compacted)/2]},
		{value: []byte{0x01}},
		{value: topics.CompactLockState(nil, plain)},
		{value: plain, k1: topics.HeaderCEType, v1: []byte(topics.TypeAcquired)},
		{value: plain, k1: topics.HeaderCEType, v1: []byte(topics.TypeReleased)},
		{value: plain, k1: topics.HeaderCEType, v1: []byte(topics.TypeAcquired), k2: topics.HeaderCEType, v2: []byte(topics.TypeStatus)},
		{value: plain, k1: strings.ToUpper(topics.HeaderCEType), v1: []byte(topics.TypeReleased)},
		{value: plain, k1: topics.HeaderCEType, v1: nil},
		{value: grantValue(MaxPlausibleToken)},
		{value: grantValue(MaxPlausibleToken + 1)},
		{value: grantValue(math.MaxInt64)},
		{value: grantValue(-1)},
		{value: nil},
		{value: []byte{}},
		{value: []byte("null")},
		{value: []byte("[]")},
		{value: []byte("\xff\xfe")},
		{value: []byte(`{"type":"lock.acquired"}`)},
		{value: []byte(acquired + `null}`)},
		{value: []byte(acquired + `{}}`)},
		{value: []byte(acquired + `{"fencing_token":9223372036854775808}}`)},
		{value: []byte(acquired + `{"fencing_token":1e3}}`)},
		{value: []byte(acquired + `{"fencing_token":5.0}}`)},
		{value: []byte(acquired + `{"fencing_token":"5"}}`)},
		{value: []byte(acquired + `{"fencing_token":0,"holders":[{"fencing_token":-5},{"fencing_token":6},{"fencing_token":4503599627370497}]}}`)},
		{value: []byte(acquired + `{"fencing_token":5},"type":"lock.released"}`)},
		{value: []byte(`{"type":"lock.released","lock_info":{"fencing_token":5},"type":"lock.acquired"}`)},
		{value: []byte(`{"TYPE":"lock.acquired","Lock_Info":{"Fencing_Token":5}}`)},
		{value: []byte(acquired + `{"fencing_token":5},"v":"x"}`)},
		{value: []byte(acquired + `{"fencing_token":5},"occurred_at":"yesterday"}`)},
		{value: []byte(acquired + `{"fencing_token":5}} trailing`)},
		{value: []byte(acquired + strings.Repeat(`[`, 100_000) + `}`)},
	} {
		f.Add(s.value, s.k1, s.v1, s.k2, s.v2, int64(0), int64(7), int64(8), "ns", "a", "o", "ns", "a", "o", false)
	}
	// Locks and owners: the same lease published twice, another owner's,
	// another lock's, and locks whose namespace and name join alike
	// (topics.LockKey is not unique).
	for _, s := range []struct{ ns1, name1, owner1, ns2, name2, owner2 string }{
		{"ns", "a", "o", "ns", "a", "o"},
		{"ns", "a", "o", "ns", "a", "p"},
		{"ns", "a", "o", "ns", "b", "o"},
		{"ns", "a", "o", "", "a", "o"},
		{"a", "b/c", "o", "a/b", "c", "o"},
		{"", "a/b", "o", "a", "b", "o"},
		{"", "/a", "o", "/", "a", "o"},
		{"\xff", "é", "\x00", "\xfe", "é", "\x00"},
	} {
		for _, compact := range []bool{false, true} {
			f.Add(plain, "", []byte(nil), "", []byte(nil), int64(5), int64(9), int64(3), s.ns1, s.name1, s.owner1, s.ns2, s.name2, s.owner2, compact)
		}
	}
	f.Add(plain, "", []byte(nil), "", []byte(nil), int64(MaxPlausibleToken), int64(MaxPlausibleToken+1), int64(MaxPlausibleToken), "ns", "a", "o", "ns", "a", "p", false)
	f.Add(plain, "", []byte(nil), "", []byte(nil), int64(math.MaxInt64), int64(math.MinInt64), int64(0), "ns", "a", "o", "ns", "a", "p", true)
	w := &Worker{log: zerolog.Nop()}
	f.Fuzz(func(t *testing.T, value []byte, k1 string, v1 []byte, k2 string, v2 []byte, highest, token, other int64,
		ns1, name1, owner1, ns2, name2, owner2 string, compact bool) {
		// The floor so far: none, or a plausible token read before.
		floor := min(max(highest, 0), MaxPlausibleToken)
		rec := &kgo.Record{Topic: "locks.acquired", Value: value}
		for _, h := range []kgo.RecordHeader{{Key: k1, Value: v1}, {Key: k2, Value: v2}} {
			if h.Key != "" || len(h.Value) > 0 {
				rec.Headers = append(rec.Headers, h)
			}
		}
		checkAnyRecord(t, w, rec, floor)

		// Events as the relay publishes them. JSON carries strings as
		// UTF-8, so the locks and owners read back are the valid ones.
		valid := func(s string) string { return strings.ToValidUTF8(s, "?") }
		l1 := grantee{valid(ns1), valid(name1), valid(owner1)}
		l2 := grantee{valid(ns2), valid(name2), valid(owner2)}
		r1 := relayed(t, topics.TypeAcquired, l1, token, nil, compact)
		r2 := relayed(t, topics.TypeAcquired, l2, token, []topics.Holder{{OwnerID: l2.owner, FencingToken: other}}, compact)
		var want1, want2 []int64
		if token > 0 {
			// lock_info's and its holder's
			want1, want2 = []int64{token, token}, []int64{token, token}
		}
		if other > 0 {
			want2 = append(want2, other)
		}
		for _, c := range []struct {
			r    *kgo.Record
			l    grantee
			want []int64
		}{{r1, l1, want1}, {r2, l2, want2}} {
			gs := publishedGrants(c.r)
			require.Equal(t, c.want, tokensOf(gs), "the tokens of an event as the relay publishes it")
			for _, g := range gs {
				require.Equal(t, c.l.owner, g.owner)
			}
		}
		got := TokenFloor{Highest: floor}
		granted := map[int64]grant{}
		w.countGrants(r1, granted, &got)
		w.countGrants(r2, granted, &got)
		want := floor
		for _, tok := range append(want1, want2...) {
			if tok <= MaxPlausibleToken {
				want = max(want, tok)
			}
		}
		require.Equal(t, want, got.Highest)
		twice := token > 0 && token <= MaxPlausibleToken && l1 != l2
		require.Equal(t, twice, slices.Contains(got.GrantedTwice, token),
			"token %d granted to %+v and %+v: reported granted twice exactly when their locks or owners differ", token, l1, l2)
		for _, typ := range []string{topics.TypeStatus, topics.TypeReleased} {
			require.Empty(t, publishedGrants(relayed(t, typ, l1, token, nil, compact)), "%s is not a grant", typ)
		}
	})
}

// checkAnyRecord reads rec as the token floor does, on a floor of floor so
// far: a record it cannot read gives no grant and leaves the floor as it
// was; what it reads is in the record.
func checkAnyRecord(t *testing.T, w *Worker, rec *kgo.Record, floor int64) {
	grants := publishedGrants(rec)
	got := TokenFloor{Highest: floor}
	granted := map[int64]grant{}
	plausible := w.countGrants(rec, granted, &got)

	// What the floor reads: an event of the lock.acquired type, by its
	// value and by every ce_type header it has.
	readable := !slices.ContainsFunc(rec.Headers, func(h kgo.RecordHeader) bool {
		return h.Key == topics.HeaderCEType && string(h.Value) != topics.TypeAcquired
	})
	v, err := topics.ExpandEvent(rec.Value)
	readable = readable && err == nil
	e, err := topics.DecodeEvent(v)
	readable = readable && err == nil && e.Type == topics.TypeAcquired && e.LockInfo != nil
	if !readable {
		require.Empty(t, grants, "a record the floor cannot read gives no grant")
		require.Equal(t, TokenFloor{Highest: floor}, got, "a record the floor cannot read leaves it as it was")
		require.Empty(t, granted)
		require.False(t, plausible)
		return
	}
	require.LessOrEqual(t, len(grants), 1+len(e.LockInfo.Holders), "a token of lock_info's and of each holder's at most")
	want := floor
	for _, g := range grants {
		require.Positive(t, g.token)
		require.True(t, bytes.Contains(v, []byte(strconv.FormatInt(g.token, 10))), "token %d is not written in the record", g.token)
		if g.token <= MaxPlausibleToken {
			want = max(want, g.token)
		}
	}
	require.Equal(t, want, got.Highest, "the floor is the highest plausible token read")
	require.Equal(t, slices.ContainsFunc(grants, func(g grant) bool { return g.token <= MaxPlausibleToken }), plausible,
		"a record counts when it has a plausible token")
	require.LessOrEqual(t, got.Highest, int64(MaxPlausibleToken))
}

// grantee is whose a fuzzed grant is: its lock and owner.
type grantee struct{ namespace, lockName, owner string }

// tokensOf are the tokens of gs, in order.
func tokensOf(gs []grant) []int64 {
	var ts []int64
	for _, g := range gs {
		ts = append(ts, g.token)
	}
	return ts
}

// relayed is a record of an event of type typ about l's lease of token
// (with holders besides) as the relay publishes it: its CloudEvents
// headers, the value plain or compacted.
func relayed(t testing.TB, typ string, l grantee, token int64, holders []topics.Holder, compact bool) *kgo.Record {
	at := topics.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e := topics.NewEvent(typ, topics.OpAcquire, "r", at.Time)
	e.LockInfo = &topics.LockInfo{Namespace: l.namespace, LockName: l.lockName, OwnerID: l.owner, Status: topics.StatusAcquired,
		FencingToken: token, AcquiredAt: &at, ExpiresAt: &at, Mode: topics.ModeExclusive, Limit: 1,
		Holders: append([]topics.Holder{{OwnerID: l.owner, Mode: topics.ModeExclusive, FencingToken: token, AcquiredAt: at, ExpiresAt: at}}, holders...)}
	v, err := e.Encode()
	require.NoError(t, err)
	if compact {
		v = topics.CompactEvent(nil, v)
	}
	r := &kgo.Record{Topic: "locks.acquired", Value: v}
	for _, h := range topics.EventHeaders(e, "lockworker/fuzz") {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	return r
}
