package web

import (
	"fmt"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
)

var t0 = time.Date(2026, 11, 20, 9, 14, 0, 0, time.UTC)

func ev(sec int, source, level, msg string) correlate.Evidence {
	return correlate.Evidence{Time: t0.Add(time.Duration(sec) * time.Second), ID: fmt.Sprintf("%s:%d:%s", source, sec, msg), Source: source, Kind: "k", Level: level, Msg: msg}
}

// TestTimeline: one lane per source that has evidence (the three known
// ones in order, then others; an empty source is not drawn), one mark per
// event placed by time inside the plot, ticks at a readable step, markers
// at start and resolution.
func TestTimeline(t *testing.T) {
	resolved := t0.Add(40 * time.Minute)
	tests := []struct {
		name      string
		in        correlate.Incident
		lanes     []string
		counts    []int
		step      string // label of the first two ticks, to check the layout
		markers   []string
		wantTicks [2]int
	}{
		{
			name: "three sources over minutes, resolved",
			in: correlate.Incident{StartedAt: t0.Add(150 * time.Second), UpdatedAt: t0.Add(200 * time.Second), ResolvedAt: &resolved,
				Evidence: []correlate.Evidence{
					ev(0, "nomad.log", "warn", "failed to reattach"),
					ev(2, "nomad.log", "error", "failed to reattach to executor"),
					ev(150, "winevt", "error", "%%1450"),
					ev(200, "nomad.event", "info", "Task hook failed"),
				}},
			lanes:     []string{"Nomad agent log", "Nomad event stream", "Windows Event Log"},
			counts:    []int{2, 1, 1},
			markers:   []string{"started", "resolved"},
			wantTicks: [2]int{3, 8},
		},
		{
			name: "the log and the Windows Event Log: no lane for the stream",
			in: correlate.Incident{StartedAt: t0, UpdatedAt: t0.Add(time.Minute),
				Evidence: []correlate.Evidence{ev(0, "nomad.log", "warn", "a"), ev(60, "winevt", "error", "b")}},
			lanes:     []string{"Nomad agent log", "Windows Event Log"},
			counts:    []int{1, 1},
			markers:   []string{"started"},
			wantTicks: [2]int{3, 8},
		},
		{
			name: "one event, unknown source gets its own lane",
			in: correlate.Incident{StartedAt: t0, UpdatedAt: t0,
				Evidence: []correlate.Evidence{ev(0, "klaxon.incident", "", "inner incident")}},
			lanes:     []string{"klaxon.incident"},
			counts:    []int{1},
			markers:   []string{"started"},
			wantTicks: [2]int{3, 8},
		},
		{
			name:      "no evidence",
			in:        correlate.Incident{StartedAt: t0, UpdatedAt: t0},
			lanes:     []string{},
			counts:    []int{},
			markers:   []string{"started"},
			wantTicks: [2]int{3, 8},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tl := newTimeline(tc.in)
			if len(tl.Lanes) != len(tc.lanes) {
				t.Fatalf("lanes %+v, want %v", tl.Lanes, tc.lanes)
			}
			for i, l := range tl.Lanes {
				if l.Label != tc.lanes[i] || l.Count != tc.counts[i] {
					t.Errorf("lane %d = %s (%d events), want %s (%d)", i, l.Label, l.Count, tc.lanes[i], tc.counts[i])
				}
			}
			if len(tl.Marks) != len(tc.in.Evidence) {
				t.Fatalf("%d marks for %d events", len(tl.Marks), len(tc.in.Evidence))
			}
			for i, m := range tl.Marks {
				if m.X < tl.PlotX || m.X > tl.PlotX+tl.PlotW {
					t.Errorf("mark %d at x=%.1f outside the plot [%.0f, %.0f]", i, m.X, tl.PlotX, tl.PlotX+tl.PlotW)
				}
				if i > 0 && tc.in.Evidence[i].Time.After(tc.in.Evidence[i-1].Time) && m.X <= tl.Marks[i-1].X {
					t.Errorf("mark %d (later event) at x=%.1f, not right of %.1f", i, m.X, tl.Marks[i-1].X)
				}
				if m.Y < tl.Top || m.Y > tl.AxisY {
					t.Errorf("mark %d at y=%.1f outside the lanes", i, m.Y)
				}
			}
			if n := len(tl.Ticks); n < tc.wantTicks[0] || n > tc.wantTicks[1]+1 {
				t.Errorf("%d ticks, want %d..%d: %+v", n, tc.wantTicks[0], tc.wantTicks[1], tl.Ticks)
			}
			var markers []string
			for _, m := range tl.Markers {
				markers = append(markers, m.Label)
			}
			if fmt.Sprint(markers) != fmt.Sprint(tc.markers) {
				t.Errorf("markers %v, want %v", markers, tc.markers)
			}
		})
	}
}

// TestTimelineMarkLevelsAndTitles: marks are classed by level and their
// hover titles carry time, source, kind, level and message.
func TestTimelineMarkLevelsAndTitles(t *testing.T) {
	tl := newTimeline(correlate.Incident{StartedAt: t0, Evidence: []correlate.Evidence{
		ev(0, "winevt", "error", "Insufficient system resources exist"),
		ev(1, "nomad.log", "", "no level"),
	}})
	if got := tl.Marks[0].Class; got != "level-error" {
		t.Errorf("class %q", got)
	}
	if got := tl.Marks[1].Class; got != "level-info" {
		t.Errorf("an event without level is classed %q, want level-info", got)
	}
	want := "2026-11-20 09:14:00.000Z  winevt  k  [error]\nInsufficient system resources exist"
	if tl.Marks[0].Title != want {
		t.Errorf("title %q\nwant  %q", tl.Marks[0].Title, want)
	}
}

func TestTickStep(t *testing.T) {
	tests := []struct {
		span time.Duration
		want time.Duration
	}{
		{10 * time.Second, 2 * time.Second},
		{5 * time.Minute, time.Minute},
		{15 * time.Minute, 2 * time.Minute},
		{7 * time.Hour, time.Hour},
		{3 * 24 * time.Hour, 12 * time.Hour},
	}
	for _, tc := range tests {
		if got := tickStep(tc.span); got != tc.want {
			t.Errorf("tickStep(%s) = %s, want %s", tc.span, got, tc.want)
		}
	}
}

func TestClip(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc…"},
		{"ééé", 3, "é…"}, // never cuts a rune
	}
	for _, tc := range tests {
		if got := clip(tc.in, tc.n); got != tc.want {
			t.Errorf("clip(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

func TestFormatting(t *testing.T) {
	now := t0
	tests := []struct{ got, want string }{
		{ago(now, now.Add(-5*time.Second)), "5s ago"},
		{ago(now, now.Add(-90*time.Second)), "1m ago"},
		{ago(now, now.Add(-3*time.Hour)), "3h ago"},
		{ago(now, now.Add(-72*time.Hour)), "3d ago"},
		{fmtDuration(15 * time.Minute), "15m"},
		{fmtDuration(90 * time.Minute), "1h30m"},
		{fmtDuration(time.Hour), "1h"},
		{fmtDuration(45 * time.Second), "45s"},
		{fmtBytes(1 << 20), "1 MiB"},
		{fmtBytes(512 << 10), "512 KiB"},
		{fmtBytes(1000), "1000 bytes"},
	}
	for i, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%d: %q, want %q", i, tc.got, tc.want)
		}
	}
}
