package rules

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

const ovDir = "testdata/overrides/"

func ovLoad(t *testing.T, files ...string) *Set {
	t.Helper()
	paths := []string{ovDir + "base.yaml"}
	for _, f := range files {
		paths = append(paths, ovDir+f)
	}
	return mustLoad(t, paths...)
}

func ruleOf(t *testing.T, s *Set, id string) *Rule {
	t.Helper()
	r := s.Rule(id)
	if r == nil {
		t.Fatalf("rule %s not loaded", id)
	}
	return r
}

// TestOverridesApplied: base.yaml alone, then with tune.yaml; each row
// reads one value of the effective rules and must differ where tune.yaml
// changes it (and derived values follow).
func TestOverridesApplied(t *testing.T) {
	base, tuned := ovLoad(t), ovLoad(t, "tune.yaml")
	ids := func(rs []*Rule) string {
		var out []string
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return strings.Join(out, ",")
	}
	tests := []struct {
		name       string
		get        func(s *Set) any
		base, tune string
	}{
		{"rules in the set", func(s *Set) any { return ids(s.Rules) }, "ov.chain,ov.gone,ov.loop,ov.quiet,ov.seq", "ov.chain,ov.gone,ov.loop,ov.seq"},
		{"disabled rules", func(s *Set) any { return ids(s.Disabled()) }, "", "ov.quiet"},
		{"severity", func(s *Set) any { return s.Rule("ov.loop").Severity }, "warning", "critical"},
		{"labels merged", func(s *Set) any { return s.Rule("ov.loop").Labels }, "map[component:workload seed:004]", "map[component:workload seed:004b team:payments]"},
		{"window", func(s *Set) any { return s.Rule("ov.loop").Window }, "10m0s", "20m0s"},
		{"resolve.after kept", func(s *Set) any { return s.Rule("ov.loop").ResolveAfter }, "30m0s", "30m0s"},
		{"params", func(s *Set) any { return s.Rule("ov.loop").Params }, "map[exhausted:1 restarts:1]", "map[exhausted:1 restarts:3]"},
		{"exceptions", func(s *Set) any {
			var n []string
			for _, e := range s.Rule("ov.loop").Exceptions {
				n = append(n, e.Name+"@"+filepath.Base(e.File))
			}
			return n
		}, "[]", "[batch_jobs@tune.yaml drained@tune.yaml]"},
		{"sequence within", func(s *Set) any { return s.Rule("ov.seq").Sequence.Within }, "10m0s", "45m0s"},
		{"window follows the sequence", func(s *Set) any { return s.Rule("ov.seq").Window }, "10m0s", "45m0s"},
		{"resolve.after follows the window", func(s *Set) any { return s.Rule("ov.seq").ResolveAfter }, "10m0s", "45m0s"},
		{"absence within", func(s *Set) any { return s.Rule("ov.gone").Absence.Within }, "10m0s", "20m0s"},
		{"window follows the absence", func(s *Set) any { return s.Rule("ov.gone").Window }, "10m0s", "20m0s"},
		{"absence resolves at once", func(s *Set) any { return s.Rule("ov.gone").ResolveAfter }, "0s", "0s"},
		{"untouched rule keeps its hash", func(s *Set) any { return s.Rule("ov.chain").Hash() == base.Rule("ov.chain").Hash() }, "true", "true"},
		{"changed rule has a new hash", func(s *Set) any { return s.Rule("ov.loop").Hash() == base.Rule("ov.loop").Hash() }, "true", "false"},
		{"overridden", func(s *Set) any { return s.Rule("ov.loop").Overridden() }, "false", "true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fmt.Sprint(tt.get(base)); got != tt.base {
				t.Errorf("base: %s, want %s", got, tt.base)
			}
			if got := fmt.Sprint(tt.get(tuned)); got != tt.tune {
				t.Errorf("tuned: %s, want %s", got, tt.tune)
			}
		})
	}
	d := tuned.DisabledRule("ov.quiet")
	if o, ok := d.DisabledBy(); !ok || o.String() != "override at testdata/overrides/tune.yaml:24:14" {
		t.Errorf("disabled by %v %v", o, ok)
	}
	if _, ok := ruleOf(t, tuned, "ov.loop").DisabledBy(); ok || tuned.Rule("ov.quiet") != nil {
		t.Error("enabled rule reported disabled, or the disabled one is in the set")
	}
}

// TestOverrideParamsReachTheCondition: the condition runs with the
// override's value.
func TestOverrideParamsReachTheCondition(t *testing.T) {
	base, tuned := ovLoad(t), ovLoad(t, "tune.yaml")
	tests := []struct {
		restarting, exhausted int
		base, tuned           bool
	}{
		{1, 1, true, false},
		{2, 1, true, false},
		{3, 1, true, true},
		{3, 0, false, false},
	}
	for _, tt := range tests {
		agg := fakeAgg{counts: []int{tt.restarting, tt.exhausted}}
		for _, c := range []struct {
			s    *Set
			want bool
		}{{base, tt.base}, {tuned, tt.tuned}} {
			got, err := c.s.Rule("ov.loop").When.Eval(agg)
			if err != nil || got != c.want {
				t.Errorf("restarting %d exhausted %d: %v %v, want %v", tt.restarting, tt.exhausted, got, err, c.want)
			}
		}
	}
}

// TestOverrideOrigins: each part says where it came from.
func TestOverrideOrigins(t *testing.T) {
	s := ovLoad(t, "tune.yaml")
	tests := []struct{ rule, part, want string }{
		{"ov.loop", "id", "testdata/overrides/base.yaml:5:9"},
		{"ov.loop", "severity", "override at testdata/overrides/tune.yaml:6:15"},
		{"ov.loop", "labels.component", "testdata/overrides/base.yaml:9:14"},
		{"ov.loop", "labels.team", "override at testdata/overrides/tune.yaml:7:14"},
		{"ov.loop", "labels.seed", "override at testdata/overrides/tune.yaml:7:30"},
		{"ov.loop", "correlate.window", "override at testdata/overrides/tune.yaml:9:15"},
		{"ov.loop", "correlate.params.restarts", "override at testdata/overrides/tune.yaml:10:26"},
		{"ov.loop", "correlate.params.exhausted", "testdata/overrides/base.yaml:16:40"},
		{"ov.loop", "correlate.when", "testdata/overrides/base.yaml:17:13"},
		{"ov.loop", "resolve.after", "testdata/overrides/base.yaml:19:14"},
		{"ov.loop", "exceptions.drained", "override at testdata/overrides/tune.yaml:13:16"},
		{"ov.seq", "severity", "default: warning"},
		{"ov.seq", "correlate.window", "default: as correlate.sequence.within"},
		{"ov.seq", "correlate.sequence.within", "override at testdata/overrides/tune.yaml:17:26"},
		{"ov.seq", "resolve.after", "default: as the window"},
		{"ov.gone", "correlate.absence.within", "override at testdata/overrides/tune.yaml:21:25"},
	}
	for _, tt := range tests {
		o, ok := ruleOf(t, s, tt.rule).OriginOf(tt.part)
		if !ok || o.String() != tt.want {
			t.Errorf("%s %s: %v (%v), want %s", tt.rule, tt.part, o, ok, tt.want)
		}
	}
}

