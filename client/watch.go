package client

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/pollpause"
	"github.com/omninode/lockworker/topics"
)

// LockRevision is a lock as one committed change left it: a record of the
// lock state topic (Config.Topics.State, default locks.state.v1).
type LockRevision struct {
	Namespace string
	Name      string
	// Revision counts the lock's changes; the events a change caused carry
	// it in their lock_info. 0: the lock has no state (never used, or
	// cleaned up: Deleted).
	Revision int64
	// Deleted says cleanup removed the lock (a tombstone); it is free, and
	// its next change is revision 1 again.
	Deleted bool
	// Status is StatusAcquired while anyone holds the lock, else how the
	// last lease ended, or StatusFree.
	Status Status
	Limit  int
	// Holders are the leases in grant order (the first
	// topics.MaxStateHolders of HolderCount).
	Holders     []Holder
	HolderCount int
	// Waiters counts the queued acquires.
	Waiters      int
	Acquisitions int64
	// Operation made the change ("acquire", "release", "extend", "cleanup",
	// "expire" for the expiry scheduler, "first_state" after the upgrade to
	// revisions), or "republish": a worker published the lock's state again
	// unchanged (docs/design.md "Lock state topic"), which Locks shows for
	// a lock with no change since and Watch may deliver.
	Operation string
	// ChangedAt is the database's time of the change.
	ChangedAt time.Time
	// DelayUntil is the end of the lock's lock-delay while it is in one
	// (WithLockDelay): nothing is granted before it. Zero: none.
	DelayUntil time.Time
	// Record is the same in the contract's wire form (zero for a
	// tombstone or an unreadable record), for those who pass it on as
	// JSON. For a lock with no record (never used, or its tombstone
	// compacted away) it is a free lock's: revision 0, status free, limit
	// 1, no holders, changed_at the zero time (nothing changed it yet).
	Record topics.LockState
	// Unreadable, from Watch, says the lock's newest record could not be
	// decoded (why, naming the record): its state is unknown until its
	// next readable revision or tombstone, not the last one read. Every other field
	// but Namespace and Name is zero then.
	Unreadable error
}

// Holder is one lease of a lock.
type Holder struct {
	Owner         string
	Mode          Mode
	Token         int64
	AcquiredAt    time.Time
	ExpiresAt     time.Time
	LeaseDuration time.Duration
	Extensions    int64
	Metadata      json.RawMessage
	// SessionID is the session the lease lives by, "" for a lease of its
	// own. Such a lease has the session's ExpiresAt as of the record:
	// keep-alives move it without a new record, so a past ExpiresAt on it
	// does not say it ended.
	SessionID string
}

func lockRevision(key string, value []byte) (LockRevision, error) {
	if value == nil {
		ns, name := splitKey(key)
		return LockRevision{Namespace: ns, Name: name, Deleted: true, Status: StatusFree, Limit: 1}, nil
	}
	st, err := topics.DecodeLockState(value)
	if err != nil {
		return LockRevision{}, err
	}
	if k := topics.LockKey(st.Namespace, st.LockName); k != key {
		// No worker writes one: it keys a lock's states by its lock key.
		// Taken as that lock's, it would be read from a partition the
		// lock's key does not hash to, and compacting the lock's key
		// would not remove it: it could outlive the lock's tombstone.
		return LockRevision{}, fmt.Errorf("decoding lock state: a state of lock %q, not of its key", k)
	}
	r := LockRevision{
		Namespace: st.Namespace, Name: st.LockName, Revision: st.Revision, Status: Status(st.Status), Limit: st.Limit,
		HolderCount: st.HolderCount, Waiters: st.WaiterCount, Acquisitions: st.AcquisitionCount, Operation: st.Operation,
		ChangedAt: st.ChangedAt.Time, Record: st,
	}
	if st.DelayUntil != nil {
		r.DelayUntil = st.DelayUntil.Time
	}
	for _, h := range st.Holders {
		r.Holders = append(r.Holders, Holder{Owner: h.OwnerID, Mode: Mode(h.Mode), Token: h.FencingToken, AcquiredAt: h.AcquiredAt.Time,
			ExpiresAt: h.ExpiresAt.Time, LeaseDuration: seconds(h.LeaseDuration), Extensions: h.ExtensionCount, Metadata: h.OwnerMetadata, SessionID: h.SessionID})
	}
	return r, nil
}

// readRecord is lockRevision of a record of the lock state topic; its error
// names the record.
func readRecord(rec *kgo.Record) (LockRevision, error) {
	lr, err := lockRevision(string(rec.Key), rec.Value)
	if err != nil {
		return lr, fmt.Errorf("record of key %q at partition %d, offset %d: %w", rec.Key, rec.Partition, rec.Offset, err)
	}
	return lr, nil
}

// UnreadableStateError is Locks's error when the newest record of some
// locks of the lock state topic could not be decoded (a record that is no
// state of a lock of its key, or one of a format this client does not
// read). Those locks are left out of the table, which Locks returns with
// the error: a lock whose newest state cannot be read is not shown as its
// older state. A caller that wants the table anyway uses errors.As, and
// Locks (or AffectsNamespace) to tell whether its own locks are among them.
type UnreadableStateError struct {
	Topic string
	// Locks are the locks left out, by key.
	Locks []UnreadableLock
	// Keys counts the keys left out.
	Keys int
	// Records counts the records that could not be decoded, including
	// those a later readable record of their lock made up for.
	Records int
	// First is why the first lock left out (in key order) was: its
	// record's key, partition and offset and the decoding error.
	First error
}

// UnreadableLock is a lock Locks left out: its newest record, Err, could
// not be decoded.
type UnreadableLock struct {
	Key string
	// Known says Namespace and Name are the lock's: the record's
	// namespace and lock_name fields make its key, or the key has no "/"
	// (a lock of the default namespace). Else the key alone tells: "a/b"
	// is lock "b" of namespace "a" or lock "a/b" of the default one; the
	// locks of the key read before the record are left out, and the key
	// stays listed until a tombstone of it.
	Known           bool
	Namespace, Name string
	Err             error
}

// InNamespace says whether the lock may be one of namespace ns.
func (l UnreadableLock) InNamespace(ns string) bool {
	if l.Known {
		return l.Namespace == ns
	}
	return ns == "" || strings.HasPrefix(l.Key, ns+"/")
}

// AffectsNamespace says whether a lock left out may be one of namespace
// ns.
func (e *UnreadableStateError) AffectsNamespace(ns string) bool {
	return slices.ContainsFunc(e.Locks, func(l UnreadableLock) bool { return l.InNamespace(ns) })
}

func (e *UnreadableStateError) Error() string {
	keys := make([]string, 0, 3)
	for _, l := range e.Locks[:min(len(e.Locks), 3)] {
		keys = append(keys, strconv.Quote(l.Key))
	}
	if len(e.Locks) > 3 {
		keys = append(keys, "...")
	}
	return fmt.Sprintf("%d key(s) of %q left out of the table (%s): their newest record cannot be read (%d unreadable record(s) in all; first: %v)",
		e.Keys, e.Topic, strings.Join(keys, ", "), e.Records, e.First)
}

