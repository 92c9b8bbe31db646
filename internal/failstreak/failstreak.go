// Package failstreak logs a run of failures of one retry loop (a database
// outage seen by the relay, the expiry scheduler or the vacuum loop) as a
// few lines, not one per attempt: the first failure at once, then at most
// one line per Every with the count so far, and one line when it ends.
package failstreak

import (
	"time"

	"github.com/rs/zerolog"
)

// DefaultEvery is how often a streak that lasts is logged again.
const DefaultEvery = 30 * time.Second

// Streak counts the failures in a row of one loop. The zero value is ready;
// it is not safe for concurrent use (one loop owns it).
type Streak struct {
	// Every is the least time between two lines of one streak. Default
	// DefaultEvery.
	Every time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time

	failures int       // in the streak so far; 0: none
	since    time.Time // the streak's first failure
	logged   time.Time // its last line
}

func (s *Streak) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Fail counts a failure. It returns the failures in a row so far (1 for the
// first), for the caller's backoff, and log's warn event with err, the
// count and how long the streak has lasted when a line is due: at the first
// failure, and then once Every has passed since the last line. Otherwise
// the event is nil, whose fields and Msg zerolog ignores, so the caller
// adds its fields and message either way.
func (s *Streak) Fail(log *zerolog.Logger, err error) (int, *zerolog.Event) {
	now := s.now()
	s.failures++
	if s.failures == 1 {
		s.since = now
	} else if now.Sub(s.logged) < s.every() {
		return s.failures, nil
	}
	s.logged = now
	return s.failures, log.Warn().Err(err).Int("failures", s.failures).Dur("failing_for", now.Sub(s.since))
}

// OK ends a streak. When there was one it returns log's info event with the
// streak's failures and duration, for the caller's "works again" line;
// else nil (ignored by zerolog, as Fail's).
func (s *Streak) OK(log *zerolog.Logger) *zerolog.Event {
	if s.failures == 0 {
		return nil
	}
	n, since := s.failures, s.since
	s.failures = 0
	return log.Info().Int("failures", n).Dur("failing_for", s.now().Sub(since))
}

// Failures is the failures in a row so far (0: the last attempt worked).
func (s *Streak) Failures() int { return s.failures }

func (s *Streak) every() time.Duration {
	if s.Every > 0 {
		return s.Every
	}
	return DefaultEvery
}