// TestOverrideErrors: every error names its file:line:col (the override's
// when the override is wrong) and, for two overrides of one part, both
// places.
func TestOverrideErrors(t *testing.T) {
	tests := []struct {
		name  string
		files []string
		want  []string
	}{
		{"unknown rule, no rule, nothing to change", []string{"errors/unknown_rule.yaml"}, []string{
			`testdata/overrides/errors/unknown_rule.yaml:2:11: override: unknown rule "ov.lop" (did you mean "ov.loop"?)`,
			`testdata/overrides/errors/unknown_rule.yaml:4:5: override: missing rule (the id of the rule to change)`,
			`testdata/overrides/errors/unknown_rule.yaml:5:11: override: invalid rule id "not an id"`,
			`testdata/overrides/errors/unknown_rule.yaml:7:5: rule ov.chain: override: it changes nothing (an override sets ` + overridable + `)`,
		}},
		{"bad values", []string{"errors/bad_values.yaml"}, []string{
			`testdata/overrides/errors/bad_values.yaml:3:15: rule ov.loop: invalid severity "urgent" (want one of info, warning, error, critical)`,
			`testdata/overrides/errors/bad_values.yaml:5:15: rule ov.loop: correlate.window: bad duration "soon" (want e.g. 90s, 15m, 2h, 1d)`,
			`testdata/overrides/errors/bad_values.yaml:6:26: rule ov.loop: correlate.params.restarts: expected an integer, as the rule's own value 1 is`,
			`testdata/overrides/errors/bad_values.yaml:6:42: rule ov.loop: correlate.params.exhausted: expected a number, not "many"`,
			`testdata/overrides/errors/bad_values.yaml:6:48: rule ov.loop: correlate.params: the rule has no param "restart" (did you mean "restarts"?)`,
			`testdata/overrides/errors/bad_values.yaml:7:22: rule ov.loop: resolve.after: the duration must be positive, not "0s"`,
			`testdata/overrides/errors/bad_values.yaml:9:34: rule ov.loop: exception typo: unknown name fieldz`,
			`testdata/overrides/errors/bad_values.yaml:10:27: rule ov.loop: exception list: unknown list "runners"`,
			`testdata/overrides/errors/bad_values.yaml:11:7: rule ov.loop: exceptions: invalid exception name "bad name" (letters, digits and _, not starting with a digit)`,
			`testdata/overrides/errors/bad_values.yaml:14:16: rule ov.seq: correlate.absence: the rule has no absence`,
			`testdata/overrides/errors/bad_values.yaml:15:7: rule ov.seq: when cannot be overridden: set the thresholds it reads as params.<name> (correlate.params), or add exceptions`,
			`testdata/overrides/errors/bad_values.yaml:16:5: rule ov.seq: match cannot be overridden (an override sets ` + overridable + `); to change what a rule matches add exceptions, or copy the rule under a new id`,
			`testdata/overrides/errors/bad_values.yaml:18:10: rule ov.gone: for: an absence rule waits by itself (absence.within); it takes no for`,
			`testdata/overrides/errors/bad_values.yaml:20:22: rule ov.quiet: resolve.after: give either keep_firing_for or resolve.after, not both`,
			`testdata/overrides/errors/bad_values.yaml:21:14: rule ov.quiet: enabled: expected true or false, not "maybe"`,
		}},
		{"the same part set twice", []string{"errors/conflict_a.yaml", "errors/conflict_b.yaml"}, []string{
			`testdata/overrides/errors/conflict_b.yaml:3:15: rule ov.loop: override: severity is set twice (also at testdata/overrides/errors/conflict_a.yaml:3:15); set it in one place`,
			`testdata/overrides/errors/conflict_b.yaml:4:24: rule ov.loop: override: labels.team is set twice (also at testdata/overrides/errors/conflict_a.yaml:4:14); set it in one place`,
			`testdata/overrides/errors/conflict_b.yaml:6:40: rule ov.loop: override: correlate.params.restarts is set twice (also at testdata/overrides/errors/conflict_a.yaml:6:26); set it in one place`,
			`testdata/overrides/errors/conflict_b.yaml:9:18: rule ov.loop: override: exceptions.x is set twice (also at testdata/overrides/errors/conflict_b.yaml:7:18); set it in one place`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			paths := []string{ovDir + "base.yaml"}
			for _, f := range tt.files {
				paths = append(paths, ovDir+f)
			}
			_, err := LoadFiles(paths...)
			sameStrings(t, errStrings(err), tt.want)
		})
	}
	// The same two files in the other order: the later one is reported.
	_, err := LoadFiles(ovDir+"base.yaml", ovDir+"errors/conflict_b.yaml", ovDir+"errors/conflict_a.yaml")
	if got := errStrings(err); len(got) != 4 || !strings.HasPrefix(got[0], "testdata/overrides/errors/conflict_b.yaml:9:18:") ||
		!strings.Contains(got[1], "conflict_a.yaml:3:15: rule ov.loop: override: severity is set twice (also at testdata/overrides/errors/conflict_b.yaml:3:15)") {
		t.Errorf("reversed order:\n%s", strings.Join(got, "\n"))
	}
}

