package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	b := Exponential(100*time.Millisecond, time.Second)
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
	if d := Exponential(0, 0)(1); d < 500*time.Millisecond || d > time.Second {
		t.Errorf("zero config: %s, want the 1s default", d)
	}
}

func TestBackoffCountsAndResets(t *testing.T) {
	b := New(10*time.Millisecond, 40*time.Millisecond)
	var ceil []time.Duration
	for range 4 {
		d := b.Next()
		ceil = append(ceil, d)
	}
	if b.Failures() != 4 {
		t.Errorf("failures %d, want 4", b.Failures())
	}
	for i, want := range []time.Duration{10, 20, 40, 40} {
		want *= time.Millisecond
		if ceil[i] < want/2 || ceil[i] > want {
			t.Errorf("delay %d: %s, want in [%s, %s]", i+1, ceil[i], want/2, want)
		}
	}
	b.Reset()
	if d := b.Next(); d > 10*time.Millisecond || b.Failures() != 1 {
		t.Errorf("after Reset: %s with %d failures, want ≤ 10ms and 1", d, b.Failures())
	}
}

func TestSleepStopsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep waited out an hour on a cancelled context")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep(1ms) reported a cancelled context")
	}
}
