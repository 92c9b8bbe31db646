package handlers

import "context"

// GeneralPathOnly makes b apply every command by the general path, without
// the one-statement common cases, for the differential test.
func GeneralPathOnly(b *Batch) { b.generalOnly = true }

// WithCleanupBound bounds the cleanup commands applied with the context it
// returns at n (of each kind: holder rows of ended leases, idle rows)
// rather than MaxCleanup.
func WithCleanupBound(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, cleanupBoundKey{}, n)
}
