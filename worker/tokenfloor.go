package worker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/fetchbound"
	"github.com/omninode/lockworker/store"
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
// and the int64 sequence does not run out. It is spent only when the check
// finds the sequence behind.
const TokenFloorMargin = 1_000_000

// MaxPlausibleToken bounds the fencing tokens RaiseTokenFloor takes from
// the lifecycle topic: a token above it is ignored, with a warning naming
// its partition and offset. The sequence hands out tokens one at a time
// from 1: at a million grants a second it reaches this bound in about 142
// years, so a record above it was written by something else (a buggy
// producer, or a principal with Write on the topic), and would otherwise
// move the sequence up for every start to come. A floor taken from it
// leaves the sequence another 142 years at that rate before 2^53, past
// which tokens are JSON numbers that not every language reads exactly
// (JavaScript's and others' doubles: a holder would echo back another
// token, refused TOKEN_MISMATCH). The bound does not make the topic safe
// to share: a record just below it is taken, and the sequence, moved past
// it, hands out tokens above the bound from then on, which every later
// check ignores (warning of each), so no later loss is covered. Only
// lockworker may have Write on the topic.
const MaxPlausibleToken = 1 << 52

// Values of Config.TokenFloorCheck (TOKEN_FLOOR_CHECK).
const (
	// TokenFloorRequire: Kafka failing the check fails it (the default).
	TokenFloorRequire = "require"
	// TokenFloorWarn: Kafka failing the check is logged at error level
	// and the caller goes on; a PostgreSQL failure still fails it.
	TokenFloorWarn = "warn"
	// TokenFloorOff: no check.
	TokenFloorOff = "off"
)

// tokenFloorRecords is how many of the newest records of each partition
// of the lifecycle topic RaiseTokenFloor reads from: enough to find a
// recent grant behind records that are not grants, few enough to cost
// little at every start. Kafka serves whole batches, so the records read
// may be more.
const tokenFloorRecords = 100

// tokenFloorTimeout bounds RaiseTokenFloor's reading of Kafka.
const tokenFloorTimeout = 30 * time.Second

// tokenFloorPoll bounds one poll of RaiseTokenFloor's client: a poll that
// brings nothing has the offsets listed again, to finish partitions whose
// records left to read are gone.
const tokenFloorPoll = 2 * time.Second

// TokenFloor is what RaiseTokenFloor found and did.
type TokenFloor struct {
	// Topic is the topic read: Config.Names.Acquired.
	Topic string
	// Records is how many records were read; Tokens how many of them were
	// lock.acquired events with a plausible token; Highest the highest
	// token among them (0: none).
	Records, Tokens int
	Highest         int64
	// GrantedTwice are the tokens read in two lock.acquired events of
	// different locks or owners (logged at error level): a database that
	// lost transactions handed them out again before this check.
	GrantedTwice []int64
	// BatchesSkipped is how many record batches were skipped unread:
	// past the worker's bounds on what a batch may decompress to, or not
	// decompressible at all (logged at warning level with their offsets;
	// highestPublishedToken).
	BatchesSkipped int
	// Floor is Highest + TokenFloorMargin.
	Floor int64
	// Raised says the sequence's last token was below Highest, and it
	// was moved up to Floor (store.TokenSequence.Raised: a setval was
	// sent); Was is its last token as last read (an attempt retried after
	// a lost answer reads the sequence its setval moved).
	Raised bool
	Was    int64
	// Skipped says the check did not run (TokenFloorOff, no topic) or,
	// under TokenFloorWarn, failed in Kafka.
	Skipped bool
	// Took is how long it all took.
	Took time.Duration
}

