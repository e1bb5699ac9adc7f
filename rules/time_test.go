package rules

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/nomadevents"
)

// TestLintTimeAndChains: findings about sequences, inhibitions, chained
// rules, contradictory selectors and event-stream fields, with places.
func TestLintTimeAndChains(t *testing.T) {
	s := mustLoad(t, "testdata/lint_time.yaml")
	var got []string
	for _, f := range Lint(s) {
		got = append(got, f.String())
	}
	sameStrings(t, got, []string{
		`testdata/lint_time.yaml:7:11: warning: rule lint.seq: selector s1 reads fields.stauts, which events of source nomad.event never have (did you mean fields.status?)`,
		`testdata/lint_time.yaml:9:13: warning: rule lint.seq: selector both is not used by the sequence (it only adds evidence)`,
		`testdata/lint_time.yaml:9:13: error: rule lint.seq: selector both can never match: source must equal "nomad.log" and "winevt" at once`,
		`testdata/lint_time.yaml:10:16: warning: rule lint.seq: selector nowhere is not used by the sequence (it only adds evidence)`,
		`testdata/lint_time.yaml:10:16: error: rule lint.seq: selector nowhere can never match: source "syslog" is none of nomad.log, nomad.event, winevt, klaxon.incident, node.fact, klaxon.action`,
		`testdata/lint_time.yaml:12:15: error: rule lint.seq: the window (5m) is shorter than the sequence's span (within 10m): steps that far apart are evicted before the sequence completes`,
		`testdata/lint_time.yaml:14:20: error: rule lint.seq: rules lint.seq and lint.chain inhibit each other: whichever fires first silences the other`,
		`testdata/lint_time.yaml:17:20: error: rule lint.chain: rules lint.chain and lint.seq inhibit each other: whichever fires first silences the other`,
		`testdata/lint_time.yaml:19:14: warning: rule lint.chain: selector other matches incidents of rule "lint.nope", which is not loaded`,
		`testdata/lint_time.yaml:20:12: warning: rule lint.chain: selector own matches the rule's own incidents, which a rule never sees (no loops)`,
		`testdata/lint_time.yaml:29:14: warning: rule lint.absent: selector extra is not used by absence (it only adds evidence)`,
	})
}

// TestLoadTimeErrors: errors of the new keys name file:line:col and the rule.
func TestLoadTimeErrors(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string
	}{
		{"unknown step selector", `rules:
  - id: a
    match: {x: msg == "x", y: msg == "y"}
    correlate:
      sequence: {within: 5m, steps: [x, yy]}
`, []string{`t.yaml:5:41: rule a: correlate.sequence.steps[1]: unknown selector "yy" (selectors: x, y)`}},
		{"join keys of different lengths", `rules:
  - id: a
    match: {x: msg == "x", y: msg == "y"}
    correlate:
      sequence:
        within: 5m
        steps: [{match: x, by: [fields.a, fields.b]}, {match: y, by: [fields.a]}]
`, []string{`t.yaml:7:55: rule a: correlate.sequence.steps[1]: every step needs a join key of 2 paths (by), like the others`}},
		{"absence without within and with when", `rules:
  - id: a
    match: {x: msg == "x", y: msg == "y"}
    correlate:
      when: count("x") > 0
      absence: {after: x, expect: y}
`, []string{`t.yaml:5:13: rule a: correlate.when: a rule with absence takes no when (it fires when the expected event is missing)`,
			`t.yaml:6:16: rule a: correlate.absence: missing within`}},
		{"keep_firing_for with resolve.after, bad for", `rules:
  - id: a
    match: {x: msg == "x"}
    correlate: {window: 5m}
    for: soon
    keep_firing_for: 5m
    resolve: {after: 5m}
`, []string{`t.yaml:5:10: rule a: for: bad duration "soon" (want e.g. 90s, 15m, 2h, 1d)`,
			`t.yaml:6:22: rule a: keep_firing_for: give either keep_firing_for or resolve.after, not both`}},
		{"inhibiting itself", `rules:
  - id: a
    inhibited_by: [a]
    match: {x: msg == "x"}
    correlate: {window: 5m}
`, []string{`t.yaml:3:20: rule a: inhibited_by: a rule cannot inhibit itself`}},
		{"macro errors", `macros:
  node: msg == "x"
  bad: msg ==
  good: msg == "x"
rules:
  - id: a
    match: {x: good && nonesuch}
    correlate: {window: 5m}
`, []string{`t.yaml:2:3: macros: "node" is a name of the event or a built-in function; choose another name`,
			`t.yaml:3:13: macro bad: unexpected token EOF`,
			`t.yaml:7:24: rule a: selector x: unknown name nonesuch`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFile("t.yaml", []byte(tc.src))
			var got []string
			for _, e := range Errors(err) {
				got = append(got, e.Error())
			}
			sameStrings(t, got, tc.want)
		})
	}
}

