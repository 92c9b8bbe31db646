package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
)

// CheckSchema, at run time, answers as Migrate does at start: nil while the
// schema is this binary's, or newer and allowing its version; the start's
// *SchemaNewerError once a migration declared its version unable to run on
// it; an error of its own, not ErrSchemaNewer, when it cannot tell.
func TestCheckSchemaAnswersAsTheStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.NewSchema(t).Open(t, store.Config{MaxConns: 2})
	require.NoError(t, st.Migrate(ctx))
	last := store.LatestVersion()
	require.Equal(t, lastMigration(t), last)
	require.NoError(t, st.CheckSchema(ctx), "this binary's schema")

	set := func(version, oldest int) {
		t.Helper()
		_, err := st.Pool.Exec(ctx, `UPDATE `+store.VersionTable+` SET version = $1`, version)
		require.NoError(t, err)
		_, err = st.Pool.Exec(ctx, `UPDATE `+store.CompatTable+` SET oldest_reader = $1`, oldest)
		require.NoError(t, err)
	}
	set(last+1, last)
	require.NoError(t, st.CheckSchema(ctx), "a newer schema that allows this binary")

	set(last+1, last+1)
	err := st.CheckSchema(ctx)
	require.ErrorIs(t, err, store.ErrSchemaNewer)
	require.Equal(t, &store.SchemaNewerError{Version: last + 1, Latest: last, OldestReader: last + 1}, err)
	require.EqualError(t, err, st.Migrate(ctx).Error(), "the start's error")

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	err = st.CheckSchema(canceled)
	require.Error(t, err)
	require.NotErrorIs(t, err, store.ErrSchemaNewer, "no answer")
}