// RaiseTokenFloor keeps fencing tokens from being granted twice after
// PostgreSQL lost committed transactions (a restore, a point-in-time
// recovery, an asynchronous standby promoted without the primary's last
// commits): the fencing_tokens sequence then went back, while the grants
// it made in those transactions were published to Kafka and their holders
// use their tokens. It reads the newest records (tokenFloorRecords, and the
// rest of their batches) of every partition of the lock.acquired lifecycle
// topic, takes the highest fencing token of the lock.acquired events there,
// and when the sequence is behind it, would hand it out again, moves the
// sequence up to it plus TokenFloorMargin (store.RaiseTokenFloor), logging
// at error level that PostgreSQL is behind Kafka. A sequence at or above
// the highest token is left alone: in normal running it is just above the
// last token published, so a check costs no tokens and logs no loss. Run
// it at start, before the worker consumes (cmd/lockworker does, after
// EnsureTopics); the worker runs it too when a partition's stored offset
// went back under it (settleMoved). docs/design.md "PostgreSQL lost
// transactions".
//
// A missing or empty topic, none configured (Names.Acquired ""), or
// Config.TokenFloorCheck off, does nothing. Its cost is two offset
// listings and about tokenFloorRecords records per partition, read by a
// client of its own (Config.KafkaOpts, no group) with the worker's bounds
// on fetched batches: a batch past them, or that cannot be decompressed,
// is skipped unread with a warning, and as many offsets are read before it
// (highestPublishedToken). Kafka not answering, or refusing the topic, is
// an error naming it, after at most tokenFloorTimeout; under TokenFloorWarn
// it is logged instead, unless ctx ended (a stop, returned as ctx's error).
func (w *Worker) RaiseTokenFloor(ctx context.Context) (TokenFloor, error) {
	began := time.Now()
	f := TokenFloor{Topic: w.cfg.Names.Acquired}
	switch {
	case w.cfg.TokenFloorCheck == TokenFloorOff:
		f.Skipped = true
		w.log.Info().Msg("the fencing token floor is not checked (TOKEN_FLOOR_CHECK=off)")
		return f, nil
	case f.Topic == "":
		f.Skipped = true
		w.log.Info().Msg("the fencing token floor is not checked: no lock.acquired topic is configured")
		return f, nil
	}
	kctx, cancel := context.WithTimeout(ctx, tokenFloorTimeout)
	defer cancel()
	if err := w.highestPublishedToken(kctx, &f); err != nil {
		f.Took = time.Since(began)
		err = fmt.Errorf("reading the newest fencing tokens of topic %q (lock.acquired; Read and Describe on it are needed, or set TOKEN_FLOOR_CHECK=warn): %w", f.Topic, err)
		if ctx.Err() != nil {
			// Stopped: no failure to warn of, whatever Kafka said meanwhile.
			return f, fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		if w.cfg.TokenFloorCheck != TokenFloorWarn {
			return f, err
		}
		f.Skipped = true
		w.log.Error().Err(err).Str("topic", f.Topic).Dur("took", f.Took).
			Msg("the fencing tokens were not checked against Kafka (TOKEN_FLOOR_CHECK=warn): after PostgreSQL lost transactions, tokens already granted may be granted again")
		return f, nil
	}
	if f.Records > 0 && f.Tokens == 0 {
		w.log.Warn().Str("topic", f.Topic).Int("records", f.Records).
			Msg("none of the newest records of the lock.acquired topic is a lock.acquired event with a fencing token: is the topic the one the worker publishes grants to (KAFKA_TOPIC_LOCK_ACQUIRED)?")
	}
	if f.Highest <= 0 {
		f.Took = time.Since(began)
		w.log.Debug().Str("topic", f.Topic).Int("records", f.Records).Dur("took", f.Took).Msg("no fencing token published: the token floor stays")
		return f, nil
	}
	// Far below 2^53: Highest is at most MaxPlausibleToken.
	f.Floor = f.Highest + TokenFloorMargin
	seq, err := w.cfg.Store.RaiseTokenFloor(ctx, f.Highest, f.Floor)
	f.Took = time.Since(began)
	if err != nil {
		return f, err
	}
	f.Raised, f.Was = seq.Raised, seq.Was
	if !f.Raised {
		w.log.Debug().Str("topic", f.Topic).Int("records", f.Records).Int64("highest_published", f.Highest).Dur("took", f.Took).
			Msg("the fencing token sequence is above every token published")
		return f, nil
	}
	was := fmt.Sprintf("the sequence was at %d, moved to %d", f.Was, f.Floor)
	w.log.Error().Str("topic", f.Topic).Int64("highest_published", f.Highest).Int64("sequence_was", f.Was).Int64("sequence_now", f.Floor).
		Bool("raised", f.Raised).Dur("took", f.Took).
		Msg(fmt.Sprintf("PostgreSQL is behind Kafka: the highest fencing token published is %d, %s. "+
			"Locks granted in lost transactions are free again in the database while their holders may still act; "+
			"tokens from now on are above theirs, so resources that check fencing tokens refuse the old holders. "+
			`See docs/design.md "PostgreSQL lost transactions"`, f.Highest, was))
	return f, nil
}

// tokenFloorListRetry is the first pause between attempts of the offset
// listings (store.Backoff: doubling, at most a second), retried until ctx
// ends.
const tokenFloorListRetry = 50 * time.Millisecond

// listOffsets lists the start and end offsets of topic, retrying within
// ctx: an error that retrying cannot cure (an authorization failure) ends
// it at once; a missing topic is not an error (no partition listed).
func (w *Worker) listOffsets(ctx context.Context, topic string) (starts, ends kadm.ListedOffsets, err error) {
	adm := kadm.NewClient(w.cl)
	for attempt := 0; ; attempt++ {
		starts, err = adm.ListStartOffsets(ctx, topic)
		if err == nil {
			ends, err = adm.ListEndOffsets(ctx, topic)
		}
		if err == nil {
			err = listedErr(starts, ends)
		}
		if err == nil || fatalKafka(err) {
			return starts, ends, err
		}
		pause := time.NewTimer(store.Backoff(tokenFloorListRetry, time.Second, attempt+1))
		select {
		case <-ctx.Done():
			pause.Stop()
			return nil, nil, fmt.Errorf("listing offsets: %w (last error: %w)", ctx.Err(), err)
		case <-pause.C:
		}
	}
}

// listedErr is the first error of a partition's listing, but a missing
// topic's.
func listedErr(starts, ends kadm.ListedOffsets) error {
	var err error
	for _, l := range []kadm.ListedOffsets{starts, ends} {
		l.Each(func(o kadm.ListedOffset) {
			if o.Err != nil && !errors.Is(o.Err, kerr.UnknownTopicOrPartition) && err == nil {
				err = fmt.Errorf("listing the offsets of partition %d: %w", o.Partition, o.Err)
			}
		})
	}
	return err
}

// fatalKafka reports whether err is a Kafka error that retrying cannot
// cure: a broker's error code Kafka does not mark retriable (an
// authorization failure, an unsupported version).
func fatalKafka(err error) bool {
	var ke *kerr.Error
	return errors.As(err, &ke) && !ke.Retriable
}

// tokenFloorMaxSkips bounds the record batches highestPublishedToken skips
// unread in one partition before it reads no further back past them (see
// floorRead): the range it is reading is still read to its end, but none
// is begun below it. Each skip costs a fetch, and a range of at most
// tokenFloorRecords offsets holds at most as many batches, so a partition
// skips fewer than tokenFloorMaxSkips + tokenFloorRecords: one filled with
// batches no one can read (anyone with Write on the topic can write them)
// keeps the check within tokenFloorTimeout.
const tokenFloorMaxSkips = 10

// floorRead is what highestPublishedToken reads of one partition: its
// offsets from lo up to hi (excluded). The first range is the newest
// tokenFloorRecords offsets listed. A record batch the client cannot
// decompress within the worker's bounds is skipped unread, and its offsets
// in the range are lost to it: as many offsets are then read just below
// the range, and below the first offset of a skipped batch that began
// below it, so that about tokenFloorRecords offsets outside skipped batches
// are still read (fewer at the log's start, or past tokenFloorMaxSkips).
type floorRead struct {
	lo, hi int64
	// seen is where the ranges read before this one began (math.MaxInt64
	// while the first is read): a record from there on was read already
	// (a batch straddling this range's end is served whole) and is not
	// counted again.
	seen int64
	// start is the log start listed: no range begins below it.
	start int64
	// lost is how many offsets of the range lie in batches skipped;
	// below is the first offset of a skipped batch that began below lo
	// (math.MaxInt64: none), where the range below this one ends.
	lost, below int64
	// skips is how many batches of the partition were skipped.
	skips int
}

// skip accounts for batch b, skipped unread.
func (rd *floorRead) skip(b *kgo.ErrDecompressTooLarge) {
	rd.skips++
	rd.lost += max(0, min(b.NextOffset, rd.hi)-max(b.Offset, rd.lo))
	if b.Offset < rd.lo {
		rd.below = min(rd.below, b.Offset)
	}
}

// readBack moves rd to the range below the one read, and reports whether
// there is one to read: none when no offset of the range was lost to a
// skipped batch, the log's start is reached, or tokenFloorMaxSkips
// batches were skipped (gaveUp).
func (rd *floorRead) readBack() (more, gaveUp bool) {
	top := min(rd.lo, rd.below)
	switch {
	case rd.lost == 0 || top <= rd.start:
		return false, false
	case rd.skips >= tokenFloorMaxSkips:
		return false, true
	}
	rd.lo, rd.hi, rd.seen = max(rd.start, top-rd.lost), top, top
	rd.lost, rd.below = 0, math.MaxInt64
	return true, false
}

// highestPublishedToken reads the newest tokenFloorRecords records of each
// partition of f.Topic, up to the end offsets listed first, and sets in f
// how many it read, how many were lock.acquired events with a plausible
// token (at most MaxPlausibleToken), the highest of those tokens (0:
// none), the tokens it read granted to two different locks or owners
// (logged at error level), and how many record batches it skipped unread.
// A missing topic has none.
//
// Its client has the bounds the worker's commands consumer has (New) on
// what a fetched batch may decompress to (fetchbound.Decompressor, the
// worker's kgo.MaxDecompressBatchBytes) and on a fetch response, and,
// as there, Config.KafkaOpts may set others. A batch past them, or one that
// cannot be decompressed at all, holds no token this check can read: it is
// logged at warning level with its partition and offsets and skipped, and
// as many offsets are read below (floorRead). Such a batch fails alike on
// every fetch (New refuses kgo.DisableFetchCRCValidation, so it is whole and
// its CRC matches): were it waited for, the check would fail on every start
// until retention removed it.
func (w *Worker) highestPublishedToken(ctx context.Context, f *TokenFloor) error {
	topic := f.Topic
	starts, ends, err := w.listOffsets(ctx, topic)
	if err != nil {
		return err
	}
	reading := map[int32]*floorRead{} // the partitions not read to their end yet
	from := map[int32]kgo.Offset{}
	ends.Each(func(e kadm.ListedOffset) {
		s, ok := starts.Lookup(topic, e.Partition)
		if e.Err != nil || !ok || s.Err != nil || e.Offset <= s.Offset {
			return // missing or empty
		}
		rd := &floorRead{lo: max(s.Offset, e.Offset-tokenFloorRecords), hi: e.Offset, seen: math.MaxInt64, start: s.Offset, below: math.MaxInt64}
		reading[e.Partition] = rd
		from[e.Partition] = kgo.NewOffset().At(rd.lo)
	})
	if len(reading) == 0 {
		return nil
	}
	// The bounds New gives the commands consumer: the decompressor's is
	// the worker's (w.batchBound, from the same KafkaOpts), which it takes
	// from the client (Bind) before its first fetch is decompressed.
	unpack, opts := w.boundedFetch()
	opts = append(opts, w.cfg.KafkaOpts...)
	opts = append(opts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
		// A published grant counts whether or not a transaction it was
		// in commits; control records come through so that a partition
		// ending with one is seen read to its end.
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()),
		kgo.KeepControlRecords(),
		// A start no longer in the log, read first: the newest
		// tokenFloorRecords offsets again, from the log's start if that
		// is nearer. Retention removed records since the listing: from
		// its new start, which is in the range, up to the range's end;
		// the log was truncated below the range: its newest offsets, not
		// the whole partition. (A reset to the end alone left a quiet
		// partition whose start moved into the range unread until
		// tokenFloorTimeout: nothing came, and its records were there.)
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd().Relative(-tokenFloorRecords)),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("creating Kafka client: %w", err)
	}
	unpack.Bind(cl)
	defer cl.Close()
	granted := map[int64]grant{} // each token read, to whom
	done := func(p int32) {
		delete(reading, p)
		cl.PauseFetchPartitions(map[string][]int32{topic: {p}})
	}
	var fetchErr error
	for len(reading) > 0 {
		pctx, cancel := context.WithTimeout(ctx, tokenFloorPoll)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			left := slices.Sorted(maps.Keys(reading))
			if fetchErr != nil {
				return fmt.Errorf("partitions %v not read to their end: %w (last fetch error: %w)", left, ctx.Err(), fetchErr)
			}
			return fmt.Errorf("partitions %v not read to their end: %w", left, ctx.Err())
		}
		var fatal error
		var skipped []*kgo.ErrDecompressTooLarge
		fs.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			if b, ok := errors.AsType[*kgo.ErrDecompressTooLarge](err); ok && t == topic {
				// Not retried: it fails alike on every fetch.
				skipped = append(skipped, b)
				return
			}
			fetchErr = fmt.Errorf("partition %d: %w", p, err)
			if fatalKafka(err) {
				fatal = fetchErr // retrying cannot help
			}
		})
		if fatal != nil {
			return fatal
		}
		if fs.NumRecords() == 0 && len(skipped) == 0 {
			// Nothing came within tokenFloorPoll: a partition whose
			// records left to read were removed since the listing
			// (retention, a truncated or recreated topic) has nothing
			// to wait for.
			nowStarts, nowEnds, err := w.listOffsets(ctx, topic)
			switch {
			case ctx.Err() != nil:
				continue // said above
			case err != nil:
				return err
			}
			nowEnds.Each(func(e kadm.ListedOffset) {
				s, ok := nowStarts.Lookup(topic, e.Partition)
				rd := reading[e.Partition]
				if rd == nil || !ok || e.Err != nil || s.Err != nil {
					return
				}
				if max(rd.lo, s.Offset) >= min(rd.hi, e.Offset) {
					done(e.Partition)
				}
			})
			continue
		}
		ended := map[int32]bool{} // partitions whose range was read to its end
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			rd := reading[fp.Partition]
			if rd == nil || len(fp.Records) == 0 {
				return
			}
			for _, r := range fp.Records {
				if r.Attrs.IsControl() || r.Offset >= rd.seen {
					continue
				}
				f.Records++
				if w.countGrants(r, granted, f) {
					f.Tokens++
				}
			}
			// Read to the end of the range, or past the partition's
			// end now (its high watermark): a log truncated since, or
			// whose last offsets hold no record, has nothing more to
			// give.
			next := fp.Records[len(fp.Records)-1].Offset + 1
			if next >= rd.hi || (fp.HighWatermark >= 0 && next >= fp.HighWatermark) {
				ended[fp.Partition] = true
			}
		})
		seek := map[int32]kgo.EpochOffset{}
		for _, b := range skipped {
			rd := reading[b.Partition]
			if rd == nil {
				continue // done: reported before it was
			}
			f.BatchesSkipped++
			rd.skip(b)
			w.log.Warn().Str("topic", topic).Int32("partition", b.Partition).Int64("offset", b.Offset).Int64("last_offset", b.NextOffset-1).
				Int("bound", w.batchBound).Int("ratio_bound", fetchbound.Ratio).
				Msg("a record batch of the lock.acquired topic decompresses past the bound, or cannot be decompressed: the fencing token check skips it unread, " +
					"so a token in it is not read (lockworker's relay writes no such batch), and reads as many offsets further back instead")
			if b.NextOffset >= rd.hi {
				ended[b.Partition] = true
			} else if !ended[b.Partition] {
				// kgo fetches the partition no further until moved past it.
				seek[b.Partition] = fetchbound.Past(b)
			}
		}
		for p := range ended {
			rd := reading[p]
			more, gaveUp := rd.readBack()
			switch {
			case more:
				seek[p] = kgo.EpochOffset{Epoch: -1, Offset: rd.lo}
				continue
			case gaveUp:
				w.log.Warn().Str("topic", topic).Int32("partition", p).Int("batches_skipped", rd.skips).Int64("lowest_offset_read", rd.lo).
					Msg(fmt.Sprintf("the fencing token check skipped %d record batches of this partition and reads no further back past them: "+
						"it read fewer than %d offsets outside them, and a grant among those it did not read is not covered by the floor", rd.skips, tokenFloorRecords))
			}
			delete(seek, p)
			done(p)
		}
		if len(seek) > 0 {
			cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{topic: seek})
		}
	}
	return nil
}

