package topics

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDecodeSecondsBelowFloat64 sends every seconds field numbers that
// float64 cannot tell from 0. A zero (however written) is judged as 0; a
// positive one as the positive number it is, against the field's
// documented range (docs/design.md): 1e-400 is no "max_hold 0" (no cap),
// but below its 0.1. A negative one is refused as negative numbers are,
// where "-0" reads as 0.
func TestDecodeSecondsBelowFloat64(t *testing.T) {
	tiny := []string{"1e-400", "1E-400", "2e-324", "0." + strings.Repeat("0", 400) + "1"}
	negative := []string{"-1e-400", "-2e-324"}
	zeros := []string{"0.0e5", "0e-400", "-0", "-0.0", "-0e-400"}
	cases := []struct {
		field, record string // record holds %s where the number goes
		rng           string // the documented range
		zeroIsAbsent  bool   // a 0 written means "not given"
		tinyAccepted  bool   // the range starts at 0
		get           func(Command) float64
	}{
		{"lease_duration", `{"operation":"acquire","lock_name":"a","owner_id":"o","lease_duration":%s}`, "0.1..86400 seconds", false, false,
			func(c Command) float64 { return c.LeaseDuration }},
		{"wait_timeout", `{"operation":"acquire","lock_name":"a","owner_id":"o","wait_timeout":%s}`, "0..3600 seconds", true, true,
			func(c Command) float64 { return c.WaitTimeout }},
		{"extension_duration", `{"operation":"extend","lock_name":"a","owner_id":"o","extension_duration":%s}`, "0.1..86400 seconds", false, false,
			func(c Command) float64 { return c.ExtensionDuration }},
		{"lock_delay", `{"operation":"acquire","lock_name":"a","owner_id":"o","lock_delay":%s}`, "0..60 seconds", true, true,
			func(c Command) float64 { return c.LockDelay }},
		{"max_hold", `{"operation":"acquire","lock_name":"a","owner_id":"o","max_hold":%s}`, "0.1..604800 seconds", true, false,
			func(c Command) float64 { return c.MaxHold }},
		{"max_age_seconds", `{"operation":"cleanup","lock_name":"*","max_age_seconds":%s}`, "0..315360000", true, true,
			func(c Command) float64 { return *c.MaxAgeSeconds }},
		{"ttl", `{"operation":"session_open","session_id":"s","owner_id":"o","ttl":%s}`, "1..3600 seconds", false, false,
			func(c Command) float64 { return c.TTL }},
	}
	for _, tc := range cases {
		decode := func(n string) (Command, error) {
			return Decode([]byte(strings.Replace(tc.record, "%s", n, 1)), prefix)
		}
		refused := func(t *testing.T, n string) {
			_, err := decode(n)
			var r *Rejection
			require.ErrorAs(t, err, &r)
			require.Equal(t, tc.field, r.Field, r.Message)
			require.Contains(t, r.Message, " is outside "+tc.rng)
		}
		for _, n := range tiny {
			t.Run(tc.field+" "+n[:min(len(n), 8)], func(t *testing.T) {
				if !tc.tinyAccepted {
					refused(t, n)
					return
				}
				c, err := decode(n)
				require.NoError(t, err)
				// Above 0: a wait_timeout queues, as any other above 0.
				require.Greater(t, tc.get(c), 0.0)
			})
		}
		for _, n := range negative {
			t.Run(tc.field+" "+n, func(t *testing.T) { refused(t, n) })
		}
		for _, n := range zeros {
			t.Run(tc.field+" "+n, func(t *testing.T) {
				if !tc.zeroIsAbsent {
					refused(t, n)
					return
				}
				c, err := decode(n)
				require.NoError(t, err)
				require.Zero(t, tc.get(c))
			})
		}
	}
	// What the message says of a number it cannot quote as read.
	_, err := Decode([]byte(`{"operation":"acquire","lock_name":"a","owner_id":"o","max_hold":1e-400}`), prefix)
	require.EqualError(t, err, "INVALID_REQUEST: max_hold above 0 and under 1e-323 is outside 0.1..604800 seconds")
	_, err = Decode([]byte(`{"operation":"acquire","lock_name":"a","owner_id":"o","lock_delay":-1e-400}`), prefix)
	require.EqualError(t, err, "INVALID_REQUEST: lock_delay below 0 and over -1e-323 is outside 0..60 seconds")
}
