package worker

import (
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/fetchbound"
	"github.com/omninode/lockworker/topics"
)

// A record batch of the commands topic cannot be read when it decompresses
// past the bound (fetchbound.Ratio times its compressed size, and
// maxBatchBytes, or a kgo.MaxDecompressBatchBytes in Config.KafkaOpts;
// fetchbound.Decompressor), or cannot be decompressed at all (corrupt, or
// of a codec variant the worker does not read: fetchbound.Decompressor
// refuses it the same way, and logs why): kgo hands out none of its records, reports
// kgo.ErrDecompressTooLarge and fetches nothing more of the partition until
// it is moved past the batch. Its commands cannot be answered one by one, so
// the batch is skipped as a whole, in order: the transaction that applies
// the partition's records polled before it (or a later one of the same
// applier) moves the stored offset past it, from where that transaction
// found it, as every batch does, and writes a marker naming its offsets to
// the dead-letter topic. The client is moved past it once that transaction
// committed (committed, seekTo), not before: kgo takes a seek's offset as
// marked for commit (SetOffsets sets the head it commits), and the group's
// offset in Kafka must not get ahead of PostgreSQL's, which a partition's
// next owner would take for PostgreSQL having lost transactions
// (knowResumed). A replica that stops before that transaction commits
// leaves the stored offset before the batch, and its partition's next owner
// meets the batch and skips it the same way.

// DeadLetterBatchTooLarge is the reason of a dead-letter marker for a batch
// of the commands topic skipped unread because it decompresses past the
// bound or cannot be decompressed (kgo reports both alike, so the marker
// cannot tell which): the marker's error header starts with it, and
// Metrics.DeadLettered is told it.
const DeadLetterBatchTooLarge = "BATCH_TOO_LARGE"

// HeaderSourceLastOffset is a dead-letter marker's header of the last offset
// of the batch it stands for; source_offset is the batch's first, except for
// a compressed message set of the old formats (v0/v1), of which kgo reports
// only the wrapper's offset, the last inside: both are then that one.
const HeaderSourceLastOffset = "source_last_offset"

// queueTooLarge adds to segs the batches the client could not decompress
// within the bound, behind the records polled before them. It runs under
// w.mu in the poll loop, after the poll's records are added and before
// seekRewound. A batch of a partition not owned, stopped, or losing
// (fetched from the client's own reset point until its check's seek) is
// left alone: fetched again from where its next owner, restart or check
// resumes, it is reported again there. A skip is not queued for it: a
// stopped partition's segments are dropped, and a losing one's check may
// seek back before the batch, where a skip would move the stored offset
// past records fetched again (lost). But kgo fetches the partition no
// further until a seek moves it, and a seek to the position it holds is
// not made (applySetOffsets: the target equals the last polled offset +1
// with its epoch, as a restart's stored offset can): a partition still
// owned is marked refetch, so that its next seek is made whatever the
// position (seekRewound). One not owned starts afresh when assigned.
func (w *Worker) queueTooLarge(segs [][]segment, batches []*kgo.ErrDecompressTooLarge, polled time.Time) {
	for _, b := range batches {
		p := w.parts[b.Partition]
		if p == nil {
			continue
		}
		if p.losing || p.stopped() {
			p.refetch = true
			continue
		}
		// The client stays stopped at b until the skip's seek; a restart
		// before that seeks to the stored offset, which may be where the
		// client stands: made whatever the position.
		p.refetch = true
		p.pending.Add(1) // under w.mu: revoked sees it before it waits
		segs[p.lane] = append(segs[p.lane], segment{p: p, tooLarge: b, polledAt: polled})
		w.log.Warn().Int32("partition", b.Partition).Int64("offset", b.Offset).Int64("last_offset", b.NextOffset-1).
			Int("bound", w.batchBound).Int("ratio_bound", fetchbound.Ratio).
			Msg("a record batch of the commands topic decompresses past the bound, or cannot be decompressed: it is skipped unread once the records before it are applied")
	}
}

// unskipped returns the batches of skips not below stored (-1: nothing
// applied), and not already covered by one before them.
func unskipped(skips []*kgo.ErrDecompressTooLarge, stored int64) []*kgo.ErrDecompressTooLarge {
	var out []*kgo.ErrDecompressTooLarge
	for _, b := range skips {
		if b.NextOffset > stored {
			out = append(out, b)
			stored = b.NextOffset
		}
	}
	return out
}

// skipMarker is the headers of the dead-letter marker of batch b: the
// reason, and where it was. The marker has no key and no value.
func (w *Worker) skipMarker(b *kgo.ErrDecompressTooLarge) []topics.Header {
	reason := fmt.Sprintf("%s: the record batch at offsets %d..%d decompresses (its records and headers counted as the memory they take) to more than %d times its compressed size or more than %d bytes (or is zstd with a window past that), or cannot be decompressed (corrupt, or of a codec variant this worker does not read): it was skipped unread, and none of its records is answered",
		DeadLetterBatchTooLarge, b.Offset, b.NextOffset-1, fetchbound.Ratio, w.batchBound)
	return []topics.Header{
		{Key: topics.HeaderError, Value: []byte(reason)},
		{Key: topics.HeaderSourceTopic, Value: []byte(b.Topic)},
		{Key: topics.HeaderSourcePartition, Value: []byte(strconv.Itoa(int(b.Partition)))},
		{Key: topics.HeaderSourceOffset, Value: []byte(strconv.FormatInt(b.Offset, 10))},
		{Key: HeaderSourceLastOffset, Value: []byte(strconv.FormatInt(b.NextOffset-1, 10))},
	}
}

// skipped logs and counts batch b of partition p, skipped in a transaction
// that committed.
func (w *Worker) skipped(p *partition, b *kgo.ErrDecompressTooLarge) {
	w.cfg.Metrics.DeadLettered(DeadLetterBatchTooLarge)
	w.log.Error().Int32("partition", p.id).Int64("offset", b.Offset).Int64("last_offset", b.NextOffset-1).
		Int("bound", w.batchBound).Int("ratio_bound", fetchbound.Ratio).
		Msg("skipped a record batch of the commands topic that decompresses past the bound, or cannot be decompressed: its records were not read nor answered; a marker naming its offsets went to the dead-letter topic")
}
