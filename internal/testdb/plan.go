package testdb

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// CachedPlan returns the plan conn's prepared statement name runs with now,
// its parameters NULL: the generic plan the session cached, once PostgreSQL
// settled on one (pg_prepared_statements counts them), which a test of a
// statement the product prepares wants to see rather than a fresh plan.
func CachedPlan(t testing.TB, conn *pgx.Conn, name string) string {
	t.Helper()
	ctx := context.Background()
	var nulls string
	require.NoError(t, conn.QueryRow(ctx, `SELECT array_to_string(ARRAY(SELECT 'NULL::' || p::text FROM unnest(parameter_types) p), ', ')
		FROM pg_prepared_statements WHERE name = $1`, name).Scan(&nulls))
	rows, err := conn.Query(ctx, `EXPLAIN EXECUTE `+pgx.Identifier{name}.Sanitize()+`(`+nulls+`)`, pgx.QueryExecModeSimpleProtocol)
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return strings.Join(lines, "\n")
}
