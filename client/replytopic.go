package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/omninode/lockworker/kafkapubsub"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// replyState is what the reply reader knows of its topic beyond its
// records: it explains a command left unanswered (replyTrouble), and tells
// followReplyTopic that the reader was refused the topic's ID.
type replyState struct {
	// lookUp makes followReplyTopic look the topic up at once (capacity
	// 1: requests pile up into one).
	lookUp chan struct{}

	mu sync.Mutex
	// refused says the reader was refused the topic's ID
	// (UNKNOWN_TOPIC_ID) since the last look-up.
	refused bool
	// next is where the reader resumes each partition it reads when
	// followReplyTopic drops the topic and adds it back: past the last
	// record read, or where it was given the partition if it read none
	// since. gen counts those drops: a poll that began before one does
	// not move next (its records may be of what was dropped), so a
	// partition may resume before records read already, which are read
	// again, harmlessly (see followReplyTopic).
	next map[int32]kgo.Offset
	gen  int
	// missing is since when look-ups find the topic missing (zero: found).
	missing time.Time
	// fetchErr is the reader's latest fetch error, at fetchErrAt.
	fetchErr   error
	fetchErrAt time.Time
	// undecodable is the latest record read that did not decode as an
	// event and whose request_id could not be read (Client.undecodable),
	// at undecodableAt.
	undecodable   error
	undecodableAt time.Time
	// undecodableLogged is when an undecodable record was last logged;
	// undecodableUnlogged counts those read since, not logged.
	undecodableLogged   time.Time
	undecodableUnlogged int
}

// lookUpReplyTopic has followReplyTopic look the reply topic up at once.
func (c *Client) lookUpReplyTopic() { lookUpNow(c.reply.lookUp) }

// lookUpNow has a follower (followReplyTopic, followMoves) look its topic
// up at once: now is its look-up channel, of capacity 1, so that requests
// pile up into one.
func lookUpNow(now chan<- struct{}) {
	select {
	case now <- struct{}{}:
	default:
	}
}

// topicInstance is the instance of a topic that a kgo reader (the reply
// reader, a watch's) was given, as its follower (followReplyTopic,
// followMoves) knows it: n partitions (0: none, the topic dropped from
// the reader), of ID id (zero: unknown). kgo's reader fetches a topic by
// its ID and never adopts another one by itself: once the topic is
// deleted (and maybe created again) it refuses the old one's fetches with
// UNKNOWN_TOPIC_ID for good, until the topic is dropped from it
// (PurgeTopicsFromClient) and added back.
type topicInstance struct {
	n  int
	id kadm.TopicID
}

// topicID is the ID of topic, whose offsets were just listed, as a
// look-up finds it (zero: it cannot be told): the metadata loaded to list
// them answers (kgo caches it), so it is the ID of the instance listed,
// against which its follower tells the topic created again.
func (c *Client) topicID(ctx context.Context, topic string) kadm.TopicID {
	tds, err := kadm.NewClient(c.prod).ListTopics(ctx, topic)
	if err != nil || tds[topic].Err != nil {
		return kadm.TopicID{}
	}
	return tds[topic].ID
}

// instanceChange is what a look-up of a topic says of the instance a
// reader was given (topicInstance.look).
type instanceChange int

const (
	// instanceKept: the same instance (or the look-up failed); partitions
	// may have been added.
	instanceKept instanceChange = iota
	// instanceMissing: the topic is missing (deleted) and the reader was
	// refused its ID: the follower drops it from the reader.
	instanceMissing
	// instanceAgain: the topic was created again (another ID): the
	// follower drops the old one and reads the new one from its start.
	instanceAgain
	// instanceBack: the topic is there again after instanceMissing: the
	// follower reads it from its start.
	instanceBack
)

// look says what look-up td of the topic says of the instance, given
// whether the reader was refused its ID since the last look-up, and
// takes it on: the instance is then the one found, with its partition
// count, or none after instanceMissing. was is the partition count before:
// the follower reads those from it on from their start (all of them, 0,
// but for instanceKept).
func (t *topicInstance) look(td kadm.TopicDetail, refused bool) (change instanceChange, was int) {
	was = t.n
	var none kadm.TopicID
	switch {
	case errors.Is(td.Err, kerr.UnknownTopicOrPartition):
		// Dropped only when the reader is refused its ID too: a broker
		// just restarted may answer a topic missing once.
		if refused && t.n > 0 {
			*t = topicInstance{}
			return instanceMissing, 0
		}
		return instanceKept, was
	case td.Err != nil:
		return instanceKept, was
	case t.n == 0:
		change, was = instanceBack, 0
	case t.id != none && td.ID != none && td.ID != t.id:
		change, was = instanceAgain, 0
	}
	if change != instanceKept {
		t.n = 0
	}
	if t.id == none || change != instanceKept {
		t.id = td.ID
	}
	t.n = max(t.n, len(td.Partitions))
	return change, was
}

