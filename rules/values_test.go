package rules

import (
	"math"
	"testing"
)

// fakeValues are aggregates with values: latest per ref and samples.
type fakeValues struct {
	counts []int
	latest []any
	t, v   [][]float64
}

func (f fakeValues) Count(sel int) int {
	if sel < len(f.counts) {
		return f.counts[sel]
	}
	return 0
}
func (f fakeValues) Distinct(int, string) int { return 0 }
func (f fakeValues) Latest(i int) any {
	if i < len(f.latest) {
		return f.latest[i]
	}
	return nil
}
func (f fakeValues) Samples(i int) ([]float64, []float64) {
	if i < len(f.t) {
		return f.t[i], f.v[i]
	}
	return nil, nil
}

const heapRule = `
rules:
  - id: heap
    runbook: r
    match:
      load: source == "nomad.event" && kind == "Node.RunningAllocations"
      heap: source == "node.fact" && kind == "windows.desktop_heap"
    correlate:
      params: {ratio: 0.8, allocs_at_default: 24, default_heap_kb: 768}
      when: >-
        (latest("load", "fields.running") ?? 0) >= params.ratio * params.allocs_at_default
          * (latest("heap", "fields.heap_kb") ?? params.default_heap_kb) / params.default_heap_kb
      window: 1h
`

// TestLatestCondition: latest() reads the gauge values the aggregates
// keep; nil takes the ?? default.
func TestLatestCondition(t *testing.T) {
	r := mustParse(t, heapRule).Rule("heap")
	refs := r.ValueRefs()
	if len(refs) != 2 || refs[0] != (ValueRef{Selector: 0, Field: "fields.running", Latest: true}) ||
		refs[1] != (ValueRef{Selector: 1, Field: "fields.heap_kb", Latest: true}) {
		t.Fatalf("refs %+v", refs)
	}
	for _, c := range []struct {
		running, heap any
		want          bool
	}{
		{nil, nil, false},
		{19, nil, false},
		{20, nil, true},     // 80 % of 24 at the default
		{20.0, 768.0, true}, // numbers as JSON decodes them
		{20, 4096, false},   // the heap was raised: 102 fit at 80 %
		{103, 4096, true},
		{"21", nil, true}, // numeric text
	} {
		got, err := r.When.Eval(fakeValues{latest: []any{c.running, c.heap}})
		if err != nil || got != c.want {
			t.Errorf("running %v heap %v: %v, %v; want %v", c.running, c.heap, got, err, c.want)
		}
	}
	// Aggregates without values (an older correlator): latest is nil.
	if got, err := r.When.Eval(fakeValues{}); err != nil || got {
		t.Errorf("no values: %v %v", got, err)
	}
}

func TestRateAndPredict(t *testing.T) {
	s := mustParse(t, `
rules:
  - id: trend
    runbook: r
    match:
      pool: source == "node.fact" && kind == "windows.pool"
    correlate:
      when: (rate("pool", "fields.nonpaged_bytes") ?? 0) > 100 && (predict("pool", "fields.nonpaged_bytes", "1h") ?? 0) > 1000000
      window: 2h
`)
	r := s.Rule("trend")
	if refs := r.ValueRefs(); len(refs) != 1 || refs[0].Latest {
		t.Fatalf("refs %+v", refs)
	}
	// 200 bytes a second from 100,000 at t=0: at t=600 (the newest
	// sample) the line is at 220,000; an hour later 940,000.
	ts := []float64{0, 300, 600}
	grow := func(rate float64) []float64 { return []float64{100000, 100000 + 300*rate, 100000 + 600*rate} }
	if got, _ := r.When.Eval(fakeValues{t: [][]float64{ts}, v: [][]float64{grow(200)}}); got {
		t.Error("fired below the predicted limit")
	}
	if got, _ := r.When.Eval(fakeValues{t: [][]float64{ts}, v: [][]float64{grow(250)}}); !got {
		t.Error("did not fire at 250 B/s (1,150,000 predicted)")
	}
	if got, _ := r.When.Eval(fakeValues{t: [][]float64{{0}}, v: [][]float64{{5e6}}}); got {
		t.Error("fired on one sample")
	}
}

func TestRegression(t *testing.T) {
	at, slope, ok := Regression([]float64{10, 20, 30, 40}, []float64{1, 3, 5, 7})
	if !ok || math.Abs(slope-0.2) > 1e-12 || math.Abs(at-7) > 1e-9 {
		t.Errorf("line: at %v slope %v ok %v", at, slope, ok)
	}
	// Noisy: the least-squares line, as PromQL's deriv.
	at, slope, ok = Regression([]float64{0, 1, 2, 3}, []float64{0, 2, 1, 3})
	if !ok || math.Abs(slope-0.8) > 1e-12 || math.Abs(at-2.7) > 1e-9 {
		t.Errorf("noisy: at %v slope %v ok %v", at, slope, ok)
	}
	// Times as large as Unix seconds keep their precision.
	base := 1.8e9
	at, slope, ok = Regression([]float64{base, base + 1, base + 2}, []float64{5, 6, 7})
	if !ok || math.Abs(slope-1) > 1e-9 || math.Abs(at-7) > 1e-9 {
		t.Errorf("large times: at %v slope %v", at, slope)
	}
	if _, _, ok := Regression([]float64{1, 1}, []float64{1, 2}); ok {
		t.Error("one instant gave a line")
	}
	if _, _, ok := Regression([]float64{1}, []float64{1}); ok {
		t.Error("one sample gave a line")
	}
}

