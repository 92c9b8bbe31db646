package handlers

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/handlers/rules"
	"github.com/omninode/lockworker/topics"
)

// query reports a lock without changing it: free when there is no row, a
// lease past expires_at as expired even before anyone has ended it, and
// every holder (the first topics.MaxHoldersShown, within
// topics.MaxHoldersBytes).
func (a *applier) query(ctx context.Context) error {
	r := &lockRow{namespace: a.cmd.Namespace, name: a.cmd.LockName, status: topics.StatusFree, limit: 1}
	err := a.tx.QueryRow(ctx, `SELECT `+lockCols+` FROM locks WHERE namespace = $1 AND lock_name = $2`, r.namespace, r.name).Scan(r.dest()...)
	if errors.Is(err, pgx.ErrNoRows) {
		err = a.tx.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&r.now)
	}
	if err != nil {
		return fmt.Errorf("reading lock row: %w", err)
	}
	r.scanned()
	l := r.lock()
	if r.holders > 0 {
		if l.Holders, err = a.holders(ctx, r); err != nil {
			return err
		}
	}
	p := a.event(topics.TypeStatus, r, l.Info())
	p.ev.LockInfo.HolderCount, p.ev.LockInfo.Holders = len(l.Holders), holderList(l, topics.MaxHoldersShown)
	if l.DelayUntil.After(l.Now) {
		p.ev.LockInfo.DelayUntil = topics.NewTimePtr(l.DelayUntil)
	}
	a.reply(p)
	return nil
}

// holderList is lock_info.holders: the first limit holders in grant
// order, as many as fit in topics.MaxHoldersBytes, each expired when past
// its expiry.
func holderList(l *rules.Lock, limit int) []topics.Holder {
	var hs []topics.Holder
	size := 0
	for _, h := range l.Holders[:min(len(l.Holders), limit)] {
		status := topics.StatusAcquired
		if !h.Live(l.Now) {
			status = topics.StatusExpired
		}
		th := topics.Holder{OwnerID: h.Owner, Mode: string(h.Mode), Status: status, FencingToken: h.Token,
			AcquiredAt: topics.NewTime(h.AcquiredAt), ExpiresAt: topics.NewTime(h.ExpiresAt), LeaseDuration: h.Lease,
			ExtensionCount: h.Extensions, OwnerMetadata: h.Metadata, SessionID: h.Session}
		if size += topics.HolderBytes(th); size > topics.MaxHoldersBytes {
			break
		}
		hs = append(hs, th)
	}
	return hs
}
