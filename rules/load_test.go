package rules

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func errStrings(err error) []string {
	var out []string
	for _, e := range Errors(err) {
		out = append(out, e.Error())
	}
	return out
}

func sameStrings(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func mustLoad(t testing.TB, paths ...string) *Set {
	t.Helper()
	s, err := LoadFiles(paths...)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return s
}

func mustParse(t testing.TB, src string) *Set {
	t.Helper()
	rs, err := ParseFile("t.yaml", []byte(src))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return NewSet(rs...)
}

func TestLoadGood(t *testing.T) {
	s := mustLoad(t, "testdata/good.yaml")
	var ids []string
	for _, r := range s.Rules {
		ids = append(ids, r.ID)
	}
	sameStrings(t, ids, []string{"nomad.task.restart_loop", "nomad.windows.desktop_heap_exhaustion", "windows.srv.pool_exhaustion"})
	r := s.Rule("nomad.windows.desktop_heap_exhaustion")
	if r == nil {
		t.Fatal("rule not found")
	}
	if r.Severity != "critical" || r.Window != 15*time.Minute || r.ResolveAfter != 30*time.Minute ||
		r.Labels["component"] != "windows" || len(r.By) != 1 || r.By[0] != "node" || r.Line != 8 || r.Col != 5 {
		t.Errorf("rule fields: %+v", r)
	}
	if r.SelectorIndex("no_resources") != 1 || r.SelectorIndex("reattach") != 0 || r.SelectorIndex("x") != -1 {
		t.Error("SelectorIndex")
	}
	if s := r.Selectors[0]; s.Line != 16 || s.Col != 17 {
		t.Errorf("selector position %d:%d", s.Line, s.Col)
	}
	srv := s.Rule("windows.srv.pool_exhaustion")
	if srv.Window != 24*time.Hour || srv.ResolveAfter != srv.Window || srv.When.Expr != "" {
		t.Errorf("defaults: window %v resolve %v when %q", srv.Window, srv.ResolveAfter, srv.When.Expr)
	}
	loop := s.Rule("nomad.task.restart_loop")
	if len(loop.Distincts) != 1 || loop.Distincts[0] != (DistinctRef{Selector: 0, Field: "fields.alloc_id"}) {
		t.Errorf("distincts %+v", loop.Distincts)
	}
	if sel := loop.Selectors[0]; sel.Line != 34 || sel.Col != 9 {
		t.Errorf("block selector position %d:%d", sel.Line, sel.Col)
	}
	sameStrings(t, s.Files(), []string{"testdata/good.yaml"})
}

func TestBrokenFileAllErrors(t *testing.T) {
	_, err := LoadFiles("testdata/broken.yaml")
	if err == nil {
		t.Fatal("no error")
	}
	var pe *PosError
	if !errors.As(err, &pe) {
		t.Fatalf("not a *PosError: %T", err)
	}
	sameStrings(t, errStrings(err), []string{
		`testdata/broken.yaml:3:5: rule bad.one: unknown key "sumary" (did you mean "summary"?)`,
		`testdata/broken.yaml:4:15: rule bad.one: invalid severity "urgent" (want one of info, warning, error, critical)`,
		`testdata/broken.yaml:6:30: rule bad.one: selector a: unknown name fieldz`,
		"testdata/broken.yaml:7:23: rule bad.one: selector b: bad regular expression: error parsing regexp: missing closing ): `(unclosed`",
		`testdata/broken.yaml:9:18: rule bad.one: correlate.by: invalid event path "host" (want id, node, node_id, source, kind, level, msg or fields.<name>)`,
		`testdata/broken.yaml:10:15: rule bad.one: correlate.window: bad duration "15x" (want e.g. 90s, 15m, 2h, 1d)`,
		`testdata/broken.yaml:11:37: rule bad.one: correlate.when: count: unknown selector "c" (selectors: a, b)`,
		`testdata/broken.yaml:12:5: rule #2: missing id`,
		`testdata/broken.yaml:14:10: rule #2: selector a: expected bool, but got string`,
		`testdata/broken.yaml:16:7: rule #2: missing correlate.window`,
		`testdata/broken.yaml:17:5: rule bad.three: missing correlate (with at least window)`,
		`testdata/broken.yaml:18:12: rule bad.three: match: at least one selector is required`,
		`testdata/broken.yaml:20:14: rule bad.three: resolve.after: the duration must be positive, not "0s"`,
	})
}

func TestDuplicateIDsAcrossFiles(t *testing.T) {
	_, err := LoadDir("testdata/dup")
	sameStrings(t, errStrings(err), []string{
		`testdata/dup/b.yaml:7:5: rule same.rule: duplicate rule id (also defined at testdata/dup/a.yaml:2:5)`,
	})
}

// TestFileNamedWithSlashes: a rule file is named with forward slashes
// whichever separator its path came with (on Windows both spell one file).
func TestFileNamedWithSlashes(t *testing.T) {
	_, err := LoadFiles(filepath.FromSlash("testdata/dup/a.yaml"), "testdata/dup/b.yaml")
	sameStrings(t, errStrings(err), []string{
		`testdata/dup/b.yaml:7:5: rule same.rule: duplicate rule id (also defined at testdata/dup/a.yaml:2:5)`,
	})
	s, err := LoadFiles(filepath.FromSlash("testdata/dup/a.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Files(); len(got) != 1 || got[0] != "testdata/dup/a.yaml" || s.Rules[0].File != got[0] {
		t.Errorf("files %q, rule file %q; want testdata/dup/a.yaml", got, s.Rules[0].File)
	}
}

func TestLoadDirSkipsTestsAndOthers(t *testing.T) {
	s, err := LoadDir("testdata/dir")
	if err != nil {
		t.Fatal(err)
	}
	sameStrings(t, s.Files(), []string{"testdata/dir/a.yaml", "testdata/dir/b.yml"}) // forward slashes on Windows too
	if s.Rule("dir.a") == nil || s.Rule("dir.b") == nil || len(s.Rules) != 2 {
		t.Errorf("rules %v", s.Rules)
	}
	if _, err := LoadDir("testdata/missing"); err == nil {
		t.Error("missing dir: no error")
	}
}

// TestParseErrors covers single errors with exact positions.
func TestParseErrors(t *testing.T) {
	long := strings.Repeat(`msg == "a" || `, 300) + `msg == "b"`
	nodes := strings.Repeat(`msg=="a"||`, 300) + `msg=="b"`
	bigRe := strings.Repeat("a", MaxRegexpLen+1)
	tests := []struct {
		name, src string
		want      []string
	}{
		{"unknown top key", "rulez: []\n", []string{`t.yaml:1:1: unknown key "rulez" (did you mean "rules"?)`}},
		{"unknown key far from any", "rules:\n  - id: a\n    zzzzzzzz: 1\n    match: {a: msg == \"x\"}\n    correlate: {window: 1m}\n",
			[]string{`t.yaml:3:5: rule a: unknown key "zzzzzzzz" (known keys: id, title, summary, severity, escalate, runbook, labels, match, correlate, resolve, for, keep_firing_for, inhibited_by, actions)`}},
		{"nested unknown key", "rules:\n  - id: a\n    match: {a: msg == \"x\"}\n    correlate: {window: 1m, whn: 'count(\"a\") > 1'}\n",
			[]string{`t.yaml:4:29: rule a: unknown key "whn" (did you mean "when"?)`}},
		{"yaml syntax", "rules:\n  - id: a\n    match: [\n", []string{`t.yaml:3:1: invalid YAML: did not find expected node content`}},
		{"type error in double quotes", "rules:\n  - id: a\n    match:\n      x: \"msg contains \\\"q\\\" && level > 3\"\n    correlate: {window: 1m}\n",
			[]string{`t.yaml:4:39: rule a: selector x: invalid operation: > (mismatched types string and int)`}},
		{"type error in block", "rules:\n  - id: a\n    match:\n      x: |\n        msg contains \"q\"\n          && level + 1\n    correlate: {window: 1m}\n",
			[]string{`t.yaml:6:20: rule a: selector x: invalid operation: + (mismatched types string and int)`}},
		{"expression too long", "rules:\n  - id: a\n    match:\n      x: '" + long + "'\n    correlate: {window: 1m}\n",
			[]string{`t.yaml:4:10: rule a: selector x: expression is 4210 bytes long; the limit is 4096`}},
		{"too many nodes", "rules:\n  - id: a\n    match:\n      x: '" + nodes + "'\n    correlate: {window: 1m}\n",
			[]string{`t.yaml:4:1269: rule a: selector x: compilation failed: expression exceeds maximum allowed nodes`}},
		{"regexp too long", "rules:\n  - id: a\n    match:\n      x: msg matches \"" + bigRe + "\"\n    correlate: {window: 1m}\n",
			[]string{`t.yaml:4:22: rule a: selector x: regular expression is 1025 bytes long; the limit is 1024`}},
		{"regexp not literal", "rules:\n  - id: a\n    match:\n      x: msg matches fields.re\n    correlate: {window: 1m}\n",
			[]string{`t.yaml:4:22: rule a: selector x: the pattern of matches must be a string literal`}},
		{"unknown list", "lists: {errs: [a]}\nrules:\n  - id: a\n    match:\n      x: msg in lists.errz\n    correlate: {window: 1m}\n",
			[]string{`t.yaml:5:23: rule a: selector x: unknown list "errz" (did you mean "errs"?)`}},
		{"distinct bad path", "rules:\n  - id: a\n    match: {x: msg == \"a\"}\n    correlate:\n      window: 1m\n      when: distinct(\"x\", \"alloc\") > 1\n",
			[]string{`t.yaml:6:27: rule a: correlate.when: distinct: invalid event path "alloc" (want id, node, node_id, source, kind, level, msg or fields.<name>)`}},
		{"count not literal", "rules:\n  - id: a\n    match: {x: msg == \"a\"}\n    correlate:\n      window: 1m\n      when: count(\"x\" + \"\") > 1\n",
			[]string{`t.yaml:6:19: rule a: correlate.when: count: the selector name must be a string literal`}},
		{"when not bool", "rules:\n  - id: a\n    match: {x: msg == \"a\"}\n    correlate:\n      window: 1m\n      when: count(\"x\")\n",
			[]string{`t.yaml:6:13: rule a: correlate.when: expected bool, but got int`}},
		{"bad id", "rules:\n  - id: 'has space'\n    match: {x: msg == \"a\"}\n    correlate: {window: 1m}\n",
			[]string{`t.yaml:2:9: rule has space: invalid rule id "has space" (letters, digits, _ and -, in dot-separated parts)`}},
		{"duplicate in file", "rules:\n  - id: a\n    match: {x: msg == \"a\"}\n    correlate: {window: 1m}\n  - id: a\n    match: {x: msg == \"a\"}\n    correlate: {window: 1m}\n",
			[]string{`t.yaml:5:5: rule a: duplicate rule id (also defined at t.yaml:2:5)`}},
		{"duplicate selector", "rules:\n  - id: a\n    match:\n      x: msg == \"a\"\n      x: msg == \"b\"\n    correlate: {window: 1m}\n",
			[]string{`t.yaml:5:7: rule a: match: selector "x" given twice`}},
		{"bad template", "rules:\n  - id: a\n    title: '{{ .node '\n    match: {x: msg == \"a\"}\n    correlate: {window: 1m}\n",
			[]string{`t.yaml:3:13: rule a: title: bad template: unclosed action`}},
		{"two documents", "rules: []\n---\nrules: []\n", []string{`t.yaml:2:1: a rule file holds one YAML document; put all rules under one rules: list`}},
		{"days and hours", "rules:\n  - id: a\n    match: {x: msg == \"a\"}\n    correlate: {window: 1d12h}\n    resolve: {after: 1.5x}\n",
			[]string{`t.yaml:5:22: rule a: resolve.after: bad duration "1.5x" (want e.g. 90s, 15m, 2h, 1d)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseFile("t.yaml", []byte(tt.src))
			sameStrings(t, errStrings(err), tt.want)
		})
	}
}

func TestTooManyRulesAndSelectors(t *testing.T) {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := 0; i <= MaxRulesPerFile; i++ {
		fmt.Fprintf(&b, "  - {id: r%d, match: {x: msg == \"a\"}, correlate: {window: 1m}}\n", i)
	}
	rs, err := ParseFile("t.yaml", []byte(b.String()))
	sameStrings(t, errStrings(err), []string{`t.yaml:502:5: too many rules in one file (501; the limit is 500)`})
	if len(rs) != MaxRulesPerFile {
		t.Errorf("%d rules", len(rs))
	}

	b.Reset()
	b.WriteString("rules:\n  - id: a\n    correlate: {window: 1m}\n    match:\n")
	for i := 0; i <= MaxSelectors; i++ {
		fmt.Fprintf(&b, "      s%d: msg == \"a\"\n", i)
	}
	_, err = ParseFile("t.yaml", []byte(b.String()))
	sameStrings(t, errStrings(err), []string{`t.yaml:5:7: rule a: match: too many selectors (65; the limit is 64)`})
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"15m": 15 * time.Minute, "1d": 24 * time.Hour, "1d12h": 36 * time.Hour, "1.5d": 36 * time.Hour,
		"2h30m": 150 * time.Minute, "90s": 90 * time.Second, "7d": 7 * 24 * time.Hour,
	} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	for _, in := range []string{"", "d", "15", "1x", "1dd", "m"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func TestHash(t *testing.T) {
	a := "rules:\n  - id: a\n    match: {x: msg == \"a\"}\n    correlate: {window: 1m}\n"
	moved := "# comment\n\nrules:\n  - id: b\n    match: {x: msg == \"b\"}\n    correlate: {window: 1m}\n  - id: a\n    match:\n      x: msg == \"a\"\n    correlate:\n      window: 60s\n"
	changed := "rules:\n  - id: a\n    match: {x: msg == \"A\"}\n    correlate: {window: 1m}\n"
	h := func(src, id string) string {
		rs, err := ParseFile("x.yaml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return NewSet(rs...).Rule(id).Hash()
	}
	if h(a, "a") != h(moved, "a") {
		t.Error("hash changed when the rule moved")
	}
	if h(a, "a") == h(changed, "a") || len(h(a, "a")) != 64 {
		t.Error("hash did not change with the selector")
	}
	// Lists used by a selector are part of its definition.
	l1 := "lists: {l: [a]}\nrules:\n  - id: a\n    match: {x: msg in lists.l}\n    correlate: {window: 1m}\n"
	l2 := "lists: {l: [a, b]}\nrules:\n  - id: a\n    match: {x: msg in lists.l}\n    correlate: {window: 1m}\n"
	if h(l1, "a") == h(l2, "a") {
		t.Error("hash ignores the lists")
	}
}

func TestWriteFixtureDirIsClean(t *testing.T) {
	// The fixture dir contains a broken *_test.yaml and a broken hidden file
	// that LoadDir must skip; make sure they are still there.
	for _, f := range []string{"testdata/dir/a_test.yaml", "testdata/dir/.hidden.yaml"} {
		if _, err := os.Stat(f); err != nil {
			t.Fatal(err)
		}
	}
}
