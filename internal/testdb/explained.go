package testdb

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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
// when the test ends. It connects at once: a role that may not load
// auto_explain (LOAD needs a superuser) is a missing capability
// (SkipMissing); any other failure to connect fails the test.
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
	// AfterConnect runs on the pool's goroutine, where t.Fatal would end
	// that goroutine instead of the test and leave the test waiting for the
	// connection forever: its error is returned, for the test's goroutine
	// to judge below.
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if setup != nil {
			if err := setup(ctx, c); err != nil {
				return err
			}
		}
		_, err := c.Exec(ctx, `LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on;
			SET auto_explain.log_buffers = on; SET auto_explain.log_timing = off; SET auto_explain.log_level = notice;
			SET client_min_messages = notice`)
		if err != nil {
			return fmt.Errorf("loading auto_explain: %w", err)
		}
		return nil
	}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := p.Acquire(ctx) // the pool's one connection, kept for the test
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "42501": // insufficient_privilege
		SkipMissing(t, "LOAD 'auto_explain' needs a superuser, which TEST_DATABASE_URL's role is not (%v): "+
			"point TEST_DATABASE_URL at a superuser", err)
	case errors.As(err, &pgErr) && pgErr.Code == "58P01": // undefined_file: no such library
		t.Fatalf("%v: auto_explain is in PostgreSQL's contrib: install it, or point TEST_DATABASE_URL at a server that has it", err)
	case err != nil:
		t.Fatalf("testdb.NewExplained: %v", err)
	}
	c.Release()
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
// marker (PlanPages), and the plan; it fails the test when none ran, when
// the plan names no pages (auto_explain not counting them: any bound would
// pass), or when PlanPages cannot count them.
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
	require.Contains(t, plan, "Buffers: shared", "auto_explain named no pages read")
	pages, err := PlanPages(plan)
	require.NoError(t, err, plan)
	return pages, plan
}

// planNode is a node of an auto_explain plan, with the pages it and what
// ran inside it read (shared buffers hit and read).
type planNode struct {
	name    string // as the plan names it: "Limit", "CTE Scan on m m_1"
	heading string // of a heading's root: "InitPlan 2 (returns $2)"
	pages   int
	col     int // the column of its figures, its children's arrows and its headings
	// The node it is a child of, in the same query level; nil for the top
	// node and a heading's root.
	parent              *planNode
	children            []*planNode
	subPlans, initPlans []*planNode // their roots
	ctes                []cte
}

type cte struct {
	name string
	root *planNode
}

var (
	// A node's line: the top node's name at column 0, another's after an
	// arrow, then its figures.
	topLine  = regexp.MustCompile(`^(\S.*?) +\((?:cost=|actual |never executed)`)
	nodeLine = regexp.MustCompile(`^( *)->  (.*?) +\((?:cost=|actual |never executed)`)
	// A heading, its root on the next line 2 columns further in.
	headingLine = regexp.MustCompile(`^( *)(CTE|InitPlan|SubPlan) (.+)$`)
	buffersLine = regexp.MustCompile(`^( *)Buffers: (?:shared(?: hit=(\d+))?(?: read=(\d+))?)?`)
	cteScan     = regexp.MustCompile(`^CTE Scan on ("(?:[^"]|"")+"|[^ "]+)`)
	modifying   = regexp.MustCompile(`^(?:Insert|Update|Delete|Merge) on `)
	// The nodes that read no pages themselves, only what their children
	// and their expressions (subplans, functions) read.
	readsNone = regexp.MustCompile(`^(?:Limit|(?:Incremental )?Sort|(?:Partial |Finalize )?(?:Aggregate|HashAggregate|GroupAggregate|MixedAggregate)|` +
		`Group|Unique|(?:Parallel )?Append|Merge Append|Nested Loop|(?:Parallel )?Hash|Materialize|Memoize|Result|ProjectSet|(?:Hash)?SetOp|` +
		`WindowAgg|Recursive Union|Gather(?: Merge)?|(?:Hash|Merge|Nested Loop|Parallel Hash)(?: \w+)* Join|` +
		`(?:Subquery|CTE|WorkTable|Values|Named Tuplestore) Scan(?: on .*)?)$`)
)

