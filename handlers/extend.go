package handlers

import (
	"context"
	"fmt"

	"github.com/omninode/lockworker/topics"
)

// extend lengthens the holder's lease from its current expires_at, before it
// ends. The token stays; extension_count counts the extensions.
func (a *applier) extend(ctx context.Context) error {
	c := a.cmd
	if r, err := a.atOnce(ctx); err != nil || r != nil {
		if r != nil {
			a.extended(r)
		}
		return err
	}
	r, err := a.lockForUpdate(ctx, c.Namespace, c.LockName)
	if err != nil {
		return err
	}
	endedOwner, err := a.settle(ctx, r)
	if err != nil {
		return err
	}
	switch {
	case endedOwner == c.OwnerID:
		a.reject(topics.CodeNotHeld, "the lease had already expired", r)
		return nil
	case !r.held():
		a.reject(topics.CodeNotHeld, fmt.Sprintf("lock %q is not held", c.Key()), r)
		return nil
	case r.owner != c.OwnerID:
		a.reject(topics.CodeNotOwner, fmt.Sprintf("lock %q is held by another owner", c.Key()), r)
		return nil
	case c.FencingToken != nil && *c.FencingToken != r.token:
		a.reject(topics.CodeTokenMismatch, fmt.Sprintf("fencing_token %d is not the holder's", *c.FencingToken), r)
		return nil
	}
	ext := c.ExtensionDuration
	if ext == 0 {
		ext = r.lease
	}
	err = a.tx.QueryRow(ctx, `
		UPDATE locks SET expires_at = expires_at + make_interval(secs => $3::float8), extension_count = extension_count + 1, updated_at = $4
		WHERE namespace = $1 AND lock_name = $2 RETURNING expires_at, extension_count`,
		r.namespace, r.name, ext, r.now).Scan(&r.expiresAt, &r.extensions)
	if err != nil {
		return fmt.Errorf("extending: %w", err)
	}
	a.extended(r)
	return nil
}

// extended answers the extend of r, just lengthened.
func (a *applier) extended(r *lockRow) {
	p := a.event(topics.TypeExtended, r)
	a.reply(p)
	a.recordHistory(p.ev)
}
