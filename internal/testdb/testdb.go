// Package testdb gives each test its own schema in a real PostgreSQL, migrated
// and dropped when the test ends.
//
// The database comes from TEST_DATABASE_URL, defaulting to the local server
// (DefaultURL). A test that finds no PostgreSQL fails and says how to provide
// one: it never passes silently. A failure to reach it that every later test
// would meet (no answer in time, a refused password or database) is
// remembered, and later tests of the same test binary fail at once with its
// message rather than each waiting out the connect timeout again.
//
// A test that needs more of the environment than a database (a privilege of
// the test role, a server setting, a program) and finds it missing calls
// SkipMissing: it skips, or fails where LOCKWORKER_TEST_REQUIRE_ALL=1 says
// nothing may be skipped for want of it (.ci/run sets it).
package testdb

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/store"
)

// DefaultURL is used when TEST_DATABASE_URL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/lockworker_test?sslmode=disable"

// URL returns the test database URL.
func URL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// Schema is a fresh schema of the test database.
type Schema struct {
	Name string
	URL  string
}

// NewSchema creates an empty schema, dropped when the test ends.
func NewSchema(t testing.TB) Schema {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := URL()
	conn := server.reach(t, ctx, url)
	defer conn.Close(ctx)
	name := fmt.Sprintf("lwtest_%d_%08x", time.Now().Unix(), rand.Uint32())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("creating test schema: %v", err)
	}
	dropAtEnd(t, url, "schema "+name, "DROP SCHEMA "+name+" CASCADE", t.Logf)
	// search_path as a startup parameter, not a SET: tern's "reset all"
	// after each migration would undo a SET.
	return Schema{Name: name, URL: connstr.WithParam(url, "search_path", name)}
}

// NewDatabase creates a database of its own on the test server, with the
// options of CREATE DATABASE given (an encoding, say; "" for none), dropped
// when the test ends; the test is skipped, as SkipMissing says, when the
// user may not create databases. For what a schema cannot vary: the
// database's encoding or its defaults (ALTER DATABASE ... SET).
func NewDatabase(t testing.TB, options string) Schema {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := URL()
	conn := server.reach(t, ctx, url)
	defer conn.Close(ctx)
	name := fmt.Sprintf("lwtest_db_%d_%08x", time.Now().Unix(), rand.Uint32())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name+" "+options); err != nil {
		SkipMissing(t, "creating a test database (the user needs CREATEDB): %v", err)
	}
	dropAtEnd(t, url, "database "+name, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)", t.Errorf)
	return Schema{Name: name, URL: connstr.WithParam(url, "dbname", name)}
}

// dropAtEnd runs drop, which drops what, on the test server at url when t
// ends, telling a failure with report. Its bound is minutes: PostgreSQL
// 15's DROP DATABASE waits for a checkpoint, behind one in progress, which
// took over 30 s on a busy machine.
func dropAtEnd(t testing.TB, url, what, drop string, report func(string, ...any)) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		c, err := connect(ctx, url)
		if err != nil {
			report("dropping %s: %v", what, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, drop); err != nil {
			report("dropping %s: %v", what, err)
		}
	})
}

// Require fails the test, saying how to provide PostgreSQL, unless the test
// database answers (it is created if missing and the user may). A test that
// connects to URL() itself, without NewSchema or New, calls it first, so
// that no PostgreSQL fails it with that hint rather than a bare connection
// error.
func Require(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	server.reach(t, ctx, URL()).Close(ctx)
}

// server is the test binary's one reacher: its first failure to reach
// PostgreSQL fails every later test at once.
var server = &reacher{connect: connect}

// reacher connects to the test database, remembering the first failure
// that every later test would meet too, at a cost (lasting).
type reacher struct {
	connect func(ctx context.Context, url string) (*pgx.Conn, error)

	mu     sync.Mutex
	failed string // the remembered failure's message, "" if none
}

