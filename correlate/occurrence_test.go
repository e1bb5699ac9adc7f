package correlate

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

const occurrenceRules = `rules:
  - id: t.restarts
    title: "restarts"
    severity: warning
    match:
      restart: msg == "restart"
      logged: source == "nomad.log"
    correlate:
      by: [node]
      window: 10m
      when: count("restart") >= 1 && distinct("restart", "fields.alloc_id") >= 1
`

// TestOccurrenceCountsOnce: records of one occurrence (the same
// Occurrence within ingest.OccurrenceTolerance) count once in every
// aggregate, while the evidence keeps each record; a selector only the
// second record matches still counts that occurrence once.
func TestOccurrenceCountsOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(path, []byte(occurrenceRules), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := rules.LoadFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 22, 1, 58, 26, 0, time.UTC)
	type rec struct {
		at         time.Duration
		source     string
		occurrence string
		alloc      string
	}
	tests := []struct {
		name     string
		recs     []rec
		restarts int
		logged   int
		evidence int
	}{
		{"log and stream of one restart", []rec{
			{186 * time.Millisecond, "nomad.log", "task/a/app/Restarting", "a"},
			{187 * time.Millisecond, "nomad.event", "task/a/app/Restarting", "a"},
		}, 1, 1, 2},
		{"stream first, log second", []rec{
			{187 * time.Millisecond, "nomad.event", "task/a/app/Restarting", "a"},
			{186 * time.Millisecond, "nomad.log", "task/a/app/Restarting", "a"},
		}, 1, 1, 2},
		{"two restarts of one task, seconds apart", []rec{
			{0, "nomad.log", "task/a/app/Restarting", "a"},
			{0, "nomad.event", "task/a/app/Restarting", "a"},
			{4 * time.Second, "nomad.log", "task/a/app/Restarting", "a"},
			{4*time.Second + time.Millisecond, "nomad.event", "task/a/app/Restarting", "a"},
		}, 2, 2, 4},
		{"two allocations' restarts at one instant", []rec{
			{0, "nomad.event", "task/a/app/Restarting", "a"},
			{0, "nomad.event", "task/b/app/Restarting", "b"},
		}, 2, 0, 2},
		{"records without an occurrence count each", []rec{
			{0, "nomad.log", "", "a"},
			{0, "nomad.event", "", "a"},
		}, 2, 1, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := New(set, Options{})
			var last Incident
			emit := func(in Incident) { last = in }
			for i, r := range tc.recs {
				ev := ingest.Event{ID: string(rune('a' + i)), Time: t0.Add(r.at), Node: "vm", Source: r.source,
					Kind: "k", Msg: "restart", Fields: map[string]any{"alloc_id": r.alloc}, Occurrence: r.occurrence}
				c.Process(&ev, emit)
			}
			c.Flush(emit)
			if last.Counts["restart"] != tc.restarts || last.Counts["logged"] != tc.logged {
				t.Errorf("counts %v, want restart %d logged %d", last.Counts, tc.restarts, tc.logged)
			}
			if len(last.Evidence) != tc.evidence {
				t.Errorf("%d evidence records, want %d", len(last.Evidence), tc.evidence)
			}
			if got := c.Stats().Observations; got != uint64(len(tc.recs)-tc.restarts) {
				t.Errorf("observations %d, want %d", got, len(tc.recs)-tc.restarts)
			}
		})
	}
}