// TestOverlay: an overlay's overrides replace those of the rule files
// (no conflict) and its other keys are not read.
func TestOverlay(t *testing.T) {
	s, err := LoadOverlay([]string{ovDir + "base.yaml", ovDir + "tune.yaml"}, ovDir+"overlay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r := ruleOf(t, s, "ov.loop")
	if fmt.Sprint(r.Params) != "map[exhausted:1 restarts:2]" || r.Window != 20*time.Minute || len(r.Exceptions) != 2 {
		t.Errorf("params %v window %v exceptions %d", r.Params, r.Window, len(r.Exceptions))
	}
	if o, _ := r.OriginOf("correlate.params.restarts"); o.String() != "override at testdata/overrides/overlay.yaml:7:26" {
		t.Errorf("origin %v", o)
	}
	if s.Rule("ov.quiet") == nil || len(s.Disabled()) != 0 {
		t.Error("the overlay did not enable ov.quiet again")
	}
	if got := s.Files(); len(got) != 2 {
		t.Errorf("files %v: an overlay is not a rule file", got)
	}
	// As a rule file, the overlay's tests: key is unknown.
	if _, err := LoadFiles(ovDir+"base.yaml", ovDir+"overlay.yaml"); err == nil || !strings.Contains(err.Error(), `overlay.yaml:3:1: unknown key "tests"`) {
		t.Errorf("overlay as a rule file: %v", err)
	}
}

// TestExceptionsNarrow: events an exception matches count for none of the
// rule's selectors; others still match. Only ov.loop has exceptions.
func TestExceptionsNarrow(t *testing.T) {
	base, tuned := ovLoad(t), ovLoad(t, "tune.yaml")
	ev := func(msg string, fields map[string]any) *ingest.Event {
		return &ingest.Event{ID: "e", Source: "nomad.log", Kind: "client.alloc_runner.task_runner", Msg: msg, Fields: fields}
	}
	tests := []struct {
		name        string
		ev          *ingest.Event
		base, tuned uint64
	}{
		{"a restart", ev("restarting task", map[string]any{"task": "web", "job": "shop"}), 1, 1},
		{"a batch job", ev("restarting task", map[string]any{"task": "web", "job": "batch-nightly"}), 1, 0},
		{"a batch job's exhaustion", ev("not restarting task", map[string]any{"task": "web", "job": "batch-x"}), 2, 0},
		{"the drain task", ev("restarting task", map[string]any{"task": "drain"}), 1, 0},
		{"no fields (the exceptions fail: not excluded)", ev("restarting task", nil), 1, 1},
		{"the exception's literal alone matches nothing", ev("batch-nightly", map[string]any{"job": "batch-nightly"}), 0, 0},
		{"a job named batch without the dash", ev("restarting task", map[string]any{"job": "batchy"}), 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct {
				s    *Set
				want uint64
			}{{base, tt.base}, {tuned, tt.tuned}} {
				got := matchAll(c.s, tt.ev)["ov.loop"]
				if got != c.want {
					t.Errorf("mask %b, want %b", got, c.want)
				}
			}
		})
	}
	if n := tuned.Rule("ov.loop").Exceptions[0].Errors(); n != 0 {
		t.Errorf("exception errors %d: a missing field is no error", n)
	}
}

// propExceptions narrows propRules: exceptions on fields, kinds and
// sources, with and without literals.
const propExceptions = `
overrides:
  - rule: p.a
    exceptions:
      web: fields.task != nil && fields.task == "web"
      winevt: source == "winevt"
  - rule: p.b
    exceptions:
      started: fields.type == "Started"
      lowkill: lower(msg) contains "kill"
  - rule: p.c
    exceptions:
      any_error: level == "error"
  - rule: p.d
    exceptions:
      gc: kind == "client.gc" || kind == "CLIENT.GC"
`

