// Package migrations holds lockworker's schema as numbered SQL files, embedded
// in the binary and applied at startup by store.Migrate (jackc/tern).
//
// Files are named NNN_name.sql and never edited once released: a change to the
// schema is a new file. FS is for store.Migrate only.
package migrations

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS
