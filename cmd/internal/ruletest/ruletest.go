// Package ruletest runs the rule unit tests kept next to the rules
// (rules.d/*_test.yaml): timed inputs from several sources (agent log
// lines, event-stream frames, rendered Windows events, or events written
// out) go through the real decoders, rules and correlator, and the
// incidents they produce are compared with the expected ones at
// checkpoints and at the end.
package ruletest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/nomadalloc"
	"github.com/klaxon-dev/klaxon/ingest/nomadevents"
	"github.com/klaxon-dev/klaxon/ingest/nomadlog"
	"github.com/klaxon-dev/klaxon/ingest/winevt"
	"github.com/klaxon-dev/klaxon/rules"
)

// File is one *_test.yaml file.
type File struct {
	Tests []Case `yaml:"tests"`
	// Overrides, when given, tune the rules for this file's tests: they
	// are applied on top of the directory's rules and overrides (and win
	// over them), in the format of a rule file's overrides: (read by the
	// rules package, which names their errors' places).
	Overrides yaml.Node `yaml:"overrides"`
}

// Case is one test.
type Case struct {
	Name string `yaml:"name"`
	// Node is the default node of log lines that carry none (default "node-1").
	Node string `yaml:"node"`
	// Start is the time of offset 0 (default 2026-01-01T00:00:00Z).
	Start time.Time `yaml:"start"`
	// Input lists inputs at time offsets.
	Input []Input `yaml:"input"`
	// Until advances time to this offset after the last input (to see
	// resolutions); default: the last input's offset.
	Until Duration `yaml:"until"`
	// Expect lists the incidents expected at the end, by rule and group;
	// any other incident fails the test.
	Expect []Expect `yaml:"expect"`
	// Checkpoints list the incidents expected at given times (every source
	// is taken to have delivered its events up to then).
	Checkpoints []Checkpoint `yaml:"checkpoints"`
	// Lateness and Idle set the correlator's options of the same names.
	Lateness Duration `yaml:"lateness"`
	Idle     Duration `yaml:"idle"`

	line int
}

// Checkpoint is a set of expectations at a time offset.
type Checkpoint struct {
	At     Duration `yaml:"at"`
	Expect []Expect `yaml:"expect"`
}

// Input is one timed input: agent log line(s), an event-stream frame,
// rendered Windows event XML, or an event written out. Its events take the
// time Start+At.
type Input struct {
	At Duration `yaml:"at"`
	// Log holds one or more agent log lines (text or JSON); their own
	// timestamps are replaced by Start+At.
	Log string `yaml:"log"`
	// Stream is one frame of the Nomad event stream (/v1/event/stream) as
	// the server sends it: {"Index": N, "Events": [...]}. The decoder keeps
	// its state across the frames of a test (previous statuses).
	Stream string `yaml:"stream"`
	// Windows holds rendered event XML (wevtutil qe /f:xml, EvtRender).
	Windows string `yaml:"windows"`
	// Event is an event written out (for any source).
	Event *ingest.Event `yaml:"event"`
}

// Expect is one expected incident.
type Expect struct {
	Rule  string            `yaml:"rule"`
	Group map[string]string `yaml:"group"`
	// Status is the expected last status (default firing, which also
	// accepts updated).
	Status string `yaml:"status"`
	// MinCount, when set, is the least expected count.
	MinCount int `yaml:"min_count"`
	// Counts, when set, are the expected counts of the incident's
	// selectors (what its summary says: restarts, failures, ...).
	Counts map[string]int `yaml:"counts"`
	// Summary, when set, is text the incident's summary must contain
	// (spaces and line breaks count as one space).
	Summary string `yaml:"summary"`
	// Title, when set, is text its title must contain.
	Title string `yaml:"title"`
}

// Duration is a time.Duration in YAML ("90s", "15m").
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// Result is the outcome of one case.
type Result struct {
	File, Name string
	Line       int
	Err        error
	// Notes name the overrides in effect for the rules the case expects
	// (printed with a failure: the override may be why).
	Notes []string
}

