package sinks

import (
	"testing"
	"time"
)

func TestExponentialBackoff(t *testing.T) {
	b := ExponentialBackoff(100*time.Millisecond, time.Second)
	for _, tc := range []struct {
		attempt int
		max     time.Duration
	}{{1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {3, 400 * time.Millisecond}, {4, 800 * time.Millisecond}, {5, time.Second}, {40, time.Second}} {
		for range 50 {
			if d := b(tc.attempt); d < tc.max/2 || d > tc.max {
				t.Fatalf("attempt %d: %s, want in [%s, %s]", tc.attempt, d, tc.max/2, tc.max)
			}
		}
	}
	if d := ExponentialBackoff(0, 0)(1); d < 500*time.Millisecond || d > time.Second {
		t.Errorf("zero config: %s, want the 1s default", d)
	}
}
