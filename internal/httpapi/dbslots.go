package httpapi

import (
	"context"
	"fmt"
)

// DBSlots bound the connections of the worker's pool that the HTTP side
// holds at once. Its reads use the worker's own pool (so a check fails when
// the worker cannot reach the database), and the port is open to probes and
// scrapes: without a bound, a burst of requests would hold the connections
// the worker's batches need, all of them in a small pool.
//
// Every read of the HTTP side, /metrics's (metrics.Config.Hold) included,
// holds one of httpConns(maxConns) slots: at most half the pool, so the
// worker keeps the other half. Within them, the endpoints' reads share
// requestConns(maxConns) of their own, a quarter of the pool, and /health
// has one of its own, so no burst of other requests, open ones like
// /health/postgres among them, keeps the readiness probe waiting past its
// timeout; /metrics's reads are one each already (shared by concurrent
// scrapes). From 10 connections (the default) on, the slots are those
// parts' sum, so none waits for another; in a smaller pool they may.
type DBSlots struct {
	all      chan struct{} // every read
	requests chan struct{} // the endpoints' reads
	probe    chan struct{} // /health's own
}

// NewDBSlots returns the slots for a pool of maxConns connections.
func NewDBSlots(maxConns int32) *DBSlots {
	return &DBSlots{
		all:      make(chan struct{}, httpConns(maxConns)),
		requests: make(chan struct{}, requestConns(maxConns)),
		probe:    make(chan struct{}, 1),
	}
}

// Parts of the slots: the endpoints' reads, /health's, and /metrics's two
// (the database gauges and the consumer lag). More would never be used.
const (
	maxRequestConns = 2
	maxHTTPConns    = maxRequestConns + 1 + 2
)

// httpConns is how many of a pool of maxConns connections the HTTP side may
// hold at once: half, at least one (a pool of one is shared: the reads take
// milliseconds and end at their 2 s), at most maxHTTPConns.
func httpConns(maxConns int32) int {
	return min(maxHTTPConns, max(1, int(maxConns)/2))
}

// requestConns is how many of them the endpoints' reads may hold: a
// quarter of the pool, at least one, at most maxRequestConns. From 4
// connections on it is below httpConns, so /health's slot has a connection.
func requestConns(maxConns int32) int {
	return min(maxRequestConns, max(1, int(maxConns)/4))
}

// Hold runs read holding one of the slots: /metrics's reads take it, through
// metrics.Config.Hold.
func (d *DBSlots) Hold(ctx context.Context, read func(context.Context) error) error {
	return hold(ctx, d.all, nil, read)
}

// withDB runs read holding one of the endpoints' slots, waiting for one
// until ctx ends.
func (s *server) withDB(ctx context.Context, read func(context.Context) error) error {
	return hold(ctx, s.db.requests, nil, func(ctx context.Context) error { return s.db.Hold(ctx, read) })
}

// withProbeDB is withDB for /health: its own slot, or an endpoints' one if
// that is free first, so that /health never has fewer than before it had
// its own (one /health cannot keep another, the readiness probe, waiting).
func (s *server) withProbeDB(ctx context.Context, read func(context.Context) error) error {
	return hold(ctx, s.db.probe, s.db.requests, func(ctx context.Context) error { return s.db.Hold(ctx, read) })
}

// hold runs read holding a slot of a or of b (nil: none).
func hold(ctx context.Context, a, b chan struct{}, read func(context.Context) error) error {
	var held chan struct{}
	select {
	case a <- struct{}{}:
		held = a
	case b <- struct{}{}: // never chosen when b is nil
		held = b
	case <-ctx.Done():
		return fmt.Errorf("waiting for a turn to read PostgreSQL behind other HTTP requests: %w", ctx.Err())
	}
	defer func() { <-held }()
	return read(ctx)
}
