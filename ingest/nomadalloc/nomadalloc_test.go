package nomadalloc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

func logLine(alloc string) *ingest.Event {
	return &ingest.Event{Source: ingest.SourceNomadLog, Msg: "restarting task",
		Fields: map[string]any{"alloc_id": alloc, "task": "app"}}
}

func streamEvent(alloc, ns, job, group string) *ingest.Event {
	return &ingest.Event{Source: ingest.SourceNomadEvent, Kind: "Allocation.TaskEvent",
		Fields: map[string]any{"alloc_id": alloc, "namespace": ns, "job": job, "task_group": group, "task": "app"}}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestObserve: a log line is given the job the stream named for its
// allocation; one the stream did not name is asked for once, and a failed
// lookup is not asked again before RetryFailed.
func TestObserve(t *testing.T) {
	now := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	asked := map[string]int{}
	api := map[string]Info{"b": {Namespace: "prod", Job: "beta", TaskGroup: "g"}}
	c := New(Config{
		Now: func() time.Time { return now }, Log: quiet(), RetryFailed: time.Minute,
		Lookup: func(_ context.Context, id string) (Info, error) {
			asked[id]++
			if i, ok := api[id]; ok {
				return i, nil
			}
			return Info{}, errors.New("404 alloc not found")
		},
	})
	ctx := context.Background()
	c.Observe(ctx, streamEvent("a", "default", "alpha", "web"))
	tests := []struct {
		alloc, job, ns, group string
		asks                  int
	}{
		{"a", "alpha", "default", "web", 0}, // learnt from the stream
		{"b", "beta", "prod", "g", 1},       // asked once…
		{"b", "beta", "prod", "g", 1},       // …then cached
		{"c", "", "", "", 1},                // unknown: asked once…
		{"c", "", "", "", 1},                // …not again within RetryFailed
	}
	for i, tc := range tests {
		ev := logLine(tc.alloc)
		c.Observe(ctx, ev)
		if ev.Field("job") != tc.job || ev.Field("namespace") != tc.ns || ev.Field("task_group") != tc.group {
			t.Errorf("%d: alloc %s got job=%q ns=%q group=%q, want %q %q %q", i, tc.alloc,
				ev.Field("job"), ev.Field("namespace"), ev.Field("task_group"), tc.job, tc.ns, tc.group)
		}
		if asked[tc.alloc] != tc.asks {
			t.Errorf("%d: alloc %s asked %d times, want %d", i, tc.alloc, asked[tc.alloc], tc.asks)
		}
	}
	now = now.Add(2 * time.Minute)
	c.Observe(ctx, logLine("c"))
	if asked["c"] != 2 {
		t.Errorf("alloc c asked %d times after RetryFailed, want 2", asked["c"])
	}
	if st := c.Stats(); st.Enriched != 3 || st.Lookups != 3 || st.LookupFailures != 2 {
		t.Errorf("stats %+v, want 3 enriched, 3 lookups (b, c, c again), 2 failures", st)
	}
	// An event that names its job keeps it.
	ev := streamEvent("a", "default", "other", "web")
	c.Observe(ctx, ev)
	if ev.Field("job") != "other" {
		t.Errorf("stream event's job overwritten: %q", ev.Field("job"))
	}
}

// TestBounded: the cache keeps the newest MaxAllocs allocations.
func TestBounded(t *testing.T) {
	c := New(Config{MaxAllocs: 3, Log: quiet()})
	ctx := context.Background()
	for _, a := range []string{"a", "b", "c", "d"} {
		c.Observe(ctx, streamEvent(a, "default", "job-"+a, "g"))
	}
	for alloc, want := range map[string]string{"a": "", "b": "job-b", "d": "job-d"} {
		ev := logLine(alloc)
		c.Observe(ctx, ev)
		if ev.Field("job") != want {
			t.Errorf("alloc %s: job %q, want %q", alloc, ev.Field("job"), want)
		}
	}
	if n := len(c.allocs); n != 3 {
		t.Errorf("%d allocations kept, want 3", n)
	}
}
