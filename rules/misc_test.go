package rules

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

type fakeAgg struct {
	counts   []int
	distinct map[DistinctRef]int
}

func (a fakeAgg) Count(sel int) int { return a.counts[sel] }
func (a fakeAgg) Distinct(sel int, field string) int {
	return a.distinct[DistinctRef{Selector: sel, Field: field}]
}

func TestCondition(t *testing.T) {
	s := mustLoad(t, "testdata/good.yaml")
	heap := s.Rule("nomad.windows.desktop_heap_exhaustion")
	loop := s.Rule("nomad.task.restart_loop")
	srv := s.Rule("windows.srv.pool_exhaustion")
	ref := DistinctRef{Selector: 0, Field: "fields.alloc_id"}
	tests := []struct {
		name string
		r    *Rule
		agg  fakeAgg
		want bool
	}{
		{"heap both", heap, fakeAgg{counts: []int{1, 1}}, true},
		{"heap one", heap, fakeAgg{counts: []int{5, 0}}, false},
		{"loop enough", loop, fakeAgg{counts: []int{3, 0}, distinct: map[DistinctRef]int{ref: 2}}, true},
		{"loop no distinct", loop, fakeAgg{counts: []int{3, 0}}, false},
		{"loop few", loop, fakeAgg{counts: []int{2, 9}, distinct: map[DistinctRef]int{ref: 2}}, false},
		{"default any", srv, fakeAgg{counts: []int{0, 0, 1}}, true},
		{"default none", srv, fakeAgg{counts: []int{0, 0, 0}}, false},
	}
	for _, tt := range tests {
		got, err := tt.r.When.Eval(tt.agg)
		if err != nil || got != tt.want {
			t.Errorf("%s: %v %v", tt.name, got, err)
		}
	}
	if _, err := heap.When.Eval(nil); err == nil {
		t.Error("nil aggregates: no error")
	}
	if !loop.When.Uses(0) || loop.When.Uses(1) || !srv.When.Uses(2) {
		t.Error("Uses")
	}
	agg := fakeAgg{counts: []int{1, 1}}
	if n := testing.AllocsPerRun(100, func() { heap.When.Eval(agg) }); n > 2 {
		t.Errorf("Eval allocates %v times", n)
	}
}

