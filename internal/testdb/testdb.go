// Package testdb gives each test its own schema in a real PostgreSQL, migrated
// and dropped when the test ends.
//
// The database comes from TEST_DATABASE_URL, defaulting to the local server
// (DefaultURL). A test that finds no PostgreSQL fails and says how to provide
// one: it never passes silently.
package testdb

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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
	conn, err := connect(ctx, url)
	if err != nil {
		t.Fatalf("this test needs PostgreSQL and could not reach it at %q: %v\n"+
			"Start PostgreSQL locally (the tests create the database if the user may), "+
			"or set TEST_DATABASE_URL to a database where the tests may create schemas, e.g.\n"+
			"  TEST_DATABASE_URL=postgres://user:pass@host:5432/db?sslmode=disable go test ./...", redact(url), err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("lwtest_%d_%08x", time.Now().Unix(), rand.Uint32())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("creating test schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := connect(ctx, url)
		if err != nil {
			t.Logf("dropping schema %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP SCHEMA "+name+" CASCADE"); err != nil {
			t.Logf("dropping schema %s: %v", name, err)
		}
	})
	// search_path as a startup parameter, not a SET: tern's "reset all"
	// after each migration would undo a SET.
	return Schema{Name: name, URL: connstr.WithParam(url, "search_path", name)}
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
