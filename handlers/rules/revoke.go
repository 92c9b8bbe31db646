package rules

import "fmt"

// Revoke decides a revoke: after settling the lock, it ends every lease of
// the lock, or only owner's when owner is not "", as Revoked (so each
// starts its lock-delay, if it has one), then hands the lock to its waiters
// as a release does. With nothing to end it refuses NOT_HELD.
func (l *Lock) Revoke(owner, key string) []Effect {
	effs, _ := l.Settle()
	n := len(effs)
	for i := 0; i < len(l.Holders); {
		if owner != "" && l.Holders[i].Owner != owner {
			i++
			continue
		}
		h := l.EndLease(i, Revoked)
		effs = append(effs, Effect{Kind: Revoke, Holder: h, Info: l.about(h, Revoked)})
	}
	switch {
	case len(effs) > n:
		return append(effs, l.HandOff()...)
	case owner != "":
		return append(effs, l.refuse(CodeNotHeld, fmt.Sprintf("%q does not hold lock %q", owner, key)))
	}
	return append(effs, l.refuse(CodeNotHeld, fmt.Sprintf("lock %q is not held", key)))
}
