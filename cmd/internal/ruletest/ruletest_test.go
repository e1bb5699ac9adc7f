package ruletest

import (
	"strings"
	"testing"
)

// TestRunDir: checkpoints pass and fail with the difference printed, and a
// rule that no test expects fails the run.
func TestRunDir(t *testing.T) {
	var out strings.Builder
	passed, failed, err := RunDir("testdata/dir", &out)
	if err != nil {
		t.Fatal(err)
	}
	if passed != 1 || failed != 2 {
		t.Errorf("passed %d failed %d, want 1 and 2\n%s", passed, failed, out.String())
	}
	for _, want := range []string{
		"ok   testdata/dir/rules_test.yaml:2: passes",
		"FAIL testdata/dir/rules_test.yaml:11: fails at a checkpoint and at the end",
		"at 11m0s:\n        missing: t.down {node=n1}",
		"at the end (5m0s):\n        missing: t.down {node=n2}",
		"FAIL testdata/dir/rules.yaml:9: rule t.untested: no test expects it to fire",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
