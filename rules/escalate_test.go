package rules

import (
	"strings"
	"testing"
)

func TestEscalate(t *testing.T) {
	good := `rules:
  - id: e.good
    severity: warning
    escalate:
      - {count: 3, severity: error}
      - {count: 10, severity: critical}
    match: {a: msg == "a"}
    correlate: {window: 10m}
`
	rs, err := ParseFile("e.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	r := rs[0]
	for count, want := range map[int]string{1: "warning", 2: "warning", 3: "error", 9: "error", 10: "critical", 50: "critical"} {
		if got := r.SeverityAt(count); got != want {
			t.Errorf("SeverityAt(%d) = %s, want %s", count, got, want)
		}
	}
	tests := []struct{ body, want string }{
		{"escalate: {count: 3}", "e.yaml:4:15: rule e.bad: escalate: expected a list"},
		{"escalate:\n      - {count: 0, severity: error}", "escalate.count: \"0\" is not a positive integer"},
		{"escalate:\n      - {count: 2, severity: loud}", "escalate.severity: invalid severity \"loud\""},
		{"escalate:\n      - {count: 5, severity: error}\n      - {count: 3, severity: critical}", "escalate: counts must increase (3 after 5)"},
		{"escalate:\n      - {count: 5}", "escalate: each step needs count and severity"},
		{"escalate:\n      - {count: 5, severity: error, when: x}", "unknown key \"when\""},
	}
	for _, tc := range tests {
		src := "rules:\n  - id: e.bad\n    severity: warning\n    " + tc.body + "\n    match: {a: msg == \"a\"}\n    correlate: {window: 10m}\n"
		_, err := ParseFile("e.yaml", []byte(src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.body, err, tc.want)
		}
	}
}