func TestValueFunctionErrors(t *testing.T) {
	for _, c := range []struct{ when, want string }{
		{`latest("nope", "fields.x") > 1`, `unknown selector "nope"`},
		{`latest("a") > 1`, `latest takes two arguments`},
		{`latest("a", "x") > 1`, `invalid event path "x"`},
		{`predict("a", "fields.x") > 1`, `predict takes three arguments`},
		{`predict("a", "fields.x", "soon") > 1`, `how far ahead must be a positive duration`},
		{`predict("a", "fields.x", "-1h") > 1`, `how far ahead must be a positive duration`},
		{`rate("a", fields) > 1`, `the event path must be a string literal`},
	} {
		_, err := ParseFile("t.yaml", []byte(`
rules:
  - id: x
    match:
      a: source == "node.fact"
    correlate:
      window: 1h
      when: '`+c.when+`'
`))
		if err == nil || !contains([]string{err.Error()}, err.Error()) || !containsStr(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.when, err, c.want)
		}
	}
}

func containsStr(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func TestTemplateLatestParamsArithmetic(t *testing.T) {
	s := mustParse(t, `
rules:
  - id: heap
    runbook: r
    summary: >-
      {{ $heap := default .params.default_heap_kb (index .latest "heap" "fields.heap_kb") }}{{ $cap := div (mul .params.allocs_at_default $heap) .params.default_heap_kb }}{{ index .latest "load" "fields.running" }} of about {{ printf "%.0f" $cap }} allocations ({{ printf "%.0f" (mul 100 (div (index .latest "load" "fields.running") $cap)) }} %), heap {{ $heap }} KB
    match:
      load: source == "nomad.event"
      heap: source == "node.fact"
    correlate:
      params: {allocs_at_default: 24, default_heap_kb: 768}
      when: (latest("load", "fields.running") ?? 0) > 0 && latest("heap", "fields.heap_kb") == nil
      window: 1h
`)
	r := s.Rule("heap")
	_, sum := r.Render(TemplateData{Node: "w", Latest: map[string]map[string]any{
		"load": {"fields.running": 21}, "heap": {"fields.heap_kb": nil},
	}})
	if sum != "21 of about 24 allocations (88 %), heap 768 KB" {
		t.Errorf("summary %q", sum)
	}
	_, sum = r.Render(TemplateData{Node: "w", Latest: map[string]map[string]any{
		"load": {"fields.running": 21.0}, "heap": {"fields.heap_kb": 4096.0},
	}})
	if sum != "21 of about 128 allocations (16 %), heap 4096 KB" {
		t.Errorf("summary %q", sum)
	}
	if n := r.RenderErrors(); n != 0 {
		t.Errorf("%d render errors", n)
	}
}

func TestActions(t *testing.T) {
	r := mustParse(t, `
rules:
  - id: a
    runbook: r
    actions: [nomad.node.eligibility]
    match:
      x: source == "node.fact"
    correlate:
      window: 1h
`).Rule("a")
	if len(r.Actions) != 1 || r.Actions[0] != ActionNodeEligibility {
		t.Errorf("actions %v", r.Actions)
	}
	_, err := ParseFile("t.yaml", []byte(`
rules:
  - id: a
    actions: [nomad.node.eligibilty, nomad.node.eligibility, nomad.node.eligibility]
    match:
      x: source == "node.fact"
    correlate:
      window: 1h
  - id: b
    actions: nomad.node.eligibility
    match:
      x: source == "node.fact"
    correlate:
      by: [fields.job]
      window: 1h
`))
	sameStrings(t, errStrings(err), []string{
		`t.yaml:4:15: rule a: actions: unknown action "nomad.node.eligibilty" (did you mean "nomad.node.eligibility"?)`,
		`t.yaml:4:62: rule a: actions: "nomad.node.eligibility" given twice`,
		`t.yaml:10:14: rule b: actions: nomad.node.eligibility acts on the incident's node: the rule must group by node (correlate.by lists node)`,
	})
}

// TestTemplateLatest: {{ index .latest "sel" "path" }} in a template makes
// the value kept (and the selector used) even when `when` does not read it.
func TestTemplateLatest(t *testing.T) {
	r := mustParse(t, `
rules:
  - id: x
    runbook: r
    summary: '{{ with index .latest "p" "fields.incident_id" }}see {{ . }} ({{ index $.latest "p" "fields.status" }}){{ end }}'
    match:
      a: source == "nomad.log"
      p: source == "klaxon.incident" && kind == "y"
    correlate:
      window: 1h
      when: count("a") >= 1
  - id: y
    runbook: r
    match:
      a: source == "nomad.log"
    correlate:
      window: 1h
`).Rule("x")
	refs := r.ValueRefs()
	if len(refs) != 2 || refs[0] != (ValueRef{Selector: 1, Field: "fields.incident_id", Latest: true}) || refs[1].Field != "fields.status" {
		t.Fatalf("refs %+v", refs)
	}
	if !r.usesSelector(1) {
		t.Error("the template's selector counts as unused")
	}
	_, sum := r.Render(TemplateData{Latest: map[string]map[string]any{"p": {"fields.incident_id": "abc", "fields.status": "firing"}}})
	if sum != "see abc (firing)" {
		t.Errorf("summary %q", sum)
	}
	_, err := ParseFile("t.yaml", []byte(`
rules:
  - id: x
    summary: '{{ index .latest "nope" "fields.x" }}'
    match:
      a: source == "nomad.log"
    correlate:
      window: 1h
`))
	sameStrings(t, errStrings(err), []string{`t.yaml:4:14: rule x: summary: .latest names selector "nope", which the rule does not have`})
}
