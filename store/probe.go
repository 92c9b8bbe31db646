package store

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// probeLifetime is how long Probe keeps one connection: a new one follows
// the connection string's hosts and DNS as the pool's do.
const probeLifetime = time.Minute

// probe is Probe's connection, apart from the pool: the pool's may all be
// held by transactions waiting on a server that is reachable but busy,
// which says nothing of whether this process can reach it.
type probe struct {
	mu     sync.Mutex
	conn   *pgx.Conn // nil: none yet, or the last one failed or aged
	opened time.Time
	closed bool // Store.Close: no more connections
}

// errProbeClosed is Probe's error after Store.Close.
var errProbeClosed = errors.New("the store is closed")

// Probe tells whether PostgreSQL answers this process now: one round trip
// on a connection of its own, made again after one fails. Each attempt to
// connect (one per address of each host of the connection string), a new
// connection's settings (as the pool's) and the round trip are each bounded
// by timeout, the whole (host names resolved
// included) by ctx. An error the server sends (too many connections, a
// login refused, starting up) is an answer: nil, though that connection is
// not kept. A connection exception (SQLSTATE class 08, as a pooler such as
// PgBouncer sends when it cannot reach the server) is not, nor is any error
// of a connection string whose other host or address was not found or did
// not answer in time. Otherwise its error is translated; a
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
		pcfg := s.Pool.Config() // a copy
		cc := pcfg.ConnConfig
		cc.ConnectTimeout = timeout
		c, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			return answered(err, oneHost(cc))
		}
		s.probe.conn, s.probe.opened = c, time.Now()
		// The pool's session settings (sessionSettings): above all the
		// server's keepalives, so that the server ends this session too
		// when this process's host is gone (Config.ClientGoneTimeout)
		// rather than keep it, and its connection slot, for hours.
		sctx, cancel := context.WithTimeout(ctx, timeout)
		err = pcfg.AfterConnect(sctx, c)
		cancel()
		if err != nil {
			s.probe.closeConn()
			return answered(err, true)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := s.probe.conn.Ping(pctx); err != nil {
		s.probe.closeConn()
		return answered(err, true)
	}
	return nil
}

// answered is Probe's error for err: nil when the server sent it.
func answered(err error, oneHost bool) error {
	if serverSent(err, oneHost) {
		return nil
	}
	return translate(err)
}

// serverSent says whether err is the server's own answer: a PostgreSQL
// error that is not a connection exception, beside no host or address of
// the attempt not found, unreachable or unanswered in time; and, unless
// the connection string names one host, none refusing the connection (a
// cut by a firewall that rejects; one host's other address refusing is
// that host's answer).
func serverSent(err error, oneHost bool) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	if !ok || len(pgErr.Code) < 2 || pgErr.Code[:2] == "08" {
		return false
	}
	_, unresolved := errors.AsType[*net.DNSError](err)
	unreachable := errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) ||
		!oneHost && errors.Is(err, syscall.ECONNREFUSED)
	return !unresolved && !unreachable && !pgconn.Timeout(err) &&
		!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}

// oneHost says whether cc names a single host (its fallbacks being its
// other addresses or TLS modes).
func oneHost(cc *pgx.ConnConfig) bool {
	for _, f := range cc.Fallbacks {
		if f.Host != cc.Host {
			return false
		}
	}
	return true
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
