package main

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"

	"github.com/omninode/lockworker/internal/failstreak"
	"github.com/omninode/lockworker/store"
)

// defaultSchemaCheck is Main.SchemaCheckInterval's default.
const defaultSchemaCheck = 5 * time.Second

// schemaCheckFailed, when set (by tests, before Run), is called after each
// failed check with the failures in a row: the log says only the first
// and then one a failstreak.DefaultEvery, too few to count them by.
var schemaCheckFailed func(failures int)

// watchSchema checks at once, then every interval until ctx is done, that
// this binary may still run on the database's schema (check:
// store.Store.CheckSchema, the rule of the start). The first replica of a
// rolling update migrates at its start, and a migration may declare older
// binaries unable to run beside it (lockworker_schema_compat.oldest_reader)
// while replicas of them still run: the start's check alone would leave them
// writing to that schema. watchSchema then returns the check's
// *store.SchemaNewerError, the start's error. A check that fails otherwise
// (PostgreSQL unreachable, a lock_timeout) stops nothing: it is made again
// at the next tick, its streak logged (failstreak). Each check is bounded
// by interval, so that one hung on a connection does not delay the next.
func watchSchema(ctx context.Context, check func(context.Context) error, interval time.Duration, log zerolog.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var streak failstreak.Streak
	for {
		cctx, cancel := context.WithTimeout(ctx, interval)
		err := check(cctx)
		cancel()
		switch {
		case errors.Is(err, store.ErrSchemaNewer):
			return err
		case ctx.Err() != nil:
			return nil
		case err != nil:
			n, ev := streak.Fail(&log, err)
			ev.Msg("checking that the database schema still allows this binary's version failed; checking again in " + interval.String())
			if schemaCheckFailed != nil {
				schemaCheckFailed(n)
			}
		default:
			streak.OK(&log).Msg("checking the database schema's version works again")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
