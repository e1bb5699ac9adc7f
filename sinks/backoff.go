package sinks

import (
	"math/rand/v2"
	"time"
)

// ExponentialBackoff returns a DispatcherConfig.Backoff: initial doubling
// per attempt, capped at ceiling, with equal jitter (a random delay in [d/2,
// d]). DefaultBackoff is ExponentialBackoff(time.Second, 5*time.Minute).
func ExponentialBackoff(initial, ceiling time.Duration) func(attempt int) time.Duration {
	if initial <= 0 {
		initial = time.Second
	}
	if ceiling < initial {
		ceiling = initial
	}
	return func(attempt int) time.Duration {
		d := initial
		for i := 1; i < attempt && d < ceiling; i++ {
			d *= 2
		}
		d = min(d, ceiling)
		return d/2 + rand.N(d/2+1)
	}
}