// replyFetchFailed records an error kgo returned to the reply reader's
// poll. UNKNOWN_TOPIC_ID (returned once it lasted: kgo strips the first
// few, which a topic just created may give) says the topic the reader
// reads by its ID is gone, deleted (and maybe created again, under a new
// ID that kgo does not adopt by itself): the topic is looked up at once.
func (c *Client) replyFetchFailed(e kgo.FetchError) {
	refused := errors.Is(e.Err, kerr.UnknownTopicID)
	c.reply.mu.Lock()
	c.reply.fetchErr = fmt.Errorf("fetching partition %d of %q: %w", e.Partition, e.Topic, e.Err)
	c.reply.fetchErrAt = time.Now()
	c.reply.refused = c.reply.refused || refused
	c.reply.mu.Unlock()
	if refused {
		c.lookUpReplyTopic()
	}
}

// replyRead notes where the reader resumes each partition it read in fs,
// a poll that began at drop generation gen (replyState.next).
func (c *Client) replyRead(fs kgo.Fetches, gen int) {
	c.reply.mu.Lock()
	defer c.reply.mu.Unlock()
	if gen != c.reply.gen {
		return
	}
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if n := len(p.Records); n > 0 && p.Topic == c.replyTopic {
			c.reply.next[p.Partition] = kgo.NewOffset().At(p.Records[n-1].Offset + 1)
		}
	})
}

// replyGen is the reader's drop generation (replyState.gen).
func (c *Client) replyGen() int {
	c.reply.mu.Lock()
	defer c.reply.mu.Unlock()
	return c.reply.gen
}

// replyStuckAfter is how long UNKNOWN_TOPIC_ID refusals of the reply
// reader go on (none further apart), while every look-up finds the topic
// with the ID the reader was given, before followReplyTopic drops the
// topic from the reader and adds it back. Longer than kgo's metadata cache
// the look-ups answer from (the producing client's MetadataMinAge: 1 s as
// New sets it, kgo's default 5 s for a Config.Client that sets none), so
// that the look-up that decides was answered after the refusals began.
const replyStuckAfter = 6 * time.Second

// replyTrouble is what the reply reader knows that may explain a command
// left unanswered since start: its topic missing, and the reader's latest
// fetch error and undecodable record (its answer, maybe, whose request_id
// could not be read) if they came since start; nil: nothing.
func (c *Client) replyTrouble(start time.Time) error {
	c.reply.mu.Lock()
	defer c.reply.mu.Unlock()
	var missing, failed, undecodable error
	if !c.reply.missing.IsZero() {
		missing = fmt.Errorf("reply topic %q not found since %s (deleted?): replies resume once it is created again, by the workers' relay (AUTO_CREATE_REPLY_TOPICS) or another client.New of this requester",
			c.replyTopic, c.reply.missing.Format(time.RFC3339))
	}
	if c.reply.fetchErr != nil && !c.reply.fetchErrAt.Before(start) {
		failed = fmt.Errorf("reading it failed at %s: %w", c.reply.fetchErrAt.Format(time.RFC3339), c.reply.fetchErr)
	}
	if c.reply.undecodable != nil && !c.reply.undecodableAt.Before(start) {
		undecodable = fmt.Errorf("read at %s: %w", c.reply.undecodableAt.Format(time.RFC3339), c.reply.undecodable)
	}
	return joinLine(joinLine(missing, failed), undecodable)
}

// withReplyTrouble is err, a command left unanswered since start, or a
// lease or session lost at its deadline for want of an answer since the
// last one, read at start, with what the reply reader knows that may
// explain it (replyTrouble): the reply topic missing (deleted, until the
// workers' relay creates it again, seconds later), a fetch error.
func (c *Client) withReplyTrouble(err error, start time.Time) error {
	if trouble := c.replyTrouble(start); trouble != nil {
		return fmt.Errorf("%w (%w)", err, trouble)
	}
	return err
}

// joinLine is a and b (either may be nil) on one line, not errors.Join's
// two.
func joinLine(a, b error) error {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return fmt.Errorf("%w; %w", a, b)
}

