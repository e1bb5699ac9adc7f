package ingest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

func TestGlob(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b.log", "a.log", "c.txt"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := Glob([]string{filepath.Join(dir, "*.log"), filepath.Join(dir, "a.log"), filepath.Join(dir, "[")})
	want := []string{filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")}
	if !slices.Equal(got, want) {
		t.Errorf("Glob = %q, want %q (sorted, distinct, bad patterns skipped)", got, want)
	}
}

// TestPollLoop: the first poll is the startup one and comes at once; polls
// follow every interval until ctx is done.
func TestPollLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var polls, startups atomic.Int32
	done := make(chan struct{})
	go func() {
		PollLoop(ctx, time.Millisecond, func(startup bool) {
			if startup {
				startups.Add(1)
			}
			if polls.Add(1) == 5 {
				cancel()
			}
		}, func() {})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("PollLoop did not stop with its context")
	}
	if polls.Load() != 5 || startups.Load() != 1 {
		t.Errorf("%d polls, %d startups; want 5 and 1", polls.Load(), startups.Load())
	}
}
