// Package pollpause is the wait of a Kafka reader after a poll that got
// only fetch errors. kgo hands a lasting fetch error (a refused Read ACL, a
// partition without a leader) to every poll and sends the next Fetch as
// soon as a poll takes it, so a reader that polls again at once has the
// broker answer tens of thousands of Fetches a second.
package pollpause

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	first = 100 * time.Millisecond
	most  = time.Second
)

// Pause is one reader's wait. The zero value is ready; it is not safe for
// concurrent use (one poll loop owns it).
type Pause struct {
	last time.Duration // the previous wait of the current run of errors; 0: none
}

// After is called after each poll with the number of records and the
// fetch errors it got. After a poll of errors only it waits 100 ms,
// doubling while such polls follow up to 1 s; a poll with records starts
// over. A batch past the decompression bound (kgo.ErrDecompressTooLarge)
// counts as a record: kgo reports it once and fetches its partition no
// further until the reader moves past it, then the next batch at once, so
// it is progress, and a pause after it would hold back every partition
// the reader reads, behind each batch a producer makes too large. It
// returns ctx's error if ctx ends first.
func (p *Pause) After(ctx context.Context, records int, errs []kgo.FetchError) error {
	for _, e := range errs {
		if _, ok := errors.AsType[*kgo.ErrDecompressTooLarge](e.Err); ok {
			records++
		}
	}
	switch {
	case records > 0:
		p.last = 0
		return nil
	case len(errs) == 0:
		return nil
	case p.last == 0:
		p.last = first
	default:
		p.last = min(2*p.last, most)
	}
	t := time.NewTimer(p.last)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
