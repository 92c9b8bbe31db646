package main

import (
	"sort"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/omninode/lockworker/internal/chaos"
)

// hist records durations in microseconds, from 1 µs to 10 minutes with 3
// significant digits. Safe for concurrent use.
type hist struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

const histMaxUS = int64(10 * time.Minute / time.Microsecond)

func newHist() *hist { return &hist{h: hdrhistogram.New(1, histMaxUS, 3)} }

func (h *hist) add(d time.Duration) {
	us := d.Microseconds()
	us = max(us, 1)
	us = min(us, histMaxUS)
	h.mu.Lock()
	_ = h.h.RecordValue(us)
	h.mu.Unlock()
}

// dist summarizes a histogram in milliseconds.
type dist struct {
	N    int64   `json:"n"`
	Mean float64 `json:"mean_ms"`
	P50  float64 `json:"p50_ms"`
	P95  float64 `json:"p95_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
}

func (h *hist) dist() dist {
	h.mu.Lock()
	defer h.mu.Unlock()
	ms := func(us int64) float64 { return float64(us) / 1000 }
	if h.h.TotalCount() == 0 {
		return dist{}
	}
	return dist{
		N:    h.h.TotalCount(),
		Mean: h.h.Mean() / 1000,
		P50:  ms(h.h.ValueAtQuantile(50)),
		P95:  ms(h.h.ValueAtQuantile(95)),
		P99:  ms(h.h.ValueAtQuantile(99)),
		Max:  ms(h.h.Max()),
	}
}

// distOf summarizes signed samples exactly (for delays that may be negative).
func distOf(ds []time.Duration) dist {
	if len(ds) == 0 {
		return dist{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	q := func(pct int) float64 { return ms(chaos.NearestRank(s, pct)) }
	return dist{N: int64(len(s)), Mean: ms(sum / time.Duration(len(s))), P50: q(50), P95: q(95), P99: q(99), Max: ms(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