func (e *UnreadableStateError) Unwrap() error { return e.First }

// unreadableLock is the lock an undecodable record of key is, as far as
// it tells.
func unreadableLock(rec *kgo.Record, err error) UnreadableLock {
	key := string(rec.Key)
	l := UnreadableLock{Key: key, Err: err}
	var id struct {
		Namespace string `json:"namespace"`
		LockName  string `json:"lock_name"`
	}
	if json.Unmarshal(rec.Value, &id) == nil && id.LockName != "" && topics.LockKey(id.Namespace, id.LockName) == key {
		l.Known, l.Namespace, l.Name = true, id.Namespace, id.LockName
	} else if !strings.Contains(key, "/") {
		l.Known, l.Name = true, key
	}
	return l
}

// splitKey is the inverse of topics.LockKey for a key without a value to
// say which: the namespace is what comes before the first "/" only when
// the key has one, not first (no namespace is empty; a lock name may hold
// "/" too: a tombstone's name is then ambiguous, and Watch, which knows
// the name, does not use it).
func splitKey(key string) (ns, name string) {
	if ns, name, ok := strings.Cut(key, "/"); ok && ns != "" {
		return ns, name
	}
	return "", key
}

// stateReader reads partitions of the state topic: from their start up to
// the end offsets listed when it was made (the table as it was then), then
// on. It reads committed records only: a state written in a transaction (by
// another producer: a mirror, a stream processor) counts once the
// transaction commits, never when it aborts.
type stateReader struct {
	cons *kgo.Client
	// end is, per partition not read up to it yet, its listed end offset:
	// its last stable offset, below which every transaction was decided.
	end map[int32]int64
	// listPartition lists one partition's start and end offsets
	// (Client.listPartition).
	listPartition func(ctx context.Context, p int32) (start, end int64, err error)
	// failed are the errors its connections and fetches met since it last
	// made progress.
	failed *fetchErrors
	// pause is poll's wait after a poll of errors only.
	pause pollpause.Pause
	// skipped are the batches poll skipped unread, as skipTooLarge says
	// (Locks reports them).
	skipped []error
	// onFetchError, set by follow, is told of the failure streaks of
	// reading the one partition part of topic that last grace (told: the
	// current one was).
	onFetchError func(error)
	topic        string
	grace        time.Duration
	told         bool
	// following is, for Watch's reader, the partition it reads its key
	// from: the key's partition, which moves when partitions are added
	// (followMoves).
	following atomic.Int32
	// partitions is the state topic's partition count listed when the
	// reader was made, and id its ID (zero: unknown).
	partitions int
	id         kadm.TopicID
	// lookUp has followMoves look the topic up at once, and refused says
	// that poll got UNKNOWN_TOPIC_ID since its last look-up: the topic the
	// reader reads by its ID was deleted, and maybe created again.
	lookUp  chan struct{}
	refused atomic.Bool
	// moved says followMoves moved the reader to another partition or
	// topic instance since poll last looked (relist).
	moved atomic.Bool
	// relistBy is, while poll has still to list the end of the partition
	// moved to (relist), when it stops retrying (zero: none to list); it
	// retries for timeout, Config.RequestTimeout. readTo is the offset
	// past the last record of that partition read meanwhile.
	relistBy time.Time
	timeout  time.Duration
	readTo   int64
}

// keyPartition is the partition of the state topic with n partitions that
// the workers' producer writes key's records to: kgo's default partitioner
// hashes a record's key with murmur2 as Kafka's does, which
// StickyKeyPartitioner does too. Once partitions were added, a key's older
// records may lie in another partition (see docs/design.md "Lock state
// topic"): readers take a key's records from this one only.
func keyPartition(key string, n int) int32 {
	return int32(keyHasher.Partition(&kgo.Record{Key: []byte(key)}, n))
}

// keyHasher is made once: each partitioner made seeds a random source (for
// records without a key, which these never are), and made per record that
// took most of Locks's time (a million locks: 190 s, 29 s without).
var keyHasher = kgo.StickyKeyPartitioner(nil).ForTopic("")

// fetchErrors keeps the errors a reader's client met: failed connections
// and requests (its hooks) since its last record of a partition still to be
// read up to its listed end, and per such partition the fetch errors poll
// saw since its last record (kgo retries them all, without returning most).
//
// For a reader that follows its partition (Watch's with OnFetchError:
// leader set), it keeps too the current failure streak of reading it:
// since when (zero: none), its latest failure, and oks, the Fetch round
// trips that succeeded since its last failure signal; wake ends poll's
// wait, so that a streak that kgo does not return to poll (failed
// connections and requests) is timed and told too.
type fetchErrors struct {
	mu    sync.Mutex
	err   error
	parts map[int32]error

	leader func() int32
	since  time.Time
	latest error
	oks    int
	wake   func()
	// skipped says the current streak had a batch skipped unread: its
	// records are lost, not just late, so it is told at once.
	skipped bool
}

func (f *fetchErrors) add(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

// addPartition keeps the first fetch error of partition p since its last
// record read.
func (f *fetchErrors) addPartition(p int32, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.parts == nil {
		f.parts = map[int32]error{}
	}
	if f.parts[p] == nil {
		f.parts[p] = err
	}
}

// progress says a record of partition p, still to be read up to its end,
// was read: the connection errors before, and p's fetch errors, did not
// persist. Other partitions' fetch errors stay.
func (f *fetchErrors) progress(p int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = nil
	delete(f.parts, p)
}

// get returns the errors kept (joined), or nil.
func (f *fetchErrors) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	errs := []error{f.err}
	for _, p := range slices.Sorted(maps.Keys(f.parts)) {
		errs = append(errs, f.parts[p])
	}
	return errors.Join(errs...)
}

// failedReading is a failure signal of the followed partition's reading:
// it begins a streak, or goes on with the current one, err its latest
// failure unless weak (the failure of a broker that may not serve the
// partition: it fills latest only while the streak has none, never
// replacing a partition's error or a failure of its leader). A streak's
// beginning ends poll's wait, to be timed. A reader that follows none
// keeps nothing.
func (f *fetchErrors) failedReading(err error, weak bool) {
	f.mu.Lock()
	if f.leader == nil {
		f.mu.Unlock()
		return
	}
	var wake func()
	if f.since.IsZero() {
		f.since, wake = time.Now(), f.wake
	}
	if !weak || f.latest == nil {
		f.latest = err
	}
	f.oks = 0
	f.mu.Unlock()
	if wake != nil {
		wake()
	}
}

// fetched says a Fetch round trip succeeded. Its response may still carry
// an error of the partition, which poll gets afterwards (kgo calls the
// hook as it reads the response, before it buffers it, and issues the
// partition's next Fetch only once poll took a response it buffered, one
// with an error or records): so the second in a row, with no failure
// signal since the first, says the reading works again once a poll after
// it got no error (the second's may be buffered just after the first
// poll). Poll decides it; this ends its wait for it.
func (f *fetchErrors) fetched() {
	f.mu.Lock()
	if f.leader == nil {
		f.mu.Unlock()
		return
	}
	f.oks++
	var wake func()
	if !f.since.IsZero() && f.oks == 2 {
		wake = f.wake
	}
	f.mu.Unlock()
	if wake != nil {
		wake()
	}
}

