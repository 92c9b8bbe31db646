package worker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/topics"
)

// TokenFloorMargin is added to the highest fencing token read from the
// lock.acquired lifecycle topic to make the sequence's floor. The newest
// records of that topic need not hold the highest token granted: a grant
// is published to its reply topic and to the lifecycle topic separately (a
// grant whose lifecycle record was parked, or not yet published when the
// database lost it, reached its requester alone), and the relays of the
// commands partitions publish concurrently, so a lagging one can fill the
// newest records with older tokens. A million grants is far more than any
// of those windows holds, and costs nothing: tokens need not be consecutive,
// and the int64 sequence does not run out.
const TokenFloorMargin = 1_000_000

// tokenFloorRecords is how many of the newest records of each partition
// of the lifecycle topic RaiseTokenFloor reads: enough to find a recent
// grant behind records that are not grants, few enough to cost little at
// every start.
const tokenFloorRecords = 100

// tokenFloorTimeout bounds RaiseTokenFloor's reading of Kafka.
const tokenFloorTimeout = 30 * time.Second

// TokenFloor is what RaiseTokenFloor found and did.
type TokenFloor struct {
	// Topic is the topic read: Config.Names.Acquired.
	Topic string
	// Records is how many records were read; Highest the highest fencing
	// token among them (0: none).
	Records int
	Highest int64
	// Raised says the sequence's last token was below Highest, and it
	// was moved up to Floor (Highest + TokenFloorMargin); Was is its
	// last_value then.
	Raised bool
	Floor  int64
	Was    int64
	// Took is how long it all took.
	Took time.Duration
}

// RaiseTokenFloor keeps fencing tokens from being granted twice after
// PostgreSQL lost committed transactions (a restore, a point-in-time
// recovery, an asynchronous standby promoted without the primary's last
// commits): the fencing_tokens sequence then went back, while the grants
// it made in those transactions were published to Kafka and their holders
// use their tokens. It reads the newest records (tokenFloorRecords) of every
// partition of the lock.acquired lifecycle topic, takes the highest fencing
// token there, and when the sequence is behind it, would hand it out again,
// moves the sequence up to it plus TokenFloorMargin (store.RaiseTokenFloor),
// logging at error level that PostgreSQL is behind Kafka. A sequence at or
// above the highest token is left alone: in normal running it is just above
// the last token published, so a start costs no tokens and logs no loss. Run it at start, before the worker consumes
// (cmd/lockworker does, after EnsureTopics); docs/design.md "PostgreSQL
// lost transactions".
//
// A missing or empty topic, or none configured (Names.Acquired ""), does
// nothing. Its cost is two offset listings and at most tokenFloorRecords
// records per partition, read by a client of its own (Config.KafkaOpts,
// no group). Kafka not answering, or refusing the topic, is an error
// naming it, after at most tokenFloorTimeout.
func (w *Worker) RaiseTokenFloor(ctx context.Context) (TokenFloor, error) {
	began := time.Now()
	f := TokenFloor{Topic: w.cfg.Names.Acquired}
	if f.Topic == "" {
		return f, nil
	}
	ctx, cancel := context.WithTimeout(ctx, tokenFloorTimeout)
	defer cancel()
	var err error
	f.Records, f.Highest, err = w.highestPublishedToken(ctx, f.Topic)
	if err != nil {
		return f, fmt.Errorf("reading the newest fencing tokens of topic %q (lock.acquired; Read and Describe on it are needed): %w", f.Topic, err)
	}
	if f.Highest <= 0 {
		f.Took = time.Since(began)
		w.log.Debug().Str("topic", f.Topic).Int("records", f.Records).Dur("took", f.Took).Msg("no fencing token published: the token floor stays")
		return f, nil
	}
	f.Floor = f.Highest + TokenFloorMargin
	f.Raised, f.Was, err = w.cfg.Store.RaiseTokenFloor(ctx, f.Highest, f.Floor)
	f.Took = time.Since(began)
	if err != nil {
		return f, err
	}
	if !f.Raised {
		w.log.Debug().Str("topic", f.Topic).Int("records", f.Records).Int64("highest_published", f.Highest).Dur("took", f.Took).
			Msg("the fencing token sequence is above every token published")
		return f, nil
	}
	w.log.Error().Str("topic", f.Topic).Int64("highest_published", f.Highest).Int64("sequence_was", f.Was).Int64("sequence_now", f.Floor).Dur("took", f.Took).
		Msg(fmt.Sprintf("PostgreSQL is behind Kafka: the highest fencing token published is %d, the sequence was at %d, moved to %d. "+
			"Locks granted in lost transactions are free again in the database while their holders may still act; "+
			"tokens from now on are above theirs, so resources that check fencing tokens refuse the old holders. "+
			`See docs/design.md "PostgreSQL lost transactions"`, f.Highest, f.Was, f.Floor))
	return f, nil
}