// TestExceptionsMatchEqualsBruteForce: Match with exceptions (through the
// index and its prefilter) equals evaluating every selector and exception
// of every rule on random events, and exceptions excluded something.
func TestExceptionsMatchEqualsBruteForce(t *testing.T) {
	s := mustParse(t, propRules+propExceptions)
	plain := mustParse(t, propRules)
	s.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	plain.Logger = s.Logger
	r := newRand()
	excluded := 0
	for i := 0; i < 5000; i++ {
		ev := randomEvent(r)
		got, want := matchAll(s, ev), bruteForce(s, ev)
		for _, rule := range s.Rules {
			for _, x := range rule.Exceptions {
				if ok, err := x.Eval(ev); err == nil && ok && want[rule.ID] != 0 {
					delete(want, rule.ID)
					excluded++
					break
				}
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("event %+v: Match %v, brute force %v", ev, got, want)
		}
		// Exceptions only narrow: every match is one of the plain rules'.
		all := matchAll(plain, ev)
		for id, m := range got {
			if all[id] != m {
				t.Fatalf("event %+v: rule %s: %b with exceptions, %b without", ev, id, m, all[id])
			}
		}
	}
	if excluded < 100 {
		t.Errorf("exceptions excluded only %d matches: the test proves little", excluded)
	}
}

// TestExceptionsLeaveRawPrefilter: MayMatchRaw (the decoders' prefilter)
// gives the same answers with and without exceptions: an exception's
// literals are never something the rule needs.
func TestExceptionsLeaveRawPrefilter(t *testing.T) {
	with := mustParse(t, propRules+propExceptions)
	without := mustParse(t, propRules)
	if fmt.Sprint(with.ix.raw) != fmt.Sprint(without.ix.raw) {
		t.Fatalf("raw index differs:\n%v\n%v", with.ix.raw, without.ix.raw)
	}
	r := newRand()
	for i := 0; i < 2000; i++ {
		ev := randomEvent(r)
		line := []byte(ev.Kind + " " + ev.Msg + " " + fmt.Sprint(ev.Fields))
		if with.MayMatchRaw(line) != without.MayMatchRaw(line) || with.MayMatchRawSource(ev.Source, line) != without.MayMatchRawSource(ev.Source, line) {
			t.Fatalf("MayMatchRaw differs on %q", line)
		}
	}
}

// TestLintOverrides: findings of overridden rules point into the
// override's file where the override is the cause.
func TestLintOverrides(t *testing.T) {
	s := ovLoad(t, "lint.yaml")
	var got []string
	for _, f := range Lint(s) {
		if strings.Contains(f.File, "lint.yaml") || strings.Contains(f.Msg, "disabled") {
			got = append(got, f.String())
		}
	}
	sameStrings(t, got, []string{
		`testdata/overrides/base.yaml:48:20: warning: rule ov.chain: inhibited_by: rule ov.quiet is disabled (override at testdata/overrides/lint.yaml:22:14): it never inhibits`,
		`testdata/overrides/base.yaml:50:14: warning: rule ov.chain: selector quiet matches incidents of rule "ov.quiet", which is disabled (override at testdata/overrides/lint.yaml:22:14)`,
		`testdata/overrides/lint.yaml:10:29: warning: rule ov.unused: param spare is not used by when: setting it changes nothing`,
		`testdata/overrides/lint.yaml:15:19: error: rule ov.loop: exception everything is always true: the rule can never fire (to turn a rule off, use enabled: false)`,
		`testdata/overrides/lint.yaml:16:14: warning: rule ov.loop: exception never can never match (source must equal "nomad.log" and "winevt" at once): it excludes nothing`,
		`testdata/overrides/lint.yaml:18:25: error: rule ov.seq: the window (5m) is shorter than the sequence's span (within 10m): steps that far apart are evicted before the sequence completes`,
		`testdata/overrides/lint.yaml:20:21: warning: rule ov.seq: exception windows_only requires source "winevt", which none of the rule's selectors matches: it excludes nothing`,
		`testdata/overrides/lint.yaml:24:22: warning: rule ov.chain: resolve.after (10m) is shorter than the window (1h): the incident may resolve while the window still holds its evidence`,
	})
}

// TestEffectiveYAML: the effective rule with the origin of every value
// (golden file), and, for a rule without exceptions, the printout loaded
// as a rule is the rule: same hash.
func TestEffectiveYAML(t *testing.T) {
	s := ovLoad(t, "tune.yaml")
	got := ruleOf(t, s, "ov.loop").EffectiveYAML()
	golden := ovDir + "effective_loop.golden"
	if os.Getenv("KLAXON_UPDATE_GOLDEN") != "" {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("effective ov.loop:\n%s\nwant:\n%s", got, want)
	}
	for _, id := range []string{"ov.seq", "ov.gone"} {
		r := ruleOf(t, s, id)
		src := "rules:\n  - " + strings.ReplaceAll(strings.TrimRight(r.EffectiveYAML(), "\n"), "\n", "\n    ") + "\n"
		rs, err := ParseFile("effective.yaml", []byte(src))
		if err != nil {
			t.Fatalf("%s: the effective YAML does not load: %v\n%s", id, err, src)
		}
		if rs[0].Hash() != r.Hash() {
			t.Errorf("%s: the effective YAML is another rule:\n%s", id, src)
		}
	}
}

// TestParams: params become constants of the condition; errors name the
// place; a threshold turned into a param of the same value keeps the hash.
func TestParams(t *testing.T) {
	rule := func(params, when string) string {
		return "rules:\n  - id: a\n    match: {x: msg == \"a\", y: msg == \"b\"}\n    correlate:\n      window: 5m\n" +
			params + "      when: " + when + "\n"
	}
	errTests := []struct {
		name, params, when string
		want               []string
	}{
		{"unknown param", "      params: {restarts: 2}\n", `count("x") >= params.restart`,
			[]string{`t.yaml:7:27: rule a: correlate.when: unknown param "restart" (did you mean "restarts"?)`}},
		{"no params", "", `count("x") >= params.n`,
			[]string{`t.yaml:6:27: rule a: correlate.when: unknown param "n" (the rule has no params: give them in correlate.params)`}},
		{"computed name", "      params: {n: 2}\n", `count("x") >= params["n" + ""]`,
			[]string{`t.yaml:7:27: rule a: correlate.when: params must be named literally (params.<name>)`}},
		{"not a number", "      params: {n: two, m: [1]}\n", `count("x") >= params.n`,
			[]string{`t.yaml:6:19: rule a: correlate.params.n: expected a number, not "two"`,
				`t.yaml:6:27: rule a: correlate.params.m: expected a number, not ""`}},
		{"bad name", "      params: {2n: 2}\n", `count("x") >= 1`,
			[]string{`t.yaml:6:16: rule a: correlate.params: invalid param name "2n" (letters, digits and _, not starting with a digit)`}},
		{"twice", "      params: {n: 2, n: 3}\n", `count("x") >= params.n`,
			[]string{`t.yaml:6:22: rule a: correlate.params: param "n" given twice`}},
		{"type error", "      params: {n: 2.5}\n", `count("x") >= params.n && params.n`,
			[]string{`t.yaml:7:36: rule a: correlate.when: invalid operation: && (mismatched types bool and float64)`}},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseFile("t.yaml", []byte(rule(tt.params, tt.when)))
			sameStrings(t, errStrings(err), tt.want)
		})
	}
	hash := func(src string) string {
		rs, err := ParseFile("t.yaml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return rs[0].Hash()
	}
	literal := hash(rule("", `count("x") >= 2 && count("y") < 1.5`))
	if h := hash(rule("      params: {n: 2, f: 1.5}\n", `count("x") >= params.n && count("y") < params.f`)); h != literal {
		t.Error("a threshold turned into a param of the same value changed the hash")
	}
	if h := hash(rule("      params: {n: 3, f: 1.5}\n", `count("x") >= params.n && count("y") < params.f`)); h == literal {
		t.Error("another param value kept the hash")
	}
	// Too many params.
	var b strings.Builder
	b.WriteString("      params: {")
	for i := 0; i <= MaxParams; i++ {
		fmt.Fprintf(&b, "p%d: 1, ", i)
	}
	b.WriteString("}\n")
	_, err := ParseFile("t.yaml", []byte(rule(b.String(), `count("x") >= params.p0`)))
	if got := errStrings(err); len(got) != 1 || !strings.Contains(got[0], "too many params (33; the limit is 32)") {
		t.Errorf("too many: %v", got)
	}
}