// skippedBatch is the failure signal of a batch of the followed
// partition skipped unread (skip, from skipTooLarge): told at once.
func (f *fetchErrors) skippedBatch(skip error) {
	f.failedReading(skip, false)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.skipped = f.leader != nil
}

// wakePoll ends poll's current wait, if it waits.
func (f *fetchErrors) wakePoll() {
	f.mu.Lock()
	wake := f.wake
	f.mu.Unlock()
	if wake != nil {
		wake()
	}
}

// readAgain says a record of the followed partition was read: the streak
// ends.
func (f *fetchErrors) readAgain() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.since, f.latest, f.skipped = time.Time{}, nil, false
}

// abandoned says whether err is that of a dial or request kgo cut off
// itself, no failure of the reading: context.Canceled when it ends a
// consumer session (a partition moved to another leader or epoch: its
// Fetch in flight is dropped and issued again), ErrClientClosed at the
// close.
func abandoned(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed)
}

func (f *fetchErrors) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		return
	}
	err = fmt.Errorf("connecting to broker %s: %w", net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port))), err)
	f.add(err)
	f.mu.Lock()
	leader := f.leader
	f.mu.Unlock()
	if leader == nil || abandoned(err) {
		return
	}
	switch l := leader(); {
	case l == meta.NodeID:
		// The partition's leader.
		f.failedReading(err, false)
	case l < 0:
		// While the leader is not known (the first metadata not loaded
		// yet, or no leader) any broker: it may be the leader or a seed,
		// so it fills the streak's latest failure only if it has none.
		f.failedReading(err, true)
	}
	// Else a broker asked for metadata only (a dead seed, or another
	// broker kgo refreshes the metadata from after each refused Fetch):
	// it does not stop the reading, nor tell why a streak lasts.
}

func (f *fetchErrors) OnBrokerE2E(meta kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	err := e2e.Err()
	if err != nil {
		err = fmt.Errorf("%s request to broker %s: %w", kmsg.NameForKey(key), net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port))), err)
		f.add(err)
	}
	switch {
	case key != kmsg.Fetch.Int16():
	case err == nil:
		f.fetched()
	case !abandoned(err):
		f.failedReading(err, false)
	}
}

// fetchErrorGrace is how long a failure streak of Watch's reading lasts
// before OnFetchError is told of it: longer than a leader's move or
// election, during which kgo retries with a backoff from 250 ms (Kafka
// moves a partition in well under a second; kgo's backoff reaches
// seconds only after several failures in a row), and short beside
// Config.RequestTimeout's default 30 s that bounds the commands. A
// constant but for the tests, which shorten it.
var fetchErrorGrace = 5 * time.Second

// follow has the reader, which reads partition r.following only, tell fn,
// from poll, of the streaks of failures reading it that last
// fetchErrorGrace: once each, its latest failure, then nil once it ends.
func (r *stateReader) follow(fn func(error)) {
	r.onFetchError, r.grace = fn, fetchErrorGrace
	r.failed.mu.Lock()
	defer r.failed.mu.Unlock()
	r.failed.leader = func() int32 {
		leader, _, _ := r.cons.PartitionLeader(r.topic, r.following.Load())
		return leader
	}
}

// settle ends the current streak if reading works again (confirmed: a
// poll begun after a second successful Fetch in a row got no error, and
// none came since), tells onFetchError what is due (the streak's latest
// failure once it lasted the grace, nil once a streak told ended), and
// returns with r.failed.mu held and when the current streak's grace ends
// if it is still to be told (zero: none).
func (r *stateReader) settle(confirmed bool) (graceEnd time.Time) {
	f := r.failed
	for {
		f.mu.Lock()
		if confirmed && !f.since.IsZero() && f.oks >= 2 {
			f.since, f.latest, f.skipped = time.Time{}, nil, false
		}
		switch {
		case !f.since.IsZero() && !r.told:
			end := f.since.Add(r.grace)
			if time.Now().Before(end) && !f.skipped {
				return end
			}
			err := f.latest
			f.mu.Unlock()
			r.told = true
			if !errors.Is(err, kgo.ErrMaxDecompress) {
				err = fmt.Errorf("%w: reading partition %d of %q: %w", setupErr(err), r.following.Load(), r.topic, err)
			}
			r.onFetchError(err)
		case f.since.IsZero() && r.told:
			f.mu.Unlock()
			r.told = false
			r.onFetchError(nil)
		default:
			return time.Time{}
		}
	}
}

// waitCtx is the context poll waits for fetches with: one that a move of
// the reader (followMoves) ends, and for a reader that follows its
// partition, after what was due was told, a new streak, the reading
// working again or the current streak's grace end. done ends it.
// confirming says the streak may end after this poll: it began after a
// second successful Fetch in a row, and waits fetchMaxWait at most, long
// enough for that Fetch's response to be buffered if it carries an error
// (the grace's end, if sooner, waits for it: the streak is then told only
// if an error came).
func (r *stateReader) waitCtx(ctx context.Context) (wait context.Context, confirming bool, done func()) {
	f := r.failed
	var graceEnd time.Time
	if r.onFetchError != nil {
		graceEnd = r.settle(false)
		confirming = !f.since.IsZero() && f.oks >= 2
	} else {
		f.mu.Lock()
	}
	var cancel context.CancelFunc
	switch {
	case confirming:
		wait, cancel = context.WithTimeout(ctx, fetchMaxWait)
	case graceEnd.IsZero():
		wait, cancel = context.WithCancel(ctx)
	default:
		wait, cancel = context.WithDeadline(ctx, graceEnd)
	}
	switch {
	case r.moved.Load():
		cancel() // moved before its wake had a wait to end
	case !r.relistBy.IsZero():
		// A listing to retry: not at once, as kgo hands no buffered
		// records to a poll whose context has ended, and those read
		// meanwhile may reach the end.
		var cancelPoll context.CancelFunc
		wait, cancelPoll = context.WithTimeout(wait, relistPoll)
		cancelWait := cancel
		cancel = func() { cancelPoll(); cancelWait() }
	}
	f.wake = cancel
	f.mu.Unlock()
	return wait, confirming, func() {
		f.mu.Lock()
		f.wake = nil
		f.mu.Unlock()
		cancel()
	}
}

// readState lists the state topic's partitions (only those parts picks,
// given their number; nil: all) and starts reading them from the start.
func (c *Client) readState(ctx context.Context, parts func(n int) []int32) (*stateReader, error) {
	topic := c.cfg.Topics.State
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	ctx, cancelSetup := withDefaultTimeout(ctx, c.cfg.RequestTimeout)
	defer cancelSetup()
	starts, ends, err := c.listState(ctx)
	if err != nil {
		return nil, err
	}
	want := parts(len(ends[topic]))
	r := &stateReader{end: unread(topic, starts, ends, want), listPartition: c.listPartition, failed: &fetchErrors{}, topic: topic,
		partitions: len(ends[topic]), id: c.topicID(ctx, topic), lookUp: make(chan struct{}, 1), timeout: c.cfg.RequestTimeout}
	offsets := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if want == nil || slices.Contains(want, o.Partition) {
			offsets[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	// Retryable fetch errors (a partition without a leader) come back to
	// poll too, which keeps them while they persist; kgo still retries.
	// Committed records only, up to the ends listed (last stable offsets);
	// control records (transaction markers) come through so that a
	// partition ending with one is seen read to its end.
	r.cons, err = c.newReader(nil,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}), kgo.FetchMaxWait(fetchMaxWait),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords(),
		kgo.KeepRetryableFetchErrors(), kgo.WithHooks(r.failed))
	if err != nil {
		return nil, fmt.Errorf("creating the reader of %q: %w", topic, err)
	}
	return r, nil
}