// highestPublishedToken reads the newest tokenFloorRecords records of each
// partition of topic, up to the end offsets listed first, and returns how
// many it read and the highest fencing token among them (0: none). A
// missing topic has none.
func (w *Worker) highestPublishedToken(ctx context.Context, topic string) (records int, highest int64, err error) {
	adm := kadm.NewClient(w.cl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return 0, 0, fmt.Errorf("listing start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, 0, fmt.Errorf("listing end offsets: %w", err)
	}
	from := map[int32]kgo.Offset{}
	last := map[int32]int64{} // the offset each partition is read up to
	var listErr error
	ends.Each(func(end kadm.ListedOffset) {
		start, ok := starts.Lookup(topic, end.Partition)
		switch {
		case errors.Is(end.Err, kerr.UnknownTopicOrPartition) || errors.Is(start.Err, kerr.UnknownTopicOrPartition):
			return // missing: nothing published
		case end.Err != nil:
			listErr = fmt.Errorf("listing the end offset of partition %d: %w", end.Partition, end.Err)
			return
		case !ok || start.Err != nil:
			listErr = fmt.Errorf("listing the start offset of partition %d: %w", end.Partition, cmpErr(start.Err, ok))
			return
		case end.Offset <= start.Offset:
			return // empty
		}
		from[end.Partition] = kgo.NewOffset().At(max(start.Offset, end.Offset-tokenFloorRecords))
		last[end.Partition] = end.Offset - 1
	})
	if listErr != nil {
		return 0, 0, listErr
	}
	if len(from) == 0 {
		return 0, 0, nil
	}
	opts := append([]kgo.Opt{
		kgo.FetchMaxWait(fetchMaxWait),
		kgo.MaxDecompressBatchBytes(maxBatchBytes),
	}, w.cfg.KafkaOpts...)
	opts = append(opts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
		// A published grant counts whether or not a transaction it was
		// in commits; control records come through so that a partition
		// ending with one is seen read to its end.
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()),
		kgo.KeepControlRecords(),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, 0, fmt.Errorf("creating Kafka client: %w", err)
	}
	defer cl.Close()
	var fetchErr error
	for len(last) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			left := slices.Sorted(maps.Keys(last))
			if fetchErr != nil {
				return records, highest, fmt.Errorf("partitions %v not read to their end: %w (last fetch error: %w)", left, ctx.Err(), fetchErr)
			}
			return records, highest, fmt.Errorf("partitions %v not read to their end: %w", left, ctx.Err())
		}
		var fatal error
		fs.EachError(func(_ string, p int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			fetchErr = fmt.Errorf("partition %d: %w", p, err)
			if errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.ClusterAuthorizationFailed) {
				fatal = fetchErr // retrying cannot help
			}
		})
		if fatal != nil {
			return records, highest, fatal
		}
		fs.EachRecord(func(r *kgo.Record) {
			if end, ok := last[r.Partition]; ok && r.Offset >= end {
				delete(last, r.Partition)
			}
			if r.Attrs.IsControl() {
				return
			}
			records++
			highest = max(highest, publishedToken(r.Value))
		})
	}
	return records, highest, nil
}

// publishedToken is the highest fencing token an event record's value
// carries (its lease's, and those of the holders a lock.status lists), or 0
// for a value that is not an event. The lifecycle topic carries events as
// the relay publishes them, plain JSON; the outbox's compacted form is
// expanded too, should a record ever carry it.
func publishedToken(v []byte) int64 {
	v, err := topics.ExpandEvent(v)
	if err != nil {
		return 0
	}
	e, err := topics.DecodeEvent(v)
	if err != nil || e.LockInfo == nil {
		return 0
	}
	t := e.LockInfo.FencingToken
	for _, h := range e.LockInfo.Holders {
		t = max(t, h.FencingToken)
	}
	return t
}

func cmpErr(err error, found bool) error {
	if err == nil && !found {
		return errors.New("not listed")
	}
	return err
}
