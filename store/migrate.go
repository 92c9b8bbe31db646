package store

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/jackc/tern/v2/migrate"

	"github.com/omninode/lockworker/migrations"
)

// VersionTable records which migrations have been applied.
const VersionTable = "lockworker_schema_version"

// Migrate applies every pending migration. tern holds a PostgreSQL advisory
// lock while it migrates, so workers starting at once apply each file once.
// That lock is one for the whole database, whatever the schema: a schema
// already at the last migration is left alone without it, so a replica
// restarting does not wait behind another schema's migration. With
// Config.RetryStart, a transient failure is retried (each migration is a
// transaction of its own, and the lock goes with the connection).
func (s *Store) Migrate(ctx context.Context) error {
	if s.cfg.RetryStart {
		defer s.start()()
		return retry(ctx, s.cfg, s.cfg.OnStartRetry, func() error { return s.migrate(ctx) })
	}
	return s.migrate(ctx)
}

func (s *Store) migrate(ctx context.Context) (err error) {
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrating: %w", translateStart(ctx, err))
	}
	// tern ends each migration with RESET ALL, which undoes AfterConnect
	// (plan_cache_mode, see preferGenericPlans): a connection it ran on
	// goes back to the pool only set up again, else it is closed. A failed
	// attempt must not leave one behind for the retry, which finds the
	// schema complete, or the worker's transactions, to take.
	ran := false
	defer func() {
		if ran && err != nil {
			_ = conn.Hijack().Close(ctx)
			return
		}
		conn.Release()
	}()
	last, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		return fmt.Errorf("loading migrations: %w", err)
	}
	var version int
	// Any error (no version table yet) leaves it to tern.
	if conn.QueryRow(ctx, "SELECT version FROM "+VersionTable).Scan(&version) == nil && version == len(last) {
		return nil
	}
	ran = true
	m, err := migrate.NewMigrator(ctx, conn.Conn(), VersionTable)
	if err != nil {
		return fmt.Errorf("migrating: %w", translateStart(ctx, err))
	}
	if err := m.LoadMigrations(migrations.FS); err != nil {
		return fmt.Errorf("loading migrations: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("migrating: %w", translateStart(ctx, err))
	}
	if after := s.Pool.Config().AfterConnect; after != nil {
		if err := after(ctx, conn.Conn()); err != nil {
			return fmt.Errorf("migrating: setting the connection up again: %w", translateStart(ctx, err))
		}
	}
	return nil
}