// listState lists the state topic's start offsets and its ends: the last
// stable offsets, which a reader of committed records reads up to (a
// transaction still open when listed is not waited for).
func (c *Client) listState(ctx context.Context) (starts, ends kadm.ListedOffsets, err error) {
	topic := c.cfg.Topics.State
	adm := kadm.NewClient(c.prod)
	ends, err = adm.ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err == nil && len(ends[topic]) == 0 {
		err = fmt.Errorf("topic %q does not exist (the workers create it at start)", topic)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: listing the end offsets of %q: %w", setupErr(err), topic, withContextErr(ctx, err))
	}
	starts, err = adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: listing the start offsets of %q: %w", setupErr(err), topic, withContextErr(ctx, err))
	}
	return starts, ends, nil
}

// listPartition lists partition p of the state topic as listState lists
// them all: its start offset and its end (its last stable offset). It asks
// p's leader only, so that another partition's failure (a partition just
// added, without a leader yet; a broker down) neither fails it nor holds
// it up.
func (c *Client) listPartition(ctx context.Context, p int32) (start, end int64, err error) {
	list := func(isolation int8, at int64) (int64, error) {
		req := kmsg.NewPtrListOffsetsRequest()
		req.IsolationLevel = isolation
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = c.cfg.Topics.State
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp = p, at
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, c.prod)
		if err != nil {
			return 0, withContextErr(ctx, err)
		}
		for _, t := range resp.Topics {
			for _, o := range t.Partitions {
				if o.Partition == p {
					return o.Offset, kerr.ErrorForCode(o.ErrorCode)
				}
			}
		}
		return 0, errors.New("the partition is missing from the answer")
	}
	if end, err = list(1, -1); err != nil {
		return 0, 0, fmt.Errorf("listing its end offset: %w", err)
	}
	if start, err = list(0, -2); err != nil {
		return 0, 0, fmt.Errorf("listing its start offset: %w", err)
	}
	return start, end, nil
}

// unread is, of topic's partitions in want (nil: all), those holding
// records below their listed end, with that end.
func unread(topic string, starts, ends kadm.ListedOffsets, want []int32) map[int32]int64 {
	end := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if want == nil || slices.Contains(want, o.Partition) {
			if s, ok := starts.Lookup(topic, o.Partition); !ok || s.Offset < o.Offset {
				end[o.Partition] = o.Offset
			}
		}
	})
	return end
}

// relistAttempt bounds one listing of relist, which poll waits for: a
// partition's leader answers it in milliseconds, and one that does not is
// asked again after poll's pause, poll telling meanwhile what is due
// (fetchErrorGrace) and ending with its context.
const relistAttempt = time.Second

// relistPoll bounds a poll's wait while a listing is to retry: long enough
// to take the records kgo buffered, short enough not to delay the retry.
const relistPoll = 10 * time.Millisecond

// relist lists, while it has to (relistBy: followMoves moved the reader
// before it caught up), the end up to which the reader reads the partition
// it follows now (the key's partition of the topic created again, or its
// new partition after partitions were added): the one listed at its start
// was another partition's, which it no longer reads. It lists that
// partition only: the others, just added or created, may have no leader
// yet. It returns the listing's failure, which poll takes as a failure of
// the reading and retries after its pause, until relistBy: then it leaves
// no end, and the watch delivers the state it read so far and reads on.
func (r *stateReader) relist(ctx context.Context) error {
	if r.relistBy.IsZero() {
		return nil
	}
	p := r.following.Load()
	ctx, cancel := context.WithTimeout(ctx, min(relistAttempt, time.Until(r.relistBy)))
	defer cancel()
	start, end, err := r.listPartition(ctx, p)
	if err != nil && time.Now().Before(r.relistBy) {
		return err
	}
	if err == nil && end > max(start, r.readTo) {
		r.end[p] = end
	}
	r.relistBy = time.Time{}
	return err
}

// setupErr is the sentinel of a failure to list the state topic's offsets:
// ErrForbidden where Kafka refuses the requester (no Describe ACL on the
// topic), as New says of its reply topic, else ErrUnreachable.
func setupErr(err error) error {
	if errors.Is(err, kerr.TopicAuthorizationFailed) {
		return ErrForbidden
	}
	return ErrUnreachable
}

// caughtUp says whether every partition was read up to its listed end
// (and the end of the one moved to was listed, or given up: relist).
func (r *stateReader) caughtUp() bool { return len(r.end) == 0 && r.relistBy.IsZero() }

// poll reads the next records, giving each to f with whether the table was
// read up to the listed ends before it, and says whether it made progress:
// read a record of a partition still to be read up to its end (records of
// partitions read to their end, new writes, are none). The fetch errors of
// partitions still to be read are kept in r.failed until a record of their
// partition is read (kgo retries them); a poll that got only errors waits
// before it returns (pollpause.Pause), so that a caller polling again does
// not spin. A reader
// that follows its partition takes the errors as failure signals, records
// as the end of the streak (unless errors came with them), and tells
// onFetchError what is due before it waits and after; its wait ends early
// when the hooks see a streak begin or two Fetches in a row succeed, or at
// the grace's end, and lasts fetchMaxWait at most when it is to confirm
// that they did: a streak ends only at a poll begun after them that got
// no error.
func (r *stateReader) poll(ctx context.Context, f func(rec *kgo.Record, live bool)) (progressed bool, err error) {
	wait, confirming, done := r.waitCtx(ctx)
	fs := r.cons.PollFetches(wait)
	done()
	if fs.IsClientClosed() {
		return false, ErrClosed
	}
	// Before the records of the partition moved to: the move came before
	// them (followMoves). The end listed was another partition's.
	if r.moved.Swap(false) && !r.caughtUp() {
		clear(r.end)
		r.relistBy, r.readTo = time.Now().Add(r.timeout), 0
	}
	relistErr := r.relist(ctx)
	if err := ctx.Err(); err != nil {
		return false, err // not a failure of the listing
	}
	var errs []kgo.FetchError
	if relistErr != nil {
		errs = append(errs, kgo.FetchError{Topic: r.topic, Partition: r.following.Load(), Err: relistErr})
		r.failed.failedReading(relistErr, false)
	}
	for _, e := range fs.Errors() {
		if wait.Err() != nil && e.Topic == "" && errors.Is(e.Err, wait.Err()) {
			continue // woken to tell (kgo drained nothing)
		}
		errs = append(errs, e)
		if b, skip := skipTooLarge(r.cons, e.Err); skip != nil {
			r.skipped = append(r.skipped, skip)
			if end, ok := r.end[b.Partition]; ok {
				progressed = true
				r.failed.progress(b.Partition)
				if b.NextOffset >= end {
					delete(r.end, b.Partition)
				}
			}
			r.failed.skippedBatch(skip)
			continue
		}
		if errors.Is(e.Err, kerr.UnknownTopicID) {
			r.refused.Store(true)
			lookUpNow(r.lookUp)
		}
		if _, ok := r.end[e.Partition]; ok {
			r.failed.addPartition(e.Partition, fmt.Errorf("fetching partition %d of %q: %w", e.Partition, e.Topic, e.Err))
		}
		r.failed.failedReading(e.Err, false)
	}
	if r.onFetchError != nil {
		if len(errs) == 0 && fs.NumRecords() > 0 {
			r.failed.readAgain()
		}
		r.settle(confirming && len(errs) == 0)
		r.failed.mu.Unlock()
	}
	records := fs.NumRecords()
	if relistErr != nil {
		records = 0 // the listing is retried after the pause, not at each fetch
	}
	if err := r.pause.After(ctx, records, errs); err != nil {
		return false, err
	}
	fs.EachRecord(func(rec *kgo.Record) {
		live := r.caughtUp()
		if !r.relistBy.IsZero() && rec.Partition == r.following.Load() {
			r.readTo = rec.Offset + 1
		}
		if end, ok := r.end[rec.Partition]; ok {
			progressed = true
			r.failed.progress(rec.Partition)
			if rec.Offset+1 >= end {
				delete(r.end, rec.Partition)
			}
		}
		if !rec.Attrs.IsControl() {
			f(rec, live) // not a transaction's marker, which is no state
		}
	})
	return progressed, nil
}

