package worker

import "github.com/twmb/franz-go/pkg/kgo"

// detach copies polled records out of the buffers kgo fetched them into,
// and returns the copies and the bytes they hold (keys, values and
// headers). A kgo record's key, value and header values point into its
// batch's decompressed buffer (up to maxBatchBytes), and the record itself
// into the batch's []kgo.Record: a record waiting in a queue for its
// applier would keep all of that alive, so that with many partitions the
// records waiting, each of another batch, held whole batches. A copy holds
// only its own bytes, in one allocation; a small cost beside decoding the
// command. Header keys are strings, which kgo already copies.
func detach(rs []*kgo.Record) ([]*kgo.Record, int) {
	out := make([]*kgo.Record, len(rs))
	total := 0
	for i, r := range rs {
		n := len(r.Key) + len(r.Value)
		for _, h := range r.Headers {
			n += len(h.Value)
		}
		buf := make([]byte, 0, n)
		c := *r
		c.Key, buf = copyInto(buf, r.Key)
		c.Value, buf = copyInto(buf, r.Value)
		if r.Headers != nil {
			c.Headers = make([]kgo.RecordHeader, len(r.Headers))
			for j, h := range r.Headers {
				c.Headers[j].Key = h.Key
				c.Headers[j].Value, buf = copyInto(buf, h.Value)
				total += len(h.Key)
			}
		}
		out[i] = &c
		total += n
	}
	return out, total
}

// copyInto appends b to buf (which has room for it) and returns the copy,
// capped so that appending to it cannot overwrite what follows; nil stays
// nil (a record without a key or value).
func copyInto(buf, b []byte) ([]byte, []byte) {
	if b == nil {
		return nil, buf
	}
	start := len(buf)
	buf = append(buf, b...)
	return buf[start:len(buf):len(buf)], buf
}