// RunDir runs every *_test.yaml file in dir against the rules loaded from dir.
func RunDir(dir string, out io.Writer) (passed, failed int, err error) {
	set, err := rules.LoadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*_test.yaml"))
	if err != nil {
		return 0, 0, err
	}
	more, _ := filepath.Glob(filepath.Join(dir, "*_test.yml"))
	files = append(files, more...)
	sort.Strings(files)
	if len(files) == 0 {
		return 0, 0, fmt.Errorf("%s: no rule tests (*_test.yaml)", dir)
	}
	tested := map[string]bool{}
	for _, f := range files {
		results, err := RunFile(set, f)
		if err != nil {
			return passed, failed + 1, err
		}
		for _, id := range expectedRules(f) {
			tested[id] = true
		}
		for _, r := range results {
			if r.Err != nil {
				failed++
				fmt.Fprintf(out, "FAIL %s:%d: %s\n%s\n", r.File, r.Line, r.Name, indent(r.Err.Error()))
				for _, n := range r.Notes {
					fmt.Fprintf(out, "    note: %s\n", n)
				}
			} else {
				passed++
				fmt.Fprintf(out, "ok   %s:%d: %s\n", r.File, r.Line, r.Name)
			}
		}
	}
	// Every rule must be expected to fire by some test.
	for _, r := range set.Rules {
		if !tested[r.ID] {
			failed++
			fmt.Fprintf(out, "FAIL %s:%d: rule %s: no test expects it to fire\n", r.File, r.Line, r.ID)
		}
	}
	return passed, failed, nil
}

// expectedRules lists the rules the tests of a file expect (at the end or
// at a checkpoint).
func expectedRules(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var f File
	if yaml.Unmarshal(b, &f) != nil {
		return nil
	}
	var ids []string
	for _, c := range f.Tests {
		for _, e := range c.Expect {
			ids = append(ids, e.Rule)
		}
		for _, cp := range c.Checkpoints {
			for _, e := range cp.Expect {
				ids = append(ids, e.Rule)
			}
		}
	}
	return ids
}

// RunFile runs the cases of one test file against set, or, when the file
// has overrides:, against set's rule files with those overrides on top.
func RunFile(set *rules.Set, path string) ([]Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if f.Overrides.Kind != 0 {
		if set, err = rules.LoadOverlay(set.Files(), path); err != nil {
			return nil, err
		}
	}
	lines := caseLines(&root)
	var out []Result
	for i, c := range f.Tests {
		if i < len(lines) {
			c.line = lines[i]
		}
		// Named with forward slashes, as the rules package names rule files.
		out = append(out, Result{File: filepath.ToSlash(path), Name: c.Name, Line: c.line, Err: Run(set, c), Notes: overrideNotes(set, c)})
	}
	return out, nil
}

// overrideNotes names the parts overrides set in the rules c expects.
func overrideNotes(set *rules.Set, c Case) []string {
	var notes []string
	seen := map[string]bool{}
	note := func(id string) {
		r := set.Rule(id)
		if r == nil || seen[id] {
			return
		}
		seen[id] = true
		var parts []string
		for _, o := range r.Origins() {
			if o.Override {
				parts = append(parts, o.Part+" ("+o.String()+")")
			}
		}
		if len(parts) > 0 {
			notes = append(notes, fmt.Sprintf("rule %s runs with overrides: %s", id, strings.Join(parts, ", ")))
		}
	}
	for _, e := range c.Expect {
		note(e.Rule)
	}
	for _, cp := range c.Checkpoints {
		for _, e := range cp.Expect {
			note(e.Rule)
		}
	}
	return notes
}

// caseLines returns the line of each item of the top-level tests list.
func caseLines(root *yaml.Node) []int {
	if len(root.Content) == 0 {
		return nil
	}
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "tests" {
			var ls []int
			for _, it := range m.Content[i+1].Content {
				ls = append(ls, it.Line)
			}
			return ls
		}
	}
	return nil
}