// fetchMaxWait is how long the brokers hold a reader's Fetch without
// records.
const fetchMaxWait = 200 * time.Millisecond

// Locks returns the table of locks: the newest state of every lock on the
// lock state topic, read from its start, without the locks cleanup removed,
// sorted by namespace and name. Newest is the highest revision read since
// the key's last tombstone, records published again (the relay publishes
// at least once, and replicas overlap during a failover) told apart as
// Watch tells them: a record with the revision and ChangedAt of one of the
// last 64 read of its lock is a copy, which neither replaces the one taken
// nor brings back a lock a tombstone removed (but a copy of the tombstone
// read after the new life's first record leaves the lock out, until its
// next change: a tombstone carries nothing to tell it by); any other record after the
// tombstone starts the lock afresh, however its ChangedAt compares; and a
// lower revision whose ChangedAt is later than that of the one taken
// replaces it, as the lock's new life (deleted and created again, revisions
// starting over, the tombstone between compacted away, or read before a
// record of the old life that landed late), by Watch's rule and under the
// same assumption about PostgreSQL's clock. It reads the topic, not the
// database: a lock is there from its first change (see docs/design.md "Lock
// state topic"). It reads committed records only, up to each partition's
// last stable offset: a state written in a transaction (by another
// producer) counts once the transaction commits, never if it aborts, and
// one still open is not waited for. A record that cannot be decoded (no
// lock's state, a state whose namespace and lock_name do not make its key,
// or a format this client does not read) does not fail the read: its lock
// is left out of the table until a tombstone of its key or a readable
// record of a newer revision of the lock follows (a record that does not tell its lock
// leaves out every lock of its key, until a tombstone), and when some are
// left out at the end Locks returns the table of the others with an
// *UnreadableStateError naming them: a caller keeps the table with
// errors.As, and may check AffectsNamespace for its own namespace. Locks
// reads every namespace. It takes a key's records from the partition the key
// hashes to under the topic's partition count only: after partitions were
// added, the states left in a key's old partition are stale (see
// docs/design.md "Lock state topic").
//
// Errors reaching Kafka wrap ErrUnreachable (a refusal of the requester's
// right to the topic, TOPIC_AUTHORIZATION_FAILED listing its offsets,
// wraps ErrForbidden instead). So does a read that ctx's
// deadline cuts off while the brokers fail it (the errors are joined in:
// its connections' since its last progress, a record of a partition still
// to be read up to its end, and each such partition's fetch errors since
// its last record); one the deadline cuts off while the brokers answer (a
// topic too long to read in the time given) returns ctx's error, with its
// cause (context.Cause). A ctx without a deadline gets a bound: the read
// fails, wrapping ErrUnreachable, when Config.RequestTimeout passes without
// progress (new records of partitions read to their end are none). A
// record batch that decompresses past the bound, or cannot be decompressed
// (see Config.KafkaOpts), is skipped unread: Locks returns the table without the states in it, with
// an error that wraps kgo.ErrMaxDecompress.
//
// Its memory grows with the topic: while reading it holds every lock's
// state and the copies it has seen, about three times the table it returns
// (100,000 locks: a 132 MiB table, a heap peak of about 400 MiB; a
// million: a 602 MiB table, 3.0 GB resident at the peak, read in about
// 29 s on a 2-core machine).
func (c *Client) Locks(ctx context.Context) ([]LockRevision, error) {
	if err := c.begin(); err != nil {
		return nil, fmt.Errorf("reading the lock table: %w", err)
	}
	defer c.ops.Done()
	r, err := c.readState(ctx, func(int) []int32 { return nil })
	if err != nil {
		return nil, fmt.Errorf("reading the lock table: %w", err)
	}
	defer r.cons.Close()
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	topic := c.cfg.Topics.State
	// Without a deadline, a read that stalls (the brokers reached at the
	// setup stopped answering) ends after RequestTimeout without a record.
	stalled := fmt.Errorf("no record of %q read for %s", topic, c.cfg.RequestTimeout)
	progress := func() {}
	if _, ok := ctx.Deadline(); !ok {
		var stall context.CancelCauseFunc
		ctx, stall = context.WithCancelCause(ctx)
		timer := time.AfterFunc(c.cfg.RequestTimeout, func() { stall(stalled) })
		defer timer.Stop()
		progress = func() { timer.Reset(c.cfg.RequestTimeout) }
	}
	// By key, then by namespace and name, as two locks may share a key
	// ("b" in namespace "a", "a/b" in the default one): a tombstone, which
	// names no lock, removes every lock of its key.
	type lock struct{ ns, name string }
	table := map[string]map[lock]LockRevision{}
	// unreadable are, by key, the locks whose newest record read could
	// not be decoded (lock{} for a record that does not tell which lock of
	// its key it is); records counts such records.
	unreadable := map[string]map[lock]UnreadableLock{}
	// seen are, by key, the readable records taken of each lock (as Watch
	// takes them): a record published again is dropped, even after an
	// unreadable record left the lock out or a tombstone removed it.
	seen := map[string]map[lock]*taken{}
	records := 0
	for !r.caughtUp() {
		progressed, err := r.poll(ctx, func(rec *kgo.Record, _ bool) {
			key := string(rec.Key)
			if rec.Partition != keyPartition(key, r.partitions) {
				// A state left in the key's partition before partitions
				// were added: the key's newer ones are in this one.
				return
			}
			lr, err := readRecord(rec)
			switch {
			case err != nil:
				// The newest state of the lock is unknown: it is left
				// out, not shown as its older state, and counted rather
				// than losing the whole table to it. A record that does
				// not tell its lock leaves out every lock of its key.
				records++
				ul := unreadableLock(rec, err)
				id := lock{}
				if ul.Known {
					id = lock{ul.Namespace, ul.Name}
					delete(table[key], id)
				} else {
					delete(table, key)
				}
				if unreadable[key] == nil {
					unreadable[key] = map[lock]UnreadableLock{}
				}
				unreadable[key][id] = ul
			case lr.Deleted:
				delete(table, key)
				delete(unreadable, key)
				for _, t := range seen[key] {
					t.deleted()
				}
			default:
				id := lock{lr.Namespace, lr.Name}
				k := topics.LockKey(lr.Namespace, lr.Name)
				if seen[k] == nil {
					seen[k] = map[lock]*taken{}
				}
				if seen[k][id] == nil {
					seen[k][id] = &taken{}
				}
				if !seen[k][id].take(lr) {
					return
				}
				if table[k] == nil {
					table[k] = map[lock]LockRevision{}
				}
				table[k][id] = lr
				// Only this lock's state is known again, not that of
				// another lock of the key, nor of a record that did not
				// tell its lock (until a tombstone of the key).
				delete(unreadable[k], id)
			}
		})
		if progressed {
			progress()
		}
		if err != nil {
			return nil, fmt.Errorf("reading the lock table: %w", c.cutOff(ctx, err, r.failed.get(), stalled))
		}
	}
	out := make([]LockRevision, 0, len(table))
	for _, locks := range table {
		for _, lr := range locks {
			out = append(out, lr)
		}
	}
	slices.SortFunc(out, func(a, b LockRevision) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	// The states in a batch skipped unread are left out, the locks they
	// were of unknown.
	var skipped error
	if len(r.skipped) > 0 {
		skipped = fmt.Errorf("reading the lock table: %d record batch(es) skipped, the states in them left out (first: %w)", len(r.skipped), r.skipped[0])
	}
	var left []UnreadableLock
	keys := 0
	for _, locks := range unreadable {
		if len(locks) > 0 {
			keys++
		}
		left = slices.AppendSeq(left, maps.Values(locks))
	}
	if len(left) > 0 {
		slices.SortFunc(left, func(a, b UnreadableLock) int {
			return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
		})
		return out, errors.Join(fmt.Errorf("reading the lock table: %w", &UnreadableStateError{
			Topic: c.cfg.Topics.State, Locks: left, Keys: keys, Records: records, First: left[0].Err}), skipped)
	}
	return out, skipped
}

// cutOff is why Locks's read ended early with err (poll's: ctx's error, or
// ErrClosed): ErrUnreachable when it stalled or its deadline passed while
// fetches failed (failed, joined in), else ctx's error with its cause.
func (c *Client) cutOff(ctx context.Context, err, failed, stalled error) error {
	topic := c.cfg.Topics.State
	cause := context.Cause(ctx)
	err = withContextErr(ctx, err)
	switch {
	case errors.Is(cause, stalled):
		return fmt.Errorf("%w: %w", ErrUnreachable, errors.Join(cause, failed))
	case failed != nil && errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %q not read up to its end before the deadline: %w", ErrUnreachable, topic, errors.Join(failed, err))
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%q not read up to its end before the deadline (the brokers answer: a long topic takes longer): %w", topic, err)
	}
	return err
}

// WatchOption tunes Watch and Election.Observe.
type WatchOption func(*watchOptions)

type watchOptions struct {
	onFetchError func(error)
}

// OnFetchError has fn told when reading the lock state topic keeps
// failing while the watch runs (its setup's failures fail Watch itself):
// the brokers cannot be reached, or they refuse the fetches
// (TOPIC_AUTHORIZATION_FAILED without the Read ACL,
// UNKNOWN_TOPIC_OR_PARTITION). A failure streak begins at the first
// failure (a fetch error, a failed Fetch request, a failed connection to
// the partition's leader, or to any broker while the leader is not known,
// or a failed listing of the end of the partition a move brought the
// watch to before it delivered the lock: see Watch) and ends when reading
// works again: a record of the partition is read with no error in the
// same poll, or two Fetch requests in a row succeed and the poll after
// them gets no error (so a partition without new records tells it too). fn is told of a streak once, only after it
// lasted 5 s (kgo retries all along: a refused Fetch again as soon as the
// watch took its error, which it does every 100 ms to 1 s; a failed dial
// or request after a backoff of 250 ms to 1 s, unless Config.KafkaOpts
// or Client's options set another; a leader's move or election, over
// within a few seconds, is not told), with its latest failure: the error
// names the topic and partition and wraps ErrUnreachable, or ErrForbidden
// for an authorization refusal. Then fn is told nil once, when that
// streak ends. The latest failure may not be the first (a dial error to
// a broker gone, then LEADER_NOT_AVAILABLE), and it is not told again as
// it changes.
//
// A record batch of the partition that decompresses past the bound, or
// cannot be decompressed (see Config.KafkaOpts), is skipped unread, the revisions in it lost to the
// watch, which reads on past it: fn is told at once, with an error that
// names the batch and wraps kgo.ErrMaxDecompress (not ErrUnreachable),
// then nil once reading works again.
//
// The watch keeps retrying either way; the revisions delivered are the
// same. fn is called from the watch's reading goroutine, never
// concurrently with itself and never after the watch's channel closed;
// it holds the reading back while it runs, so it must not block (nor
// wait for the watch's channel, which that goroutine feeds). Default:
// none, the failures are silent.
func OnFetchError(fn func(error)) WatchOption {
	return func(o *watchOptions) { o.onFetchError = fn }
}

// Watch delivers the lock name (in the client's namespace) as it is now,
// then each transaction's change of it, in revision order, each once: a
// revision a record repeats (the relay publishes at least once) is dropped.
// When one transaction of the worker changed the lock several times
// (commands applied in one batch), only the last revision shows, so
// revisions may advance by more than one. A lock that has no state yet is
// delivered as revision 0, free; Deleted marks cleanup's removal, after
// which revisions start again at 1. A record with the revision and
// ChangedAt of one of the last 64 records the watch read of the lock is
// one published again, dropped, after the lock's tombstone too; any other
// record after a tombstone is the lock's next life's, however PostgreSQL's
// clock stamped it. The channel closes when ctx ends or the client closes.
// A slow receiver holds the reading back: nothing the watch read is
// skipped. The topic is compacted, though, and Kafka's cleaner does
// not wait for a watch: one that lags behind the partition's end by more
// than a rolled segment and the cleaner's next pass may miss the revisions
// compaction removed before it read them (it still delivers the later ones,
// in order), and past the topic's delete.retention.ms (24 h by default) a
// tombstone too, delivering no Deleted for it. A segment rolls at the
// topic's segment.ms (an hour, as the workers create it) or segment.bytes
// (64 MiB), whichever comes first: on a busy partition, well within the
// hour. Having missed a tombstone so, or reading the new life before a
// record of the old one that landed late, it tells the lock's new life
// (deleted and created again, revisions starting over) by ChangedAt: a
// record whose revision is not above that of the last one it delivered
// since the last tombstone it read is taken when its ChangedAt is later
// than that one's, which no copy of a record published again has; a record
// a worker republished (Operation "republish") is not taken so, and the
// new life then shows from its next change. ChangedAt is PostgreSQL's
// clock, which this takes never to go back: after a step back of that
// clock, or a failover to a standby whose clock is behind, a late copy of
// an older revision (not among the last 64 read) stamped before it can
// pass for a new life, delivered after newer revisions (and copies of
// those that follow, again). A record of the lock's key that cannot be
// decoded (as Locks says: a state of a lock of another key too) is
// delivered as a LockRevision with Unreadable set (once, until a readable
// revision or a tombstone follows): the lock's state is unknown then, as
// Locks leaves such a lock out of its table.
//
// Watch reads the lock's partition of the lock state topic from its start
// (compaction keeps it to about one record per lock) and then follows it,
// so it needs no worker and survives broker restarts like any consumer.
// It reads committed records only: a state another producer wrote in a
// transaction comes once the transaction commits, never if it aborts, and
// a transaction left open holds back the states written after it until it
// ends (Kafka aborts it after the producer's transaction.timeout.ms).
// Its setup fails with ErrUnreachable (ErrForbidden when Kafka refuses the
// topic) when Kafka cannot be reached; after it, the reading is retried
// for as long as the watch runs and, unless OnFetchError is given, its
// failures are silent: no revision comes, as when the lock does not
// change.
//
// The lock's partition is the one its key hashes to under the topic's
// partition count. Once a minute the watch looks the count up: when
// partitions were added and the key hashes to another one now, it reads
// that one from its start instead (delivering the revisions there newer
// than the last it delivered) and drops the old one's records, which are
// stale (docs/design.md "Lock state topic"). Until it noticed (up to a
// minute, plus the kgo.MetadataMinAge kgo caches metadata for: 1 s as New
// sets it) it still reads the old partition only. The same look-up, made
// at once when the reading is refused the topic's ID, notices the topic
// deleted and created again: the watch then reads the key's partition of
// the new topic from its start, delivering the revisions there newer than
// the last it delivered (a worker's republish of that one is not delivered
// again). Either move may come before the watch delivered the lock as it
// is now: it then lists the end of the partition it moved to and delivers
// the lock as read up to there (as it read it before, a free lock at
// revision 0 if it read nothing, when that partition holds no record of
// the lock yet). It lists that partition only, and retries a listing that
// fails (a failure of the reading, for OnFetchError) for up to
// Config.RequestTimeout; then it delivers the lock as read so far.
//
// Cost: each watch (and each Election.Observe) reads with a Kafka client of
// its own, two connections to the brokers, sending a fetch every 200 ms
// while the lock is quiet, and its setup reads the lock's partition from
// its start. Watch the locks a process needs, each once, not one per
// request: 1,000 watches on one Client held 2,154 connections and 128 to
// 163 MiB of heap, and took a quarter of a core while every lock was quiet
// (docs/performance.md).
func (c *Client) Watch(ctx context.Context, name string, opts ...WatchOption) (<-chan LockRevision, error) {
	key := topics.LockKey(c.cfg.Namespace, name)
	if msg := topics.CheckLockName(name); msg != "" {
		return nil, fmt.Errorf("watching lock %q: %w", key, invalidRequest(msg))
	}
	// Before begin: an option that panics, the panic recovered by the
	// caller, must not leave an operation counted that Close would wait
	// for for ever.
	var o watchOptions
	applyOptions(&o, opts)
	if err := c.begin(); err != nil {
		return nil, fmt.Errorf("watching lock %q: %w", key, err)
	}
	var part int32
	r, err := c.readState(ctx, func(n int) []int32 {
		part = keyPartition(key, n)
		return []int32{part}
	})
	if err != nil {
		c.ops.Done()
		return nil, fmt.Errorf("watching lock %q: %w", key, err)
	}
	r.following.Store(part)
	if o.onFetchError != nil {
		r.follow(o.onFetchError)
	}
	out := make(chan LockRevision)
	go c.watch(ctx, r, key, name, out)
	return out, nil
}

// partitionCheckInterval is how often a watch looks up the state topic's
// partition count (followMoves), and the reply reader its topic
// (followReplyTopic): a lookup is a Metadata request, which the client's
// watches and reader share (kgo caches it for MetadataMinAge, 1 s as New
// sets it). A constant but for the tests, which shorten it.
var partitionCheckInterval = time.Minute

// lookUpTopic looks topic up every partitionCheckInterval, and at once
// each time now signals (nil: never), until ctx ends, giving seen each
// answer about it: its ID and partitions, or its Err (missing:
// UNKNOWN_TOPIC_OR_PARTITION). A look-up that fails as a whole, or whose
// answer lacks the topic, is skipped: the readers' fetches fail too, and
// say so. The caller runs it on a goroutine of its own, and seen runs on
// it.
func (c *Client) lookUpTopic(ctx context.Context, topic string, now <-chan struct{}, seen func(kadm.TopicDetail)) {
	adm := kadm.NewClient(c.prod)
	tick := time.NewTicker(partitionCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-now:
		}
		tds, err := adm.ListTopics(ctx, topic)
		if td, ok := tds[topic]; err == nil && ok {
			seen(td)
		}
	}
}