// parsePlan returns the top node of an auto_explain plan.
func parsePlan(plan string) (*planNode, error) {
	lines := strings.Split(plan, "\n")
	// The plan follows the query's text, its only line at column 0 its top
	// node's.
	first := -1
	for i, l := range lines {
		if topLine.MatchString(l) {
			first = i
		}
	}
	if first < 0 {
		return nil, fmt.Errorf("no plan")
	}
	top := &planNode{name: topLine.FindStringSubmatch(lines[first])[1], col: 2}
	open := []*planNode{top} // the nodes whose lines may follow, innermost last
	// The node the line at column col is under: a node's children and
	// headings are at its figures' column.
	under := func(col int) *planNode {
		for len(open) > 0 && open[len(open)-1].col != col {
			open = open[:len(open)-1]
		}
		if len(open) == 0 {
			return nil
		}
		return open[len(open)-1]
	}
	var head []string // the heading whose root is the next node: its line, kind, name
	var owner *planNode
	for i := first + 1; i < len(lines); i++ {
		l := lines[i]
		if m := nodeLine.FindStringSubmatch(l); m != nil {
			n := &planNode{name: m[2], col: len(m[1]) + 6}
			switch {
			case head == nil:
				if n.parent = under(len(m[1])); n.parent == nil {
					return nil, fmt.Errorf("line %d: %q is under no node", i+1, l)
				}
				n.parent.children = append(n.parent.children, n)
			case head[1] == "CTE":
				owner.ctes = append(owner.ctes, cte{head[2], n})
			case head[1] == "InitPlan":
				owner.initPlans = append(owner.initPlans, n)
			default:
				owner.subPlans = append(owner.subPlans, n)
			}
			if head != nil {
				n.heading, head = head[0], nil
			}
			open = append(open, n)
			continue
		}
		if m := headingLine.FindStringSubmatch(l); m != nil && i+1 < len(lines) && strings.HasPrefix(lines[i+1], m[1]+"  ->  ") {
			if owner = under(len(m[1])); owner == nil {
				return nil, fmt.Errorf("line %d: %q is under no node", i+1, l)
			}
			head = []string{strings.TrimSpace(l), m[2], m[3]}
			continue
		}
		if m := buffersLine.FindStringSubmatch(l); m != nil {
			n := open[len(open)-1]
			if len(m[1]) != n.col || len(n.children)+len(n.subPlans)+len(n.initPlans)+len(n.ctes) > 0 {
				return nil, fmt.Errorf("line %d: %q is no node's", i+1, l)
			}
			hit, _ := strconv.Atoi(m[2])
			read, _ := strconv.Atoi(m[3])
			n.pages = hit + read
		}
	}
	return top, nil
}

