package testdb

import (
	"context"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// Explained is a pool of one connection whose every statement's plan,
// with the pages it read, auto_explain hands over as a notice: a test of a
// statement's cost at scale reads it in pages, which do not wander with
// the machine's load as durations do.
type Explained struct {
	Pool  *pgxpool.Pool
	mu    sync.Mutex
	plans []string
}

// NewExplained returns an Explained pool with pool's settings (its
// schema, its sessions' settings: the generic plans they make), closed
// when the test ends.
func NewExplained(t testing.TB, pool *pgxpool.Pool) *Explained {
	t.Helper()
	e := &Explained{}
	cfg := pool.Config().Copy()
	cfg.MinConns, cfg.MaxConns = 0, 1
	cfg.ConnConfig.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if strings.HasPrefix(n.Message, "duration:") {
			e.mu.Lock()
			e.plans = append(e.plans, n.Message)
			e.mu.Unlock()
		}
	}
	setup := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if setup != nil {
			if err := setup(ctx, c); err != nil {
				return err
			}
		}
		// auto_explain is contrib, shipped with PostgreSQL; LOAD needs a
		// superuser, as the tests' database user is.
		_, err := c.Exec(ctx, `LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on;
			SET auto_explain.log_buffers = on; SET auto_explain.log_timing = off; SET auto_explain.log_level = notice;
			SET client_min_messages = notice`)
		if err != nil {
			t.Fatalf("loading auto_explain (in PostgreSQL's contrib: install it, or point TEST_DATABASE_URL at a server that has it): %v", err)
		}
		return nil
	}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg) // connects at the first query
	require.NoError(t, err)
	t.Cleanup(p.Close)
	e.Pool = p
	return e
}

// Plans returns the plans auto_explain reported so far, in order.
func (e *Explained) Plans() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.plans)
}

// Pages returns the pages of the last statement run whose plan contains
// marker (PlanPages), and the plan; it fails the test when none ran.
func (e *Explained) Pages(t testing.TB, marker string) (int, string) {
	t.Helper()
	plans := e.Plans()
	var plan string
	for _, p := range plans {
		if strings.Contains(p, marker) {
			plan = p
		}
	}
	require.NotEmpty(t, plan, "auto_explain reported no statement with %q: %q", marker, plans)
	pages, ok := PlanPages(plan)
	require.True(t, ok, plan)
	return pages, plan
}

var (
	buffers = regexp.MustCompile(`^( *)Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?`)
	// A line that ends the lines of a node's own figures: another node
	// (its child, or a later one) or a subplan's heading.
	nodeOrHeading = regexp.MustCompile(`^ *(->  |(CTE \S+|InitPlan \d+.*|SubPlan \d+.*)$)`)
	cteHeading    = regexp.MustCompile(`^ *CTE \S+$`)
	cteScan       = regexp.MustCompile(`^ *->  CTE Scan on `)
)

// PlanPages returns the pages (shared buffers hit and read) the statement
// of an auto_explain plan read; false when the plan names none.
//
// A node's buffers include its children's and those of the CTEs it scans
// (a CTE runs as it is scanned), so the top node's are the statement's but
// for what ran after the top node was done: a data-modifying CTE the top
// node did not read to its end (none of it when no node scans it) is run
// to its end after it, by itself. A CTE's root counts all its run, a CTE
// Scan the part it ran: the statement's pages are the top node's plus
// every CTE root's less every CTE Scan's.
func PlanPages(plan string) (int, bool) {
	total, found := 0, false
	// The node whose own figures the lines read now are, by the column of
	// its figures (the top node's are at 2, a "->  " node's 6 further in
	// than its arrow), and whether its pages add or take away; col 0: none.
	col, sign := 2, 1
	cteRoot := false
	for _, line := range strings.Split(plan, "\n") {
		if m := buffers.FindStringSubmatch(line); m != nil && len(m[1]) == col {
			hit, _ := strconv.Atoi(m[2])
			read, _ := strconv.Atoi(m[3])
			total += sign * (hit + read)
			found = true
			col = 0
			continue
		}
		if !nodeOrHeading.MatchString(line) {
			continue
		}
		col = 0
		arrow := len(line) - len(strings.TrimLeft(line, " "))
		switch {
		case cteRoot:
			col, sign = arrow+6, 1
		case cteScan.MatchString(line):
			col, sign = arrow+6, -1
		}
		cteRoot = cteHeading.MatchString(line)
	}
	return total, found
}