// Run runs one case and returns an error describing every difference.
func Run(set *rules.Set, c Case) error {
	if c.Node == "" {
		c.Node = "node-1"
	}
	if c.Start.IsZero() {
		c.Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	for _, e := range c.Expect {
		if err := ruleKnown(set, e.Rule); err != nil {
			return fmt.Errorf("expect: %w", err)
		}
	}
	for _, cp := range c.Checkpoints {
		for _, e := range cp.Expect {
			if err := ruleKnown(set, e.Rule); err != nil {
				return fmt.Errorf("checkpoint at %s: expect: %w", time.Duration(cp.At), err)
			}
		}
	}
	checks := slices.Clone(c.Checkpoints)
	sort.SliceStable(checks, func(i, j int) bool { return checks[i].At < checks[j].At })
	corr := correlate.New(set, correlate.Options{Lateness: time.Duration(c.Lateness), Idle: time.Duration(c.Idle),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	last := map[string]correlate.Incident{}
	emit := func(in correlate.Incident) { last[in.ID] = in }
	dec := &decoders{ident: ingest.NewIdentity(), node: c.Node}
	allocs := nomadalloc.New(nomadalloc.Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var errs []error
	checkpoint := func(cp Checkpoint) {
		corr.Settle(c.Start.Add(time.Duration(cp.At)), emit)
		if err := compare(cp.Expect, last); err != nil {
			errs = append(errs, fmt.Errorf("at %s:\n%s", fmtOffset(cp.At), indent(err.Error())))
		}
	}
	var now time.Time
	for i, in := range c.Input {
		for len(checks) > 0 && checks[0].At < in.At {
			checkpoint(checks[0])
			checks = checks[1:]
		}
		at := c.Start.Add(time.Duration(in.At))
		if at.After(now) {
			now = at
		}
		corr.Advance(now, emit)
		evs, err := dec.events(in, at, i)
		if err != nil {
			return err
		}
		for j := range evs {
			allocs.Observe(context.Background(), &evs[j]) // as replay does
			corr.Process(&evs[j], emit)
		}
	}
	for _, cp := range checks {
		checkpoint(cp)
	}
	end := now
	if u := c.Start.Add(time.Duration(c.Until)); u.After(end) {
		end = u
	}
	corr.Settle(end, emit)
	if err := compare(c.Expect, last); err != nil {
		if len(errs) > 0 {
			err = fmt.Errorf("at the end (%s):\n%s", fmtOffset(Duration(end.Sub(c.Start))), indent(err.Error()))
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func fmtOffset(d Duration) string { return time.Duration(d).String() }

// ruleKnown says why a test cannot expect the rule id.
func ruleKnown(set *rules.Set, id string) error {
	if set.Rule(id) != nil {
		return nil
	}
	if r := set.DisabledRule(id); r != nil {
		o, _ := r.DisabledBy()
		return fmt.Errorf("rule %q is disabled (enabled: false, %s)", id, o)
	}
	return fmt.Errorf("unknown rule %q", id)
}

// decoders turns the inputs of one case into events; the event-stream
// decoder and the node identity map live as long as the case.
type decoders struct {
	ident  *ingest.Identity
	node   string
	stream *nomadevents.Decoder
}

func (d *decoders) events(in Input, at time.Time, idx int) ([]ingest.Event, error) {
	var evs []ingest.Event
	collect := func(ev ingest.Event) { evs = append(evs, ev) }
	n := 0
	if in.Event != nil {
		n++
		ev := *in.Event
		if ev.Node == "" {
			ev.Node = d.node
		}
		if ev.ID == "" {
			ev.ID = fmt.Sprintf("input-%d", idx)
		}
		if ev.Level == "" {
			ev.Level = ingest.LevelInfo
		}
		if ev.Occurrence == "" && ev.Kind == "Allocation.TaskEvent" {
			// As the stream decoder names it.
			ev.Occurrence = ingest.TaskOccurrence(ev.Field("alloc_id"), ev.Field("task"), ev.Field("type"))
		}
		evs = append(evs, ev)
	}
	if in.Log != "" {
		n++
		before := len(evs)
		ld := nomadlog.NewDecoder(nomadlog.DecoderConfig{
			IDPrefix: fmt.Sprintf("input-%d", idx), DefaultNode: d.node, Identity: d.ident,
			Fallback: func() time.Time { return at },
		})
		var off int64
		for _, l := range strings.Split(strings.TrimRight(in.Log, "\n"), "\n") {
			end := off + int64(len(l)) + 1
			ld.Line([]byte(l), off, end, collect)
			off = end
		}
		ld.Flush(collect)
		if len(evs) == before {
			return nil, fmt.Errorf("input %d: no log record in %q", idx, in.Log)
		}
	}
	if in.Stream != "" {
		n++
		if d.stream == nil {
			d.stream = nomadevents.NewDecoder(nomadevents.DecoderConfig{Identity: d.ident, Name: "test",
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		}
		frame := strings.Join(strings.Fields(in.Stream), " ")
		if err := d.stream.Frame([]byte(frame), collect); err != nil {
			return nil, fmt.Errorf("input %d: stream frame: %w", idx, err)
		}
	}
	if in.Windows != "" {
		n++
		before := len(evs)
		st, err := winevt.ReadXML(context.Background(), strings.NewReader(in.Windows), fmt.Sprintf("input-%d", idx),
			winevt.DecoderConfig{Identity: d.ident, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, collect)
		if err != nil {
			return nil, fmt.Errorf("input %d: windows: %w", idx, err)
		}
		if st.BadRecords > 0 || len(evs) == before {
			return nil, fmt.Errorf("input %d: windows: no readable <Event> (%d malformed)", idx, st.BadRecords)
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("input %d: needs log, stream, windows or event", idx)
	}
	if n > 1 {
		return nil, fmt.Errorf("input %d: give one of log, stream, windows and event per input", idx)
	}
	for i := range evs {
		evs[i].Time = at
	}
	return evs, nil
}

func compare(expect []Expect, got map[string]correlate.Incident) error {
	var errs []error
	used := map[string]bool{}
	for _, e := range expect {
		var match *correlate.Incident
		for id, in := range got {
			if used[id] || in.Rule != e.Rule || !groupMatches(e.Group, in.Group) {
				continue
			}
			in := in
			match = &in
			used[id] = true
			break
		}
		if match == nil {
			errs = append(errs, fmt.Errorf("missing: %s %s", e.Rule, fmtGroup(e.Group)))
			continue
		}
		want := e.Status
		if want == "" {
			want = correlate.StatusFiring
		}
		st := match.Status
		if st == correlate.StatusUpdated {
			st = correlate.StatusFiring
		}
		if want == correlate.StatusUpdated {
			want = correlate.StatusFiring
		}
		if st != want {
			errs = append(errs, fmt.Errorf("%s %s: status %s, want %s", e.Rule, fmtGroup(e.Group), match.Status, e.Status))
		}
		if e.MinCount > 0 && match.Count < e.MinCount {
			errs = append(errs, fmt.Errorf("%s %s: count %d, want at least %d", e.Rule, fmtGroup(e.Group), match.Count, e.MinCount))
		}
		for _, sel := range slices.Sorted(maps.Keys(e.Counts)) {
			if got, want := match.Counts[sel], e.Counts[sel]; got != want {
				errs = append(errs, fmt.Errorf("%s %s: count of %s %d, want %d", e.Rule, fmtGroup(e.Group), sel, got, want))
			}
		}
		for _, t := range []struct{ what, got, want string }{{"summary", match.Summary, e.Summary}, {"title", match.Title, e.Title}} {
			if t.want != "" && !strings.Contains(oneSpace(t.got), oneSpace(t.want)) {
				errs = append(errs, fmt.Errorf("%s %s: %s %q does not contain %q", e.Rule, fmtGroup(e.Group), t.what, t.got, t.want))
			}
		}
	}
	ids := slices.Sorted(maps.Keys(got))
	for _, id := range ids {
		if !used[id] {
			in := got[id]
			errs = append(errs, fmt.Errorf("unexpected: %s %s (%s, count %d)", in.Rule, fmtGroup(in.Group), in.Status, in.Count))
		}
	}
	return errors.Join(errs...)
}

// oneSpace makes every run of white space one space.
func oneSpace(s string) string { return strings.Join(strings.Fields(s), " ") }

func groupMatches(want, got map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func fmtGroup(g map[string]string) string {
	keys := slices.Sorted(maps.Keys(g))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + g[k]
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
