package worker

import (
	"context"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// replyTopics bounds the reply topics commands can make the relay create:
// a command may name a reply topic that exists, or a new one while fewer
// than max topics exist under the reply prefix. A topic not known yet is
// looked up on its own, so one its requester created just before producing
// the command is found (the SDK creates its reply topic in New and may
// send at once), within bounds (maxLookups, missingFor). The count is of
// the topics known: seen on the brokers (looked up, or listed) or allowed
// here as new. All topics are listed, replacing the set, at the first new
// topic, then once a minute (pruneEvery), so that topics requesters
// created that no command named count, and whenever the count reaches max
// (at most once a second), so that topics deleted since no longer do: a
// listing names every topic of the cluster with its partitions, and read
// for each new requester's first command, as it was, it held appliers'
// transactions open for seconds once 10,000 topics existed. Topics
// requesters create between two listings may take the total under the
// prefix past max by their number. Both ask the brokers
// directly: the client's metadata cache, which kadm's listings use, can be
// seconds old. A topic allowed here as new counts at once, and for
// pendingCreation after even where a listing does not show it yet, so no
// stream of new reply_to values, however fast, makes more than max through
// one replica (each replica keeps its own count, and sees the topics the
// others created at its next listing: replicas together can make up to max
// each within a minute).
type replyTopics struct {
	cl     kmsg.Requestor
	prefix string
	max    int
	create bool // AUTO_CREATE_REPLY_TOPICS: without it only existing ones

	// mu serializes the lookups of topics not known (and guards the
	// fields below it): a one-slot channel, so that waiting for it ends
	// with the caller's context (an applier holding its transaction open
	// bounds its lookups, openLookups). knownMu guards known alone, and
	// every access to it (has, count, read), so a known topic is allowed
	// without waiting for a lookup of another in flight, and a caller
	// whose bound passed behind one can still count a topic.
	mu      chan struct{}
	knownMu sync.RWMutex
	known   map[string]time.Time // when allowed here as new; zero: seen on the brokers
	missing map[string]time.Time // when the brokers last said it does not exist
	listed  time.Time            // when all topics were last read
	pruned  time.Time            // without creation: when a lookup last read them all (pruneEvery)
	failed  time.Time            // when the brokers last failed to answer
	second  time.Time            // the second lookups are counted in
	lookups int                  // topics looked up in it
}

// Bounds on the lookups of topics not known: a topic the brokers said is
// missing is not asked about again for missingFor, nor more than
// maxLookups topics in a second (a stream of commands naming missing
// topics would otherwise cost a broker round trip each, which every
// applier waits for): beyond it, the list of all topics, read at most once
// a second, answers. At most maxMissing answers are kept. pendingCreation
// is how long a topic allowed as new counts without a listing showing it:
// the relay creates it when it first publishes there.
const (
	missingFor      = 100 * time.Millisecond
	maxLookups      = 200
	maxMissing      = 10000
	pendingCreation = time.Minute
	// pruneEvery: how often a lookup of a topic not known also reads all
	// topics, counting those created since and dropping those deleted.
	pruneEvery = time.Minute
)

func newReplyTopics(cl kmsg.Requestor, prefix string, max int, create bool) *replyTopics {
	return &replyTopics{cl: cl, prefix: prefix, max: max, create: create, mu: make(chan struct{}, 1),
		known: map[string]time.Time{}, missing: map[string]time.Time{}, pruned: time.Now()}
}

// allow reports whether a command may name topic as its reply_to, and how
// many reply topics there are. Kafka's trouble does not refuse commands:
// for a second after the brokers failed to answer none is asked again, and
// a topic not known is allowed as if it existed (its events are published,
// or parked where it does not) or, where topics may be created, as a new
// one.
func (rt *replyTopics) allow(ctx context.Context, topic string) (bool, int) {
	if ok, n := rt.has(topic); ok {
		return true, n
	}
	if !rt.lock(ctx) {
		// The caller's bound passed while another lookup ran: as when
		// the brokers do not answer.
		if !rt.create {
			_, n := rt.has(topic)
			return true, n
		}
		return rt.count(topic, time.Now())
	}
	defer func() { <-rt.mu }()
	if ok, n := rt.has(topic); ok { // looked up meanwhile
		return true, n
	}
	now := time.Now()
	troubled := now.Sub(rt.failed) < time.Second
	if !troubled && now.Sub(rt.missing[topic]) >= missingFor {
		if rt.mayLookUp(now) {
			troubled = !rt.read(ctx, topic)
			if !troubled {
				if len(rt.missing) >= maxMissing {
					clear(rt.missing)
				}
				rt.missing[topic] = now
			}
		} else {
			troubled = !rt.list(ctx)
		}
		if ok, n := rt.has(topic); ok {
			delete(rt.missing, topic)
			return true, n
		}
	}
	if !rt.create {
		if !troubled && now.Sub(rt.pruned) >= pruneEvery {
			rt.pruned = now
			// Otherwise nothing lists them here, and the set keeps every
			// topic ever named, deleted ones too (reply topics come and go
			// with their requesters).
			rt.list(ctx)
		}
		_, n := rt.has(topic)
		return troubled, n
	}
	if !troubled && now.Sub(rt.listed) >= pruneEvery {
		rt.list(ctx)
	}
	if ok, n := rt.count(topic, now); ok || troubled {
		return ok, n
	}
	rt.list(ctx)
	return rt.count(topic, now)
}

// has reports whether topic is known, and how many are.
func (rt *replyTopics) has(topic string) (bool, int) {
	rt.knownMu.RLock()
	defer rt.knownMu.RUnlock()
	_, ok := rt.known[topic]
	return ok, len(rt.known)
}

// count allows topic as new at now, unless max are known already: it
// reports whether topic is known now, and how many are. Checked and added
// under knownMu in one step, so a caller allowing a topic without mu
// (allow's, behind another's lookup) cannot take the bound past max.
func (rt *replyTopics) count(topic string, now time.Time) (bool, int) {
	rt.knownMu.Lock()
	defer rt.knownMu.Unlock()
	if _, ok := rt.known[topic]; ok {
		return true, len(rt.known)
	}
	if len(rt.known) >= rt.max {
		return false, len(rt.known)
	}
	rt.known[topic] = now
	return true, len(rt.known)
}

// lock takes mu, and reports false when ctx ended first. A free mu is
// always taken, also with ctx done (read then fails at once): select
// would pick at random.
func (rt *replyTopics) lock(ctx context.Context) bool {
	select {
	case rt.mu <- struct{}{}:
		return true
	default:
	}
	select {
	case rt.mu <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// list reads all topics, at most once a second, and reports whether the
// brokers answered (true when it was not its time).
func (rt *replyTopics) list(ctx context.Context) bool {
	if time.Since(rt.listed) < time.Second {
		return true
	}
	rt.listed = time.Now()
	return rt.read(ctx)
}

// mayLookUp counts a lookup in now's second, and reports whether it is
// within maxLookups.
func (rt *replyTopics) mayLookUp(now time.Time) bool {
	if now.Sub(rt.second) >= time.Second {
		rt.second, rt.lookups = now, 0
	}
	rt.lookups++
	return rt.lookups <= maxLookups
}

// read adds the named topics that exist under the prefix to the set, or,
// when none is named, makes the set the topics under the prefix and those
// allowed as new within pendingCreation; it reports whether the brokers
// answered.
func (rt *replyTopics) read(ctx context.Context, names ...string) bool {
	began := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := metadata(rctx, rt.cl, names...)
	if err != nil {
		if ctx.Err() == nil {
			// The brokers', not the caller's bound (openLookups): the
			// other appliers do not ask them for a second either.
			rt.failed = time.Now()
		}
		return false
	}
	rt.knownMu.Lock()
	defer rt.knownMu.Unlock()
	if len(names) == 0 {
		maps.DeleteFunc(rt.known, func(_ string, allowed time.Time) bool { return began.Sub(allowed) >= pendingCreation })
	}
	answered := true
	for _, t := range resp.Topics {
		switch {
		case t.Topic == nil || t.ErrorCode == kerr.UnknownTopicOrPartition.Code:
		case t.ErrorCode == kerr.TopicAuthorizationFailed.Code:
			// Missing for this replica: one it may not describe it may
			// not write either (Kafka's WRITE implies DESCRIBE). Not the
			// brokers' trouble, which admits any topic for a second: a
			// command naming such a topic would otherwise open the check
			// for every other.
		case t.ErrorCode != 0 && t.ErrorCode != kerr.LeaderNotAvailable.Code: // being created: it exists
			// The brokers' trouble: only a topic asked for says whether
			// commands may name it.
			answered = answered && len(names) == 0
		case len(*t.Topic) > len(rt.prefix) && strings.HasPrefix(*t.Topic, rt.prefix):
			rt.known[*t.Topic] = time.Time{}
		}
	}
	if !answered {
		rt.failed = time.Now()
	}
	return answered
}

// metadata asks the brokers themselves about the named topics (all of them
// when none is named), not the client's cache, which kadm's listings answer
// from and which can be seconds old; it never creates a topic.
func metadata(ctx context.Context, cl kmsg.Requestor, names ...string) (*kmsg.MetadataResponse, error) {
	req := kmsg.NewPtrMetadataRequest() // AllowAutoTopicCreation false
	for _, name := range names {
		t := kmsg.NewMetadataRequestTopic()
		t.Topic = kmsg.StringPtr(name)
		req.Topics = append(req.Topics, t)
	}
	return req.RequestWith(ctx, cl)
}