// PlanPages returns the pages (shared buffers hit and read) the statement
// of an auto_explain plan read, or why it cannot tell.
//
// A node's pages are those of what ran while it ran: its children, the
// subplans its expressions ran, and a CTE it scans as far as it scanned
// it. The top node's are then the statement's, but for what PostgreSQL
// runs after the top node is done: the rest of each data-modifying CTE, by
// itself. That rest is the CTE root's pages less those it read inside its
// CTE Scans, a scan's pages less its own expressions' subplans: the
// SubPlans and InitPlans listed under it, and an InitPlan listed under a
// node above it that the scan's filter or output ran, which the plan does
// not say. Such an InitPlan is placed by pages: it ran inside the node it
// is listed under; the pages of a node that reads none itself (a Limit, a
// join) beyond its children's are its expressions', so an InitPlan larger
// than those ran inside a child, the one with room for it. An InitPlan
// that may have run inside the scan or not, where that changes the count,
// fails it.
//
// Pages in no node are not counted: a trigger's (a foreign key's checks),
// those of values detoasted as the rows are sent.
func PlanPages(plan string) (int, error) {
	top, err := parsePlan(plan)
	if err != nil {
		return 0, err
	}
	var ctes []cte
	named := map[string]int{}
	scans := map[string][]*planNode{}
	var walk func(*planNode)
	walk = func(n *planNode) {
		for _, c := range n.ctes {
			ctes = append(ctes, c)
			named[c.name]++
		}
		if m := cteScan.FindStringSubmatch(n.name); m != nil {
			name := m[1]
			if strings.HasPrefix(name, `"`) {
				name = strings.ReplaceAll(name[1:len(name)-1], `""`, `"`)
			}
			scans[name] = append(scans[name], n)
		}
		for _, k := range slices.Concat(n.children, n.subPlans, n.initPlans) {
			walk(k)
		}
		for _, c := range n.ctes {
			walk(c.root)
		}
	}
	walk(top)
	total := top.pages
	for _, c := range ctes {
		if !modifying.MatchString(c.root.name) {
			continue
		}
		if named[c.name] > 1 {
			return 0, fmt.Errorf("CTE %s: %d CTEs of that name, their scans not told apart", c.name, named[c.name])
		}
		rest, err := unfinished(c, scans[c.name])
		if err != nil {
			return 0, err
		}
		total += rest
	}
	return total, nil
}

// unfinished returns the pages of the data-modifying CTE c's run outside
// its CTE Scans.
func unfinished(c cte, scans []*planNode) (int, error) {
	// The rest with the InitPlans that may have run in a scan outside it,
	// and with them inside it as far as the scan's pages allow. A scan
	// reading more than the CTE did read pages of its own (a function of
	// its filter looking up the catalog): the CTE ran none after.
	lo, hi := c.root.pages, c.root.pages
	var unsure []string
	for _, s := range scans {
		pulled := s.pages
		for _, p := range slices.Concat(s.subPlans, s.initPlans) {
			pulled -= p.pages
		}
		if pulled < 0 {
			return 0, fmt.Errorf("%s: its subplans read more pages than it did", s.name)
		}
		maybe := 0
		for a := s.parent; a != nil; a = a.parent {
			for _, k := range a.initPlans {
				if k.pages == 0 {
					continue
				}
				switch ranIn(k, a) {
				case s:
					pulled -= k.pages
				case nil:
					maybe += k.pages
					unsure = append(unsure, fmt.Sprintf("%s (%d pages)", k.heading, k.pages))
				}
			}
		}
		lo -= max(0, pulled)
		hi -= max(0, pulled-maybe)
	}
	lo, hi = max(0, lo), max(0, hi)
	if lo != hi {
		return 0, fmt.Errorf("CTE %s: %d to %d pages after the top node, as %s ran outside its scans or inside: the plan does not say",
			c.name, lo, hi, strings.Join(unsure, ", "))
	}
	return lo, nil
}

// ranIn returns the node inside which the InitPlan rooted at k, listed
// under a, ran its expressions (a CTE Scan, or a node that reads pages
// itself), or nil when its pages do not tell.
func ranIn(k, a *planNode) *planNode {
	for n := a; ; {
		if strings.HasPrefix(n.name, "CTE Scan on ") {
			return n
		}
		inside := slices.Concat(n.children, n.subPlans)
		own := n.pages
		var room []*planNode
		for _, c := range inside {
			own -= c.pages
			if c.pages >= k.pages {
				room = append(room, c)
			}
		}
		reads := !readsNone.MatchString(n.name)
		switch {
		case reads && len(room) == 0:
			return n
		case reads || own >= k.pages || len(room) != 1:
			return nil
		}
		n = room[0]
	}
}
