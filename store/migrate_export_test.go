package store

import "time"

// SetMigrationLockTimeout sets the lock_timeout of the migrations until
// the returned func restores MigrationLockTimeout.
func SetMigrationLockTimeout(d time.Duration) (restore func()) {
	migrationLockTimeout.Store(int64(d))
	return func() { migrationLockTimeout.Store(int64(MigrationLockTimeout)) }
}