// TestSubstituteParams: only params.<name> tokens of known params are
// replaced, not strings or members of other things.
func TestSubstituteParams(t *testing.T) {
	p := map[string]any{"n": 2, "f": 0.5, "big": 1e21}
	tests := []struct{ in, want string }{
		{`count("a") >= params.n`, `count("a") >= 2`},
		{`params.n+params . f`, `2+0.5`},
		{`distinct("a", "fields.params.n") > params.big`, `distinct("a", "fields.params.n") > 1e+21`},
		{`x.params.n > params.unknown`, `x.params.n > params.unknown`},
		{`count("ünï") >= params.n`, `count("ünï") >= 2`},
	}
	for _, tt := range tests {
		if got := substituteParams(tt.in, p); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestBundledThresholdsAreParams: the bundled rules whose thresholds an
// operator tunes read them as params, and an override of each loads.
func TestBundledThresholdsAreParams(t *testing.T) {
	s, err := LoadDir("../rules.d")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range s.Rules {
		keys := make([]string, 0, len(r.Params))
		for k := range r.Params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if len(keys) > 0 {
			got = append(got, r.ID+": "+strings.Join(keys, ","))
		}
	}
	sameStrings(t, got, []string{
		"nomad.client.gc_pressure: over_limit,skipped",
		"nomad.client.reconnect_churn: replacements",
		"nomad.job.reschedule_storm: failed_allocs",
		"nomad.node.flapping: missed",
		"nomad.node.heartbeat_missed: missed",
		"nomad.task.crash_loop: exhausted,restarts",
		"nomad.task.unhealthy_restarts: restart_requests",
		"nomad.windows.desktop_heap_pressure: allocs_at_default,default_heap_kb,ratio",
		"windows.pool_leak: growth_mb_per_hour,min_samples,nonpaged_limit_mb,paged_limit_mb",
	})
	for _, f := range Lint(s) {
		if strings.Contains(f.Msg, "param") {
			t.Errorf("%s", f)
		}
	}
}

func newRand() *rand.Rand { return rand.New(rand.NewSource(1)) }