// countGrants takes the lock.acquired grants of record r into f (Highest,
// GrantedTwice) and granted (each token read, to whom), and reports
// whether it had a plausible token.
func (w *Worker) countGrants(r *kgo.Record, granted map[int64]grant, f *TokenFloor) (plausible bool) {
	for _, g := range publishedGrants(r) {
		if g.token > MaxPlausibleToken {
			w.log.Warn().Str("topic", r.Topic).Int32("partition", r.Partition).Int64("offset", r.Offset).Int64("fencing_token", g.token).
				Msg("ignoring a fencing token on the lock.acquired topic beyond any the sequence can have handed out: a record not written by lockworker")
			continue
		}
		plausible = true
		f.Highest = max(f.Highest, g.token)
		first, ok := granted[g.token]
		switch {
		case !ok:
			granted[g.token] = g
		case first != g: // the same token: another lock or owner
			if !slices.Contains(f.GrantedTwice, g.token) {
				f.GrantedTwice = append(f.GrantedTwice, g.token)
			}
			w.log.Error().Str("topic", r.Topic).Int32("partition", r.Partition).Int64("offset", r.Offset).Int64("fencing_token", g.token).
				Str("namespace", g.namespace).Str("lock_name", g.lockName).Str("owner", g.owner).
				Str("other_namespace", first.namespace).Str("other_lock_name", first.lockName).Str("other_owner", first.owner).
				Msg(fmt.Sprintf("fencing token %d was granted twice: to two different locks or owners, as a database that lost committed transactions "+
					`hands out again; the older holder is not fenced off by the newer. See docs/design.md "PostgreSQL lost transactions"`, g.token))
		}
	}
	return plausible
}

