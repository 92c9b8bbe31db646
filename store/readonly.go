package store

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// readOnly reports whether err is PostgreSQL refusing a write as read-only
// (25006): the server of the connection is a standby, or a primary fenced
// or demoted by a failover, which the connection string no longer leads to
// (DNS that moved, target_session_attrs=read-write) but the pool's
// connections, made before, still reach.
func readOnly(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "25006"
}

// readOnlyReset is the pool's tracer: a statement a read-only server
// refused resets the pool, whichever path sent it (a transaction, the
// relay's deletes, pruning; not CopyFrom, which lockworker does not use),
// so that every statement after, its retry
// included, runs on a connection made anew. Connections in use are closed
// as they are released, not interrupted.
type readOnlyReset struct {
	pool atomic.Pointer[pgxpool.Pool]
}

func (r *readOnlyReset) check(err error) {
	if err == nil || !readOnly(err) {
		return
	}
	if p := r.pool.Load(); p != nil {
		p.Reset()
	}
}

func (r *readOnlyReset) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (r *readOnlyReset) TraceQueryEnd(_ context.Context, _ *pgx.Conn, d pgx.TraceQueryEndData) {
	r.check(d.Err)
}

func (r *readOnlyReset) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

func (r *readOnlyReset) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	r.check(d.Err)
}

func (r *readOnlyReset) TraceBatchEnd(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchEndData) {
	r.check(d.Err)
}
