package store

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
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
// transaction of its own, and the lock goes with the connection). A schema
// newer than this binary's migrations is refused (ErrSchemaNewer), never
// retried.
func (s *Store) Migrate(ctx context.Context) error {
	try := func() error { return translateStart(ctx, s.migrate(ctx)) }
	if s.cfg.RetryStart {
		defer s.start()()
		return retry(ctx, s.cfg, s.cfg.OnStartRetry, try)
	}
	return try()
}

// migrate is Migrate's one attempt. Its errors are pgx's and tern's
// wrapped, not translated: Migrate translates them once.
func (s *Store) migrate(ctx context.Context) error {
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	last, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		conn.Release()
		return fmt.Errorf("loading migrations: %w", err)
	}
	var version int
	// Any error (no version table yet) leaves it to tern.
	if conn.QueryRow(ctx, "SELECT version FROM "+VersionTable).Scan(&version) == nil {
		if version == len(last) {
			conn.Release()
			return nil
		}
		if version > len(last) {
			conn.Release()
			return &SchemaNewerError{Version: version, Latest: len(last)}
		}
	}
	err = runMigrations(ctx, conn.Conn())
	// tern ends each migration with RESET ALL, which undoes AfterConnect
	// (plan_cache_mode, see preferGenericPlans): the connection it ran on
	// is closed, whether it succeeded or failed, never returned to the pool
	// for a retry that finds the schema complete, or the worker's
	// transactions, to take. The pool opens a new one, set up.
	_ = conn.Hijack().Close(ctx)
	return err
}

// runMigrations applies the pending migrations on conn with tern.
func runMigrations(ctx context.Context, conn *pgx.Conn) error {
	m, err := migrate.NewMigrator(ctx, conn, VersionTable)
	if err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	if err := m.LoadMigrations(migrations.FS); err != nil {
		return fmt.Errorf("loading migrations: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	return nil
}