func TestRender(t *testing.T) {
	s := mustLoad(t, "testdata/good.yaml")
	heap := s.Rule("nomad.windows.desktop_heap_exhaustion")
	title, summary := heap.Render(TemplateData{Node: "win-client-7", Count: 27, Counts: map[string]int{"reattach": 3, "no_resources": 24}, Window: 15 * time.Minute})
	if title != "Desktop heap exhaustion on win-client-7" {
		t.Errorf("title %q", title)
	}
	if summary != "27 signals in 15m: 3 reattach failures, 24 resource errors" {
		t.Errorf("summary %q", summary)
	}
	// Missing keys render as nothing / zero.
	loop := s.Rule("nomad.task.restart_loop")
	title, summary = loop.Render(TemplateData{Node: "vm", Counts: map[string]int{"restarting": 4},
		Values: map[string][]string{"restarting.fields.alloc_id": {"a", "b"}}, Fields: map[string]any{"task": "web"}})
	if title != "Restart loop of web on vm" || summary != "4 restarts of 2 allocations in 10m" {
		t.Errorf("%q %q", title, summary)
	}
	title, _ = loop.Render(TemplateData{Node: "vm"})
	if title != "Restart loop of  on vm" {
		t.Errorf("missing field: %q", title)
	}
	if _, summary = loop.Render(TemplateData{Node: "vm"}); summary != "0 restarts of 0 allocations in 10m" {
		t.Errorf("empty data: %q", summary)
	}
	// An execution error falls back to the id / "" and is counted.
	rs, err := ParseFile("t.yaml", []byte("rules:\n  - id: x\n    title: '{{ .count.foo }}'\n    summary: '{{ .count.foo }}'\n    match: {a: msg == \"a\"}\n    correlate: {window: 1m}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if title, summary := rs[0].Render(TemplateData{}); title != "x" || summary != "" || rs[0].RenderErrors() != 2 {
		t.Errorf("fallback %q %q %d", title, summary, rs[0].RenderErrors())
	}
	if title, _ := s.Rule("windows.srv.pool_exhaustion").Render(TemplateData{Node: "n"}); title != "Srv pool exhaustion on n" {
		t.Errorf("%q", title)
	}
}

func TestLint(t *testing.T) {
	s := mustLoad(t, "testdata/lint.yaml")
	var got []string
	for _, f := range Lint(s) {
		got = append(got, f.String())
	}
	sameStrings(t, got, []string{
		`testdata/lint.yaml:2:5: warning: rule lint.a: no runbook: tell the on-call engineer what to do`,
		`testdata/lint.yaml:4:15: warning: rule lint.a: selector unused is not used by when (it only adds evidence)`,
		`testdata/lint.yaml:5:17: warning: rule lint.a: selector constant is always true: it does not read the event`,
		`testdata/lint.yaml:6:14: error: rule lint.a: selector never can never match: lower(msg) is compared with "Reattach", which has upper-case letters`,
		`testdata/lint.yaml:7:15: warning: rule lint.a: selector costly has no literal need (like source == "..." or msg contains "..."): expr runs for every event`,
		`testdata/lint.yaml:7:27: warning: rule lint.a: selector costly: costly regular expression: it starts with .* (matches are unanchored already; drop it)`,
		`testdata/lint.yaml:8:16: warning: rule lint.a: selector slowalt has no literal need (like source == "..." or msg contains "..."): expr runs for every event`,
		`testdata/lint.yaml:8:28: warning: rule lint.a: selector slowalt: costly regular expression: an unanchored alternation of 10 branches`,
		`testdata/lint.yaml:13:14: warning: rule lint.a: resolve.after (1m) is shorter than the window (10m): the incident may resolve while the window still holds its evidence`,
	})
	if len(Lint(mustLoad(t, "testdata/good.yaml"))) != 1 {
		t.Errorf("good.yaml: %v", Lint(mustLoad(t, "testdata/good.yaml")))
	}
}

func TestWatcher(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rule := func(id string) string {
		return "rules:\n  - id: " + id + "\n    match: {a: msg == \"a\"}\n    correlate: {window: 1m}\n"
	}
	write("a.yaml", rule("one"))
	var mu sync.Mutex
	var current *Set
	var errs []error
	changes := 0
	w, err := NewWatcher(dir, nil, func(s *Set) {
		mu.Lock()
		current, changes = s, changes+1
		mu.Unlock()
	}, func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	w.Debounce = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			ok := cond()
			mu.Unlock()
			if ok {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("timed out waiting for %s", what)
	}
	// Explicit reload.
	if err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	waitFor("first set", func() bool { return current != nil && current.Rule("one") != nil })

	// A change is picked up.
	write("b.yaml", rule("two"))
	waitFor("second rule", func() bool { return current.Rule("two") != nil })

	// A broken file keeps the old set and reports the error.
	write("c.yaml", "rules:\n  - id: three\n    match: {a: msg ==}\n")
	waitFor("error", func() bool { return len(errs) > 0 })
	mu.Lock()
	if current.Rule("two") == nil || !strings.Contains(errs[0].Error(), "c.yaml:3:") {
		t.Errorf("after a broken file: set %v, err %v", current.Rules, errs[0])
	}
	mu.Unlock()
	if err := w.Reload(); err == nil {
		t.Error("Reload of a broken dir: no error")
	}
	// Temp files and rule tests are ignored; fixing the file reloads.
	mu.Lock()
	before := changes
	mu.Unlock()
	write(".c.yaml.swp", "junk")
	write("c.yaml~", "junk")
	write("x_test.yaml", "junk")
	time.Sleep(200 * time.Millisecond) // nothing must happen; give it a chance
	mu.Lock()
	if changes != before {
		t.Errorf("temp files triggered a reload")
	}
	mu.Unlock()
	write("c.yaml", rule("three"))
	waitFor("fixed", func() bool { return current.Rule("three") != nil && current.Rule("one") != nil })
	// Removing a file reloads too.
	os.Remove(filepath.Join(dir, "a.yaml"))
	waitFor("removal", func() bool { return current.Rule("one") == nil })
}

func TestSetRuleAndNil(t *testing.T) {
	var s *Set
	if s.Rule("x") != nil {
		t.Error("nil set")
	}
	s = mustLoad(t, "testdata/good.yaml")
	ev := &ingest.Event{Source: "winevt", Kind: "Srv/2020", Msg: "The server was unable to allocate from the system paged pool"}
	var got []string
	s.Match(ev, func(r *Rule, m uint64) { got = append(got, r.ID) })
	sameStrings(t, got, []string{"windows.srv.pool_exhaustion"})
}