// TestInhibitedByUnknownRule: a rule naming a rule no file defines is a
// load error at the name.
func TestInhibitedByUnknownRule(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", "rules:\n  - id: a.one\n    inhibited_by: [a.tow]\n    match: {x: msg == \"x\"}\n    correlate: {window: 5m}\n  - id: a.two\n    match: {x: msg == \"x\"}\n    correlate: {window: 5m}\n")
	_, err := LoadDir(dir)
	if err == nil || !strings.Contains(err.Error(), `a.yaml:3:20: rule a.one: inhibited_by: unknown rule "a.tow" (did you mean "a.two"?)`) {
		t.Fatalf("err = %v", err)
	}
}

// TestMacrosAndSequenceMatch: macros expand (and give the prefilter its
// literals); sequence join keys come from each step's paths.
func TestMacrosAndSequenceMatch(t *testing.T) {
	rs, err := ParseFile("t.yaml", []byte(`macros:
  stream: source == "nomad.event"
  down: stream && fields.status == "down"
rules:
  - id: a
    match: {d: down && msg contains "node", x: msg == "x"}
    correlate:
      sequence: {within: 5m, by: [fields.alloc_id], steps: [d, x]}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := rs[0]
	if r.Window != 5*time.Minute || r.Sequence == nil || r.Sequence.JoinLen != 1 {
		t.Fatalf("rule %+v", r)
	}
	needs := strings.Join(r.Selectors[0].Needs(), "; ")
	for _, want := range []string{`source == "nomad.event"`, `fields.status == "down"`, `msg contains "node"`} {
		if !strings.Contains(needs, want) {
			t.Errorf("needs %q lack %s", needs, want)
		}
	}
	tests := []struct {
		ev   ingest.Event
		want bool
	}{
		{ingest.Event{Source: "nomad.event", Msg: "node n1", Fields: map[string]any{"status": "down"}}, true},
		{ingest.Event{Source: "nomad.log", Msg: "node n1", Fields: map[string]any{"status": "down"}}, false},
		{ingest.Event{Source: "nomad.event", Msg: "node n1", Fields: map[string]any{"status": "ready"}}, false},
	}
	for _, tc := range tests {
		var got bool
		NewSet(r).Match(&tc.ev, func(_ *Rule, mask uint64) { got = mask&1 != 0 })
		if got != tc.want {
			t.Errorf("%+v: matched %v, want %v", tc.ev, got, tc.want)
		}
	}
	if k := r.Sequence.JoinKey(1, &ingest.Event{Fields: map[string]any{"alloc_id": "A"}}); k != "A" {
		t.Errorf("join key %q", k)
	}
}

func write(t *testing.T, dir, name, src string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestStreamFieldsCoverDecoder: every field the event-stream decoder sets
// on the real recordings is in the list lint checks selectors against.
func TestStreamFieldsCoverDecoder(t *testing.T) {
	files, _ := filepath.Glob("/work/shared/testdata/nomad/captures/*/events.ndjson")
	if len(files) == 0 {
		files, _ = filepath.Glob("../../shared/testdata/nomad/captures/*/events.ndjson")
	}
	if len(files) == 0 {
		t.Skip("no event-stream recordings")
	}
	seen := 0
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		_, err = nomadevents.ReadAll(context.Background(), fh, nomadevents.DecoderConfig{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, func(ev ingest.Event) {
			for k := range ev.Fields {
				seen++
				if !streamFields[k] {
					t.Errorf("%s: field %q of %s is not in streamFields", f, k, ev.Kind)
				}
			}
		})
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if seen == 0 {
		t.Fatal("no fields seen")
	}
}