// followMoves looks the state topic up (lookUpTopic) until ctx ends, at
// once when poll is refused the topic's ID, and keeps the reader on the
// key's partition of the topic as it is now (docs/design.md "Lock state
// topic"), as followReplyTopic keeps the reply reader on its topic:
//
//   - partitions added, and key hashing to another partition now: the
//     reader reads that one, from its start, instead of the one it
//     followed: the key's new states are written there, and a worker's
//     start publishes its current state there; records of the old one,
//     still buffered, are dropped by the watch (r.following);
//   - the topic created again (another ID), or there again after it was
//     missing while the reader was refused its ID (dropped then): the
//     reader drops the old one (kgo never adopts a new ID by itself) and
//     reads the key's partition of the new one from its start. The new
//     instance holds only what was written after it was created: the
//     workers' republish at their start (the revision the watch
//     delivered, Operation "republish": dropped) and later changes, in
//     order; copies the relay published again keep their revision and
//     changed_at, and are dropped too (taken).
//
// The watch runs it from its start, on a goroutine of its own. A move
// before the reader caught up leaves r.end listing the end of a partition
// the reader no longer reads: poll, on the reading goroutine that owns
// r.end, lists the new one's instead (moved, relist), woken if it waits.
func (c *Client) followMoves(ctx context.Context, r *stateReader, key string) {
	inst := topicInstance{n: r.partitions, id: r.id}
	c.lookUpTopic(ctx, r.topic, r.lookUp, func(td kadm.TopicDetail) {
		change, was := inst.look(td, r.refused.Swap(false))
		if change == instanceMissing {
			r.cons.PurgeTopicsFromClient(r.topic)
			return
		}
		if td.Err != nil || inst.n == 0 {
			return
		}
		old, p := r.following.Load(), keyPartition(key, inst.n)
		switch change {
		case instanceAgain:
			r.cons.PurgeTopicsFromClient(r.topic)
		case instanceKept:
			if inst.n == was || p == old {
				return // no partition added, or the key's partition is the same
			}
		}
		r.following.Store(p)
		// Set before the partition's records can come: poll sees it
		// first, and lists the end again if it has not caught up.
		r.moved.Store(true)
		r.cons.AddConsumePartitions(map[string]map[int32]kgo.Offset{r.topic: {p: kgo.NewOffset().AtStart()}})
		if change == instanceKept {
			r.cons.RemoveConsumePartitions(map[string][]int32{r.topic: {old}})
		}
		r.failed.wakePoll()
	})
}

