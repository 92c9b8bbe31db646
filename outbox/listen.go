package outbox

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/handlers"
)

// listenPing is how long the listen connection may stay silent before it is
// pinged: a dead peer otherwise goes unnoticed for minutes.
const listenPing = 30 * time.Second

// Listen holds one dedicated connection (outside the pool, with its settings)
// doing LISTEN on handlers.NotifyChannel, and wakes the partition each
// notification names. All partitions share it. When the connection fails it
// reconnects with backoff; Run keeps polling meanwhile, and every partition
// is woken after each (re)connect for what was committed while deaf. It
// returns nil when ctx is done.
func (r *Relay) Listen(ctx context.Context) error {
	failures := 0
	for {
		err := r.listen(ctx, func() { failures = 0 })
		if ctx.Err() != nil {
			return nil
		}
		failures++
		d := r.backoff(failures)
		r.log.Warn().Err(err).Dur("retry_in", d).Msg("outbox: listen connection lost; polling until it is back")
		timer := time.NewTimer(d)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
	}
}

// listen runs one connection until it fails. listening is called once LISTEN
// succeeded.
func (r *Relay) listen(ctx context.Context, listening func()) error {
	conn, err := pgx.ConnectConfig(ctx, r.cfg.Pool.Config().ConnConfig)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{handlers.NotifyChannel}.Sanitize()); err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	listening()
	r.log.Debug().Msg("outbox: listening for new rows")
	r.wakeAll()
	for {
		wctx, cancel := context.WithTimeout(ctx, listenPing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			// Silence is normal; make sure the connection is still alive.
			if err := conn.Ping(ctx); err != nil {
				return fmt.Errorf("pinging: %w", err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("waiting for notifications: %w", err)
		}
		p, err := strconv.ParseInt(n.Payload, 10, 32)
		if err != nil {
			r.log.Debug().Str("payload", n.Payload).Msg("outbox: ignoring a notification that names no partition")
			continue
		}
		r.Wake(int32(p))
	}
}
