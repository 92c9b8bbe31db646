package client

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// Every error code of the contract has its sentinel.
func TestEveryCodeHasASentinel(t *testing.T) {
	for _, code := range topics.ErrorCodes {
		require.NotNil(t, codeErrors[code], code)
	}
	require.Len(t, codeErrors, len(topics.ErrorCodes))
}

// A LOCK_HELD says when to retry whenever the reply gave it, also without
// a holder's expiry (a lock-delay, waiters ahead with no lease in the way),
// and 0 (due to end already) too.
func TestLockHeldErrorSaysRetryAfter(t *testing.T) {
	cmd := topics.Command{RequestID: "r", Operation: topics.OpAcquire, LockName: "l"}
	held := func(li *topics.LockInfo, retry float64) error { return rejection(lockHeld(cmd, li, retry)) }
	expires := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	acquired := &topics.LockInfo{LockName: "l", OwnerID: "o", Status: topics.StatusAcquired, ExpiresAt: topics.NewTimePtr(expires)}
	require.Equal(t, "LOCK_HELD: held until 2030-01-02T03:04:05Z (retry after 1.5s)", held(acquired, 1.5).Error())
	delay := &topics.LockInfo{LockName: "l", Status: topics.StatusFree}
	require.Equal(t, "LOCK_HELD: held (retry after 2.25s)", held(delay, 2.25).Error(), "a lock-delay: no holder, yet a time to retry")
	require.Equal(t, "LOCK_HELD: held (retry after 0s)", held(delay, 0).Error())
	require.Equal(t, "NOT_HELD: gone", (&Error{Code: topics.CodeNotHeld, Message: "gone"}).Error())
}

// lockHeld is the LOCK_HELD refusal of the acquire cmd, showing li, to retry
// after retry seconds.
func lockHeld(cmd topics.Command, li *topics.LockInfo, retry float64) topics.Event {
	ev := topics.NewEvent(topics.TypeRejected, cmd.Operation, cmd.RequestID, time.Now())
	ev.ErrorCode, ev.ErrorMessage, ev.LockInfo, ev.RetryAfterSeconds = topics.CodeLockHeld, "held", li, &retry
	return ev
}

// A LOCK_HELD whose retry_after_seconds is outside the contract's range
// (negative, or past the furthest a lease in the way may end, 366 days, and
// its lock-delay) is refused as a reply's duration out of range is
// (replySeconds), not read as a RetryAfter that overflows time.Duration
// (1e300 s read as -2562047h47m16.85s). Its bounds are read.
func TestLockHeldRetryAfterOutsideTheContract(t *testing.T) {
	cmd := topics.Command{RequestID: "r", Operation: topics.OpAcquire, LockName: "l"}
	const most = 366*86400 + 60
	for retry, text := range map[float64]string{1e300: "1e+300", -0.001: "-0.001", most + 0.001: "31622460.001"} {
		err := rejection(lockHeld(cmd, nil, retry))
		require.EqualError(t, err, "lock.rejected with retry_after_seconds "+text+" is outside 0..31622460 seconds")
		require.NotErrorIs(t, err, ErrLockHeld)
	}
	for _, retry := range []float64{0, most} {
		var held *Error
		require.ErrorAs(t, rejection(lockHeld(cmd, nil, retry)), &held)
		require.Equal(t, seconds(retry), held.RetryAfter)
	}
}
