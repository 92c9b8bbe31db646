package handlers

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// The common cases' statements read each of their CTEs once, whatever the
// batch's size. Under the generic plan every CTE is estimated at a row or
// two, so a join of two of them is planned as a nested loop that reads one
// of them again for every row of the other: the statements returned the
// holder rows joined with the locks rows that way, which made a batch's
// statement quadratic in its commands (docs/performance.md).
func TestAtOnceReadsEachCTEOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := planConn(t)
	_, err := conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`)
	require.NoError(t, err)
	// One transaction, as a batch's: the statements for the commands after
	// an acquire apply only to leases written in it.
	_, err = conn.Exec(ctx, `BEGIN`)
	require.NoError(t, err)
	defer conn.Exec(ctx, `ROLLBACK`)

	const n = 8
	grant := func(prefix, owner, mode string) []any {
		g := &grantArgs{}
		for i := range n {
			g.ns, g.name, g.owner = append(g.ns, ""), append(g.name, fmt.Sprintf("%s-%d", prefix, i)), append(g.owner, owner)
			g.replyTo, g.requestID = append(g.replyTo, "locks.replies.t"), append(g.requestID, fmt.Sprintf("%s-%s-%d", prefix, owner, i))
			g.lease, g.metadata, g.partition = append(g.lease, 60), append(g.metadata, nil), append(g.partition, 1)
			g.mode, g.limit = append(g.mode, mode), append(g.limit, 1)
			g.lockDelay, g.maxHold = append(g.lockDelay, 0), append(g.maxHold, 0)
		}
		return []any{g.ns, g.name, g.owner, g.lease, g.metadata, g.replyTo, g.requestID, g.partition, g.mode, g.limit, g.lockDelay, g.maxHold}
	}
	holder := func(prefix, owner, op string) []any {
		h := &holderArgs{}
		for i := range n {
			h.ns, h.name, h.owner = append(h.ns, ""), append(h.name, fmt.Sprintf("%s-%d", prefix, i)), append(h.owner, owner)
			h.requestID, h.token, h.extension = append(h.requestID, fmt.Sprintf("%s-%s-%s-%d", prefix, owner, op, i)), append(h.token, nil), append(h.extension, 0)
		}
		return []any{h.ns, h.name, h.owner, h.token, h.requestID, h.extension}
	}
	// after adds the arrays of the statements for a command after its
	// holder's acquire (prefix-owner-i) and extends.
	after := func(args []any, prefix, owner string, extensions int32) []any {
		granted, exts := make([]string, n), make([]int32, n)
		for i := range n {
			granted[i], exts[i] = fmt.Sprintf("%s-%s-%d", prefix, owner, i), extensions
		}
		return append(args, granted, exts)
	}
	loops := regexp.MustCompile(`CTE Scan on (\w+).*loops=(\d+)`)
	for k, s := range []struct {
		name string
		sql  string
		args []any
	}{
		{"grant", grantAtOnceSQL, grant("x", "alice", "exclusive")},
		{"grant shared", grantAtOnceSQL, grant("s", "alice", "shared")},
		{"join", joinAtOnceSQL, grant("s", "bob", "shared")},
		{"join after", joinAfterSQL, append(grant("s", "carol", "shared"), grant("s", "bob", "shared")[2], grant("s", "bob", "shared")[6])},
		{"extend", extendAtOnceSQL, holder("x", "alice", "extend")},
		{"extend after", extendAfterSQL, after(holder("x", "alice", "extend-after"), "x", "alice", 1)},
		{"release after", releaseAfterSQL, after(holder("x", "alice", "release"), "x", "alice", 2)},
		{"grant after", grantAfterSQL, append(grant("x", "dave", "exclusive"), slices.Repeat([]string{"alice"}, n))},
		{"release", releaseAtOnceSQL, holder("s", "carol", "release")},
	} {
		stmt := fmt.Sprintf("atonce_%d", k)
		_, err := conn.Exec(ctx, fmt.Sprintf("PREPARE %s AS %s", stmt, s.sql))
		require.NoError(t, err, s.name)
		params := make([]string, len(s.args))
		for i, a := range s.args {
			params[i] = arrayLiteral(a)
		}
		rows, err := conn.Query(ctx, fmt.Sprintf("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE %s(%s)", stmt, strings.Join(params, ", ")))
		require.NoError(t, err, s.name)
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err, s.name)
		plan := strings.Join(lines, "\n")
		require.Contains(t, lines[0], fmt.Sprintf("rows=%d loops=1", n), "%s changed every lock:\n%s", s.name, plan)
		for _, m := range loops.FindAllStringSubmatch(plan, -1) {
			require.Equal(t, "1", m[2], "%s reads CTE %s once per row of another:\n%s", s.name, m[1], plan)
		}
	}
}

// arrayLiteral writes an array argument of the common cases' statements as
// an SQL literal, for EXECUTE (PREPARE's parameters cannot be bound).
func arrayLiteral(a any) string {
	var elems []string
	cast := ""
	switch v := a.(type) {
	case []string:
		for _, x := range v {
			elems = append(elems, "'"+strings.ReplaceAll(x, "'", "''")+"'")
		}
	case []*string:
		for range v {
			elems = append(elems, "NULL")
		}
	case []*int64:
		for range v {
			elems = append(elems, "NULL")
		}
		cast = "::int8[]"
	case []float64:
		for _, x := range v {
			elems = append(elems, fmt.Sprint(x))
		}
	case []int32:
		for _, x := range v {
			elems = append(elems, fmt.Sprint(x))
		}
	default:
		panic(fmt.Sprintf("arrayLiteral: %T", a))
	}
	return "ARRAY[" + strings.Join(elems, ", ") + "]" + cast
}
