package store_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/migrations"
	"github.com/omninode/lockworker/store"
)

// lastMigration is the number of migration files.
func lastMigration(t *testing.T) int {
	t.Helper()
	files, err := fs.Glob(migrations.FS, "*.sql")
	require.NoError(t, err)
	return len(files)
}

// A schema a newer lockworker migrated further than this binary's files
// (a downgrade) is refused at once, with both versions and what to do, and
// not retried.
func TestMigrateRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newStartRetries()
	sc := testdb.NewSchema(t)
	st := sc.Open(t, r.config(sc.URL))
	require.NoError(t, st.Migrate(ctx))
	last := lastMigration(t)
	_, err := st.Pool.Exec(ctx, `UPDATE `+store.VersionTable+` SET version = $1`, last+2)
	require.NoError(t, err)

	mctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err = st.Migrate(mctx)
	require.ErrorIs(t, err, store.ErrSchemaNewer)
	require.False(t, errors.Is(err, store.ErrTransient))
	require.Empty(t, r.all(), "retried")
	var newer *store.SchemaNewerError
	require.ErrorAs(t, err, &newer)
	require.Equal(t, store.SchemaNewerError{Version: last + 2, Latest: last}, *newer)
	require.Contains(t, err.Error(), fmt.Sprintf("database schema is at version %d, newer than this binary's %d: run a lockworker built with migration %d or later",
		last+2, last, last+2))
}
