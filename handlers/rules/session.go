package rules

// Reasons of Lose and Drop (the contract's event reason).
const (
	ReasonSessionClosed  = "session_closed"
	ReasonSessionExpired = "session_expired"
)

// EndSession ends what session id has on the lock, for reason: its wait
// first (Drop: the hand-off that follows must not grant it), every lease
// past its expiry (as any command settles them), then its leases (Lose,
// in token order), and the lock goes to the next waiters. The session's
// wait is Mine: the caller loads the lock for the session's owner, who
// waits at most once per lock (perhaps for another session, or none).
func (l *Lock) EndSession(id, reason string) []Effect {
	var effs []Effect
	if l.Mine != nil && l.Mine.Session == id {
		w := *l.Mine
		l.withdraw(w)
		effs = append(effs, Effect{Kind: Drop, Waiter: w, Reason: reason, Info: l.Info()})
	}
	settled, _ := l.Settle()
	effs = append(effs, settled...)
	status := Expired
	if reason == ReasonSessionClosed {
		status = Released
	}
	for i := 0; i < len(l.Holders); {
		if l.Holders[i].Session != id {
			i++
			continue
		}
		// A closed session ends its leases as their holder's release; an
		// expired one starts their lock-delays.
		h := l.EndLease(i, status)
		effs = append(effs, Effect{Kind: Lose, Holder: h, Reason: reason, Info: l.about(h, status)})
	}
	return append(effs, l.HandOff()...)
}