// grant is a fencing token read on the lock.acquired topic and to whom it
// was granted. The lock is its namespace and name apart: joined, as
// topics.LockKey does, ("a", "b/c") and ("a/b", "c") would be one lock, and
// a token granted to both not found granted twice.
type grant struct {
	token                      int64
	namespace, lockName, owner string
}

// publishedGrants are the fencing tokens of a lock.acquired event record
// (its lease's, and the holders' it lists), none for a record that is not
// one: its value's type, and its ce_type header when it has one, must be
// lock.acquired. The lifecycle topic carries events as the relay publishes
// them, plain JSON; the outbox's compacted form is expanded too, should a
// record ever carry it.
func publishedGrants(r *kgo.Record) []grant {
	for _, h := range r.Headers {
		if h.Key == topics.HeaderCEType && string(h.Value) != topics.TypeAcquired {
			return nil
		}
	}
	v, err := topics.ExpandEvent(r.Value)
	if err != nil {
		return nil
	}
	e, err := topics.DecodeEvent(v)
	if err != nil || e.Type != topics.TypeAcquired || e.LockInfo == nil {
		return nil
	}
	li := e.LockInfo
	var gs []grant
	if li.FencingToken > 0 {
		gs = append(gs, grant{li.FencingToken, li.Namespace, li.LockName, li.OwnerID})
	}
	for _, h := range li.Holders {
		if h.FencingToken > 0 {
			gs = append(gs, grant{h.FencingToken, li.Namespace, li.LockName, h.OwnerID})
		}
	}
	return gs
}
