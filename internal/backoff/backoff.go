// Package backoff is klaxon's one retry delay: exponential growth with equal
// jitter, and a wait that a context cancels. Every retry loop (publishing,
// reconnecting to NATS or Nomad, restarting journalctl, fetching for a
// sink, NAKing a failed delivery, asking the agent) uses it.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy grows the delay from Initial, doubling per failure, up to Max.
type Policy struct {
	Initial, Max time.Duration
}

// Delay is the delay after the n-th consecutive failure (n ≥ 1):
// Initial·2^(n−1) capped at Max, with equal jitter (uniform in [d/2, d]) so
// that clients failing together spread out. A zero Initial is 1s; a Max
// below Initial is Initial.
func (p Policy) Delay(n int) time.Duration {
	initial, ceiling := p.Initial, p.Max
	if initial <= 0 {
		initial = time.Second
	}
	if ceiling < initial {
		ceiling = initial
	}
	d := initial
	for i := 1; i < n && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	return d/2 + rand.N(d/2+1)
}

// Exponential returns Policy{initial, ceiling}.Delay, for configurations
// that take a delay function of the attempt.
func Exponential(initial, ceiling time.Duration) func(attempt int) time.Duration {
	return Policy{Initial: initial, Max: ceiling}.Delay
}

// Backoff counts consecutive failures of one loop.
type Backoff struct {
	Policy
	failures int
}

// New returns a Backoff of the policy.
func New(initial, ceiling time.Duration) *Backoff {
	return &Backoff{Policy: Policy{Initial: initial, Max: ceiling}}
}

// Next counts a failure and returns the delay to wait before trying again.
func (b *Backoff) Next() time.Duration {
	b.failures++
	return b.Delay(b.failures)
}

// Reset forgets the failures (after a success).
func (b *Backoff) Reset() { b.failures = 0 }

// Failures is the number of consecutive failures counted.
func (b *Backoff) Failures() int { return b.failures }

// Sleep waits d; false when ctx ended first.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
