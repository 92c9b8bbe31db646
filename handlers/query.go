package handlers

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/omninode/lockworker/handlers/rules"
	"github.com/omninode/lockworker/topics"
)

// query reports a lock without changing it: free when there is no row, a
// lease past expires_at as expired even before anyone has ended it (a
// session's past its session's expiry too: rules.Holder.Lasts), with
// the lock-delay that ending it starts (rules.Lock.SettledDelay), and
// every holder (the first topics.MaxHoldersShown, within
// topics.MaxHoldersBytes; it reads them all, as a command does:
// queueHolders). It locks nothing, so it reads the row and its
// holders in one statement (queryLockSQL): two statements would read them
// in two snapshots (READ COMMITTED), and a release committing in between
// would show the lock at its held revision with no holder.
func (a *applier) query(ctx context.Context) error {
	r := &lockRow{namespace: a.cmd.Namespace, name: a.cmd.LockName, status: topics.StatusFree, limit: 1}
	var hs []rules.Holder
	found := false
	rows, err := a.tx.Query(ctx, queryLockSQL, r.namespace, r.name)
	if err != nil {
		return fmt.Errorf("reading lock: %w", err)
	}
	lockDest := r.dest()
	skip := make([]any, holderColumns) // nil: the column is not scanned
	for rows.Next() {
		found = true
		// A row without a holder (LEFT JOIN) has NULL for every holder
		// column, owner_id first.
		if rows.RawValues()[len(lockDest)] == nil {
			err = rows.Scan(append(slices.Clip(lockDest), skip...)...)
		} else {
			var h rules.Holder
			dest := append(append(slices.Clip(lockDest), holderDest(&h)...), nil) // grant_order
			if err = rows.Scan(dest...); err == nil {
				hs = append(hs, h)
			}
		}
		if err != nil {
			rows.Close()
			return fmt.Errorf("reading lock: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading lock: %w", err)
	}
	if !found {
		if err := a.tx.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&r.now); err != nil {
			return fmt.Errorf("reading the time: %w", err)
		}
	}
	r.scanned()
	l := r.lock()
	if len(hs) > 0 {
		l.Holders = hs
	}
	p := a.event(topics.TypeStatus, r, l.ReadInfo())
	p.ev.LockInfo.HolderCount, p.ev.LockInfo.Holders = len(l.Holders), listHolders(l, topics.MaxHoldersShown, rules.Holder.Lasts)
	// A lease past its expiry shows expired, so the lock-delay its end
	// starts shows too: the next command settles it before deciding (a
	// session's, its session's end), the delay running from the expiry.
	if d := l.SettledDelay(); d.After(l.Now) {
		p.ev.LockInfo.DelayUntil = topics.NewTimePtr(d)
	}
	a.reply(p)
	return nil
}

// queryLockSQL reads a lock's row ($1 and $2 its key; lockCols) with each
// of its holders (holderCols, in grant order), one result row per holder,
// or one with NULL holder columns when it has none; no result row when the
// lock has no row. One statement, so one snapshot: the row and its holders
// as one commit left them.
const queryLockSQL = `SELECT l.*, h.* FROM (SELECT ` + lockCols + ` FROM locks WHERE namespace = $1 AND lock_name = $2) l
	LEFT JOIN LATERAL (SELECT ` + holderCols + `, fencing_token AS grant_order FROM lock_holders
		WHERE namespace = $1 AND lock_name = $2) h ON true
	ORDER BY h.grant_order`

// holderColumns is how many columns a holder takes in queryLockSQL's rows:
// holderCols (holderDest) and grant_order.
var holderColumns = len(holderDest(&rules.Holder{})) + 1

// holderList is the lock state topic's holders (state): a session's lease
// acquired until its session ends (rules.Holder.Live), which the topic's
// readers judge by its session_id.
func holderList(l *rules.Lock, limit int) []topics.Holder {
	return listHolders(l, limit, rules.Holder.Live)
}

// listHolders is lock_info.holders: the first limit holders in grant
// order, as many as fit in topics.MaxHoldersBytes, each expired unless
// live.
func listHolders(l *rules.Lock, limit int, live func(rules.Holder, time.Time) bool) []topics.Holder {
	var hs []topics.Holder
	size := 0
	for _, h := range l.Holders[:min(len(l.Holders), limit)] {
		status := topics.StatusAcquired
		if !live(h, l.Now) {
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
