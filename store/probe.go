package store

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// probe is Probe's connection, apart from the pool: the pool's may all be
// held by transactions waiting on a server that is reachable but busy,
// which says nothing of whether this process can reach it.
type probe struct {
	mu   sync.Mutex
	conn *pgx.Conn // nil: none yet, or the last one failed
}

// Probe tells whether PostgreSQL answers this process now: one round trip,
// bounded by ctx, on a connection of its own, made again after one fails.
// Its error is translated; a server that does not answer within ctx fails
// it with ctx's error.
func (s *Store) Probe(ctx context.Context) error {
	s.probe.mu.Lock()
	defer s.probe.mu.Unlock()
	if s.probe.conn == nil {
		c, err := pgx.ConnectConfig(ctx, s.Pool.Config().ConnConfig)
		if err != nil {
			return translate(err)
		}
		s.probe.conn = c
	}
	if err := s.probe.conn.Ping(ctx); err != nil {
		s.probe.closeConn()
		return translate(err)
	}
	return nil
}

// closeConn closes the probe's connection, if any, without waiting on a
// server that may not answer; s.probe.mu held.
func (p *probe) closeConn() {
	if p.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	p.conn.Close(ctx) // its error says only that the goodbye did not arrive
	p.conn = nil
}