// opRepublish is the operation of a lock state record a worker published
// again, unchanged but for its changed_at (docs/design.md "Lock state
// topic").
const opRepublish = "republish"

// keptTaken is how many of a lock's records a reader keeps the revision
// and changed_at of, to tell the copies published again by identity
// (taken). The relay sends its unacknowledged rows again in their order,
// so the copies of a life that follow its tombstone are its last records,
// as many as the rows sent again held (rarely any with cleanup's max_age
// of an hour, the default). 64 covers that many changes of one lock, for
// at most 2 KiB a lock (Locks keeps them for each lock it reads, as few
// for a lock with fewer records read).
const keptTaken = 64

// ident tells a lock's record from another of the lock: a copy published
// again has its revision and changed_at; the next life's record of the
// same revision was stamped by the database at another microsecond,
// earlier too after its clock stepped back.
type ident struct {
	revision  int64
	changedAt time.Time
}

// taken is what a reader (a watch, or Locks for each lock) took of one
// lock's readable records, against which it tells the records published
// again (the relay publishes at least once, and replicas overlap during a
// failover).
type taken struct {
	// last is the last record taken since the lock's last tombstone read
	// (none after it).
	last ident
	// recent are the last keptTaken records read, taken or dropped, across
	// tombstones, next the oldest's index once there are that many.
	recent []ident
	next   int
}