// reach returns a connection to url, or fails t with how to provide
// PostgreSQL: at once, without trying, when an earlier test failed to reach
// it.
func (r *reacher) reach(t testing.TB, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	r.mu.Lock()
	failed := r.failed
	r.mu.Unlock()
	if failed != "" {
		t.Fatalf("%s\n(an earlier test of this binary failed so; not trying again)", failed)
	}
	conn, err := r.connect(ctx, url)
	if err == nil {
		return conn
	}
	msg := fmt.Sprintf("this test needs PostgreSQL and could not reach it at %q: %v\n"+
		"Start PostgreSQL locally (the tests create the database if the user may), "+
		"or set TEST_DATABASE_URL to a database where the tests may create schemas, e.g.\n"+
		"  TEST_DATABASE_URL=postgres://user:pass@host:5432/db?sslmode=disable go test ./...", redact(url), err)
	if lasting(err) {
		r.mu.Lock()
		if r.failed == "" {
			r.failed = msg
		}
		r.mu.Unlock()
	}
	t.Fatalf("%s", msg)
	return nil
}

// lasting says err will meet every later test too: no answer in time (a
// host that drops packets, which each test would wait out), or the server
// refusing who or what the URL names (authentication, a missing database,
// a privilege), or a URL that does not parse. A refused or reset
// connection, a server busy, starting or shutting down, fails fast and may
// be gone for the next test (a restart): it is tried again.
func lasting(err error) bool {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "28") || pgErr.Code == "3D000" || pgErr.Code == "42501"
	}
	var parseErr *pgconn.ParseConfigError
	return errors.As(err, &parseErr)
}

// RequireAllEnv is the environment variable that, set to 1, turns
// SkipMissing's skips into failures: .ci/run sets it, so that CI runs every
// test or fails.
const RequireAllEnv = "LOCKWORKER_TEST_REQUIRE_ALL"

// SkipMissing skips the test because what it needs of the environment is
// missing (a privilege of the test role, a server setting, a program); the
// message says what and how to provide it. With LOCKWORKER_TEST_REQUIRE_ALL=1
// it fails the test with that message instead. Every skip for want of a
// capability goes through it, so that CI, which sets the variable, cannot
// print ok for a package whose unhappy-path tests never ran.
func SkipMissing(t testing.TB, format string, args ...any) {
	t.Helper()
	why := fmt.Sprintf(format, args...)
	v := os.Getenv(RequireAllEnv)
	if v == "" {
		t.Skip(why)
	}
	require, err := strconv.ParseBool(v)
	if err != nil {
		t.Fatalf("%s=%q: want 1 (fail tests that would skip for want of something) or 0 (skip them); this test would skip: %s",
			RequireAllEnv, v, why)
	}
	if !require {
		t.Skip(why)
	}
	t.Fatalf("%s\n%s=1 (set by .ci/run) makes this a failure, not a skip: provide what is missing "+
		"(README.md, \"Test it\"), or set %s=0 to skip such tests", why, RequireAllEnv, RequireAllEnv)
}

// New returns a migrated Store on a fresh schema, closed when the test ends.
func New(t testing.TB) *store.Store {
	t.Helper()
	return NewWith(t, store.Config{})
}

// NewWith is New with cfg (URL is set; MaxConns, when 0, is 20).
func NewWith(t testing.TB, cfg store.Config) *store.Store {
	t.Helper()
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 20 // tests run in parallel packages against one server (max_connections 100)
	}
	st := NewSchema(t).Open(t, cfg)
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	return st
}

// Open opens a Store on the schema with cfg (URL is set).
func (s Schema) Open(t testing.TB, cfg store.Config) *store.Store {
	t.Helper()
	cfg.URL = s.URL
	if cfg.RetryBase == 0 {
		cfg.RetryBase = 10 * time.Millisecond
	}
	st, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("opening store: %v", err)
	}
	t.Cleanup(st.Close)
	return st
}

// connect opens one connection, creating the database when it is missing.
func connect(ctx context.Context, url string) (*pgx.Conn, error) {
	st, err := store.Open(ctx, store.Config{URL: url, MaxConns: 1})
	if err != nil {
		return nil, err
	}
	st.Close()
	return pgx.Connect(ctx, url)
}

func redact(url string) string {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return "(unparseable URL)"
	}
	return fmt.Sprintf("%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
}