// followReplyTopic keeps the reply reader on the reply topic as it is now,
// until ctx ends. The reader was given the topic's n partitions, of ID id
// (zero: unknown), when New listed them. It looks the topic up
// (lookUpTopic, as Watch does the lock state topic) every
// partitionCheckInterval, at once when the reader is refused the topic's
// ID, and whenever a command is sent again for want of an answer
// (exchange), which may be waiting on a partition or an instance of the
// topic the reader does not read:
//
//   - partitions added: the reader reads the new ones from their start;
//   - the topic created again (another ID): the reader drops the old one
//     (kgo never adopts a new ID by itself: it refuses the old one's
//     fetches with UNKNOWN_TOPIC_ID for good) and reads every partition of
//     the new one from its start;
//   - the topic missing (deleted, not created again yet) while the reader
//     is refused its ID: the reader drops it, and reads it from its start
//     once a look-up finds it again;
//   - the topic there, with the ID the reader was given, while the reader
//     is refused its ID for replyStuckAfter: the reader drops it and adds
//     it back, each partition where it was (replyState.next). kgo's reader
//     may hold another ID than the look-ups find (a broker lagging a quick
//     deletion and creation answered its own metadata request), and then
//     refuses every fetch until the topic is dropped and added back.
//
// From their start, as everything in them was written after New listed
// the topic, so nothing is read twice; and nothing written before the
// reader noticed is missed: a reply to a command still waiting (the one
// that had the workers' relay create the topic again, say) reaches its
// caller. Where it was, rather than from the start, as the instance is the
// one read already: reading it again would be harmless (a reply reaches
// only a call still waiting for its request_id, and a lease end only the
// lease of its fencing token, never reused), but needless. A look-up may
// answer from kgo's metadata cache, up to the producing client's
// MetadataMinAge old (1 s as New sets it; kgo's default 5 s).
func (c *Client) followReplyTopic(ctx context.Context, n int, id kadm.TopicID) {
	topic := c.replyTopic
	inst := topicInstance{n: n, id: id}
	// refusedFrom is when the refusals that go on, while the topic is
	// there, began to be seen; refusedLast the last look-up that saw one.
	var refusedFrom, refusedLast time.Time
	c.lookUpTopic(ctx, topic, c.reply.lookUp, func(td kadm.TopicDetail) {
		missing := errors.Is(td.Err, kerr.UnknownTopicOrPartition)
		c.reply.mu.Lock()
		refused := c.reply.refused
		c.reply.refused = false
		noticed := missing && c.reply.missing.IsZero()
		switch {
		case noticed:
			c.reply.missing = time.Now()
		case td.Err == nil:
			c.reply.missing = time.Time{}
		}
		c.reply.mu.Unlock()
		if noticed {
			c.logReply(kgo.LogLevelWarn, "lockworker client: the reply topic is missing (deleted?): no reply can be read until it is created again")
		}
		had := inst.n
		change, from := inst.look(td, refused)
		if missing {
			refusedFrom, refusedLast = time.Time{}, time.Time{}
		}
		switch {
		case change == instanceMissing:
			c.dropReplyTopic()
			return
		case td.Err != nil:
			return
		}
		now := time.Now()
		if refused {
			if refusedFrom.IsZero() || now.Sub(refusedLast) > replyStuckAfter {
				refusedFrom = now
			}
			refusedLast = now
		}
		stuck := change == instanceKept && had > 0 && refused && now.Sub(refusedFrom) >= replyStuckAfter
		add := map[int32]kgo.Offset{}
		switch {
		case change == instanceAgain:
			c.dropReplyTopic()
			c.logReply(kgo.LogLevelWarn, "lockworker client: the reply topic was created again: reading its new instance from its start", "partitions", len(td.Partitions))
		case stuck:
			add = c.dropReplyTopic()
			c.logReply(kgo.LogLevelWarn, "lockworker client: the reply reader is refused the reply topic's ID although the topic is there: dropping it and reading it again from where it was",
				"refused_for", now.Sub(refusedFrom).Round(time.Second))
		case change == instanceBack:
			c.logReply(kgo.LogLevelWarn, "lockworker client: the reply topic is there again: reading it from its start", "partitions", len(td.Partitions))
		case len(td.Partitions) > from:
			c.logReply(kgo.LogLevelInfo, "lockworker client: partitions were added to the reply topic: reading the new ones from their start",
				"partitions", len(td.Partitions), "were", from)
		}
		if change == instanceAgain || stuck {
			refusedFrom, refusedLast = time.Time{}, time.Time{}
		}
		for p := range td.Partitions {
			if int(p) >= from {
				add[p] = kgo.NewOffset().AtStart()
			}
		}
		if len(add) == 0 {
			return
		}
		c.reply.mu.Lock()
		maps.Copy(c.reply.next, add)
		c.reply.mu.Unlock()
		c.cons.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: add})
	})
}

// dropReplyTopic drops the reply topic from the reader, and returns where
// the reader was in each partition it read (replyState.next).
func (c *Client) dropReplyTopic() map[int32]kgo.Offset {
	c.reply.mu.Lock()
	c.reply.gen++
	next := c.reply.next
	c.reply.next = map[int32]kgo.Offset{}
	c.reply.mu.Unlock()
	c.cons.PurgeTopicsFromClient(c.replyTopic)
	return next
}

// logReply logs, about the reply topic, to the logger of the reader's
// Kafka client (Config.KafkaOpts' kgo.WithLogger, or Config.Client's), if
// it has one.
func (c *Client) logReply(level kgo.LogLevel, msg string, keyvals ...any) {
	kafkapubsub.LogTo(c.cons, level, msg, append([]any{"topic", c.replyTopic}, keyvals...)...)
}