// take takes lr, a readable record of the lock, unless it is one
// published again: one of the last keptTaken read has its revision and
// changed_at (however PostgreSQL's clock stamped the lock's next life,
// after a tombstone, or a step of it back), or, since the lock's last
// tombstone read, one taken had its revision or a higher one and lr is
// of no new life (newLife). After a tombstone, then, any other record is
// the lock's next life, not measured against the life it ended.
func (t *taken) take(lr LockRevision) bool {
	id := ident{lr.Revision, lr.ChangedAt}
	if slices.ContainsFunc(t.recent, func(r ident) bool { return r.revision == id.revision && r.changedAt.Equal(id.changedAt) }) {
		return false
	}
	// Kept whether taken or not: a republish or a late older revision
	// dropped here may be published again after a tombstone.
	if len(t.recent) < keptTaken {
		t.recent = append(t.recent, id)
	} else {
		t.recent[t.next] = id
		t.next = (t.next + 1) % keptTaken
	}
	if lr.Revision <= t.last.revision && !newLife(lr, t.last) {
		return false
	}
	t.last = id
	return true
}

// deleted ends the lock's life at its tombstone: the records taken of it
// are kept, to drop their copies that follow; no revision of it measures
// the next life's.
func (t *taken) deleted() { t.last = ident{} }

// newLife says whether lr, a readable record of the lock whose revision is
// not above that of last, the last one a watch (or Locks) took since the
// lock's last tombstone it read, and no copy of a record taken (take), is
// of a new life of the lock: deleted and created again since (its
// revisions start over at 1), the tombstone between them compacted away
// before the watch read it (a receiver lagging past delete.retention.ms),
// or read before a record of the old life that landed late. Its
// changed_at, the database's time of its change, is later than last's: a
// copy of a record published again has the same, and an older revision
// that lands late (from a replica that lost the lock's partition) an
// earlier one. A record republished by a worker's start (opRepublish) has
// a later changed_at too, and its revision unchanged, so it is never taken
// as a new life: the new life then shows from its next change. This takes
// PostgreSQL's clock never to go back: a step back of it, or a failover to
// a standby whose clock is behind, can stamp a newer revision before an
// older one, a late copy of which (not among the last keptTaken taken)
// then passes for a new life.
func newLife(lr LockRevision, last ident) bool {
	return last.revision > 0 && lr.Operation != opRepublish && lr.ChangedAt.After(last.changedAt)
}

func (c *Client) watch(ctx context.Context, r *stateReader, key, name string, out chan<- LockRevision) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.closing, cancel)
	var moves sync.WaitGroup
	defer func() {
		stop()
		cancel()
		moves.Wait()
		r.cons.Close()
		close(out)
		c.ops.Done()
	}()
	// From the start: the topic may be created again, or partitions added,
	// before the reader caught up, which it would then never do.
	moves.Go(func() { c.followMoves(ctx, r, key) })
	send := func(lr LockRevision) bool {
		select {
		case out <- lr:
			return true
		case <-ctx.Done():
			return false
		}
	}
	// current is the lock's last state read; until the partition was read
	// up to its listed end it is only kept, then sent once, first. took
	// holds the readable ones taken, against which records published
	// again are told apart.
	current := LockRevision{Namespace: c.cfg.Namespace, Name: name, Status: StatusFree, Limit: 1,
		Record: topics.LockState{V: topics.Version, Namespace: c.cfg.Namespace, LockName: name, Status: topics.StatusFree, Limit: 1,
			Holders: []topics.Holder{}}}
	var took taken
	sentCurrent := false
	// sendCurrent sends current once the reader has caught up: at the top
	// of the loop, or in a poll that read past the listed end in the
	// fetch that reached it.
	sendCurrent := func() bool {
		if !sentCurrent {
			sentCurrent = send(current)
		}
		return sentCurrent
	}
	for ctx.Err() == nil {
		if r.caughtUp() && !sendCurrent() {
			return
		}
		_, err := r.poll(ctx, func(rec *kgo.Record, live bool) {
			if live && !sendCurrent() || string(rec.Key) != key || rec.Partition != r.following.Load() {
				// Not the lock's key, or a record of the partition it
				// followed before partitions were added.
				return
			}
			lr, err := readRecord(rec)
			switch {
			case err != nil:
				// Its state is unknown now (the record may be another
				// lock's of the same key, which cannot be told either).
				if current.Unreadable != nil {
					return // said already
				}
				lr = LockRevision{Unreadable: err}
			case !lr.Deleted && (lr.Namespace != c.cfg.Namespace || lr.Name != name):
				return // another lock's of the same key
			case lr.Deleted && current.Deleted:
				// The tombstone published again. (One after an unreadable
				// record ends the unknown state, as Locks takes it.)
				return
			case lr.Deleted:
				took.deleted()
			case !took.take(lr):
				// A record published again, even after an unreadable one
				// (that may have been newer) or its lock's tombstone.
				return
			}
			lr.Namespace, lr.Name = c.cfg.Namespace, name
			current = lr
			if live {
				send(lr)
			}
		})
		if err != nil {
			return
		}
	}
}
