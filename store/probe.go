package store

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// probeLifetime is how long Probe keeps one connection: a new one follows
// the connection string's hosts and DNS as the pool's do.
const probeLifetime = time.Minute

// probeRefusedWait is how long Probe takes a refusal the server sent (too
// many connections, a login refused) as its answer before it connects
// again: a full server is not asked for a backend each second, nor a
// refused login written to its log each second.
const probeRefusedWait = 5 * time.Second

// probe is Probe's connection, apart from the pool: the pool's may all be
// held by transactions waiting on a server that is reachable but busy,
// which says nothing of whether this process can reach it.
type probe struct {
	mu      sync.Mutex
	conn    *pgx.Conn // nil: none yet, or the last one failed or aged
	opened  time.Time
	refused time.Time // the server's last refusal to connect
	closed  bool      // Store.Close: no more connections
}

// errProbeClosed is Probe's error after Store.Close.
var errProbeClosed = errors.New("the store is closed")

// Probe tells whether PostgreSQL answers this process now: one round trip
// on a connection of its own, made again after one fails. Each attempt to
// connect (one per address of each host of the connection string) and the
// round trip are each bounded by timeout, the whole (host names resolved
// included) by ctx. An error the server sends (too many connections, a
// login refused, starting up) is an answer: nil, though that connection is
// not kept, and it stands for probeRefusedWait. A connection exception
// (SQLSTATE class 08, as a pooler such as PgBouncer sends when it cannot
// reach the server) is not, nor is any error of a connection string whose
// other host did not answer at all. Otherwise its error is translated; a
// server that does not answer in time fails it with a deadline's error.
func (s *Store) Probe(ctx context.Context, timeout time.Duration) error {
	s.probe.mu.Lock()
	defer s.probe.mu.Unlock()
	if s.probe.closed {
		return errProbeClosed
	}
	if s.probe.conn != nil && time.Since(s.probe.opened) > probeLifetime {
		s.probe.closeConn()
	}
	if s.probe.conn == nil {
		if time.Since(s.probe.refused) < probeRefusedWait {
			return nil
		}
		cc := s.Pool.Config().ConnConfig // a copy
		cc.ConnectTimeout = timeout
		c, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			return s.probe.answered(err)
		}
		s.probe.conn, s.probe.opened = c, time.Now()
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := s.probe.conn.Ping(pctx); err != nil {
		s.probe.closeConn()
		return s.probe.answered(err)
	}
	return nil
}

// answered is Probe's error for err: nil when the server sent it (and it
// is noted as a refusal); s.probe.mu held.
func (p *probe) answered(err error) error {
	if serverSent(err) {
		p.refused = time.Now()
		return nil
	}
	return translate(err)
}

// serverSent says whether err is the server's own answer: a PostgreSQL
// error that is not a connection exception, and no host of the attempt
// left unanswered (a network error, a timeout).
func serverSent(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	if !ok || len(pgErr.Code) < 2 || pgErr.Code[:2] == "08" {
		return false
	}
	_, network := errors.AsType[net.Error](err)
	return !network && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}

// closeConn closes the probe's connection, if any, without waiting on a
// server that may not answer; p.mu held.
func (p *probe) closeConn() {
	if p.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	p.conn.Close(ctx) // its error says only that the goodbye did not arrive
	p.conn = nil
}
