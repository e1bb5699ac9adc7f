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

// TestRunDirOverrides: the tests of a directory run against its effective
// rules (its override files applied); a test file's own overrides apply on
// top; a failure names the overrides in effect; a disabled rule can be
// neither expected nor required.
func TestRunDirOverrides(t *testing.T) {
	tests := []struct {
		name, dir      string
		passed, failed int
		want, absent   []string
		err            string
	}{
		{name: "effective rules and overlays", dir: "testdata/overrides", passed: 4, failed: 2, want: []string{
			"ok   testdata/overrides/tuning_test.yaml:3: two restarts no longer fire",
			"ok   testdata/overrides/tuning_test.yaml:8: three restarts fire",
			"ok   testdata/overrides/tuning_test.yaml:14: batch jobs are an exception",
			"ok   testdata/overrides/overlay_test.yaml:8: two restarts fire with the overlay",
			"FAIL testdata/overrides/overlay_test.yaml:13: fails, and names the overrides in effect\n" +
				"    missing: t.restarts {fields.job=batch-x}\n" +
				"    note: rule t.restarts runs with overrides: correlate.params.restarts (override at testdata/overrides/overlay_test.yaml:6:26), " +
				"exceptions.batch (override at testdata/overrides/tuning.yaml:7:14)\n",
			`FAIL testdata/overrides/overlay_test.yaml:18: a disabled rule cannot be expected` + "\n" +
				`    expect: rule "t.noisy" is disabled (enabled: false, override at testdata/overrides/tuning.yaml:9:14)`,
		}, absent: []string{"no test expects it to fire"}},
		{name: "an override of an unknown rule in a test file", dir: "testdata/overrides_bad", failed: 1,
			err: `testdata/overrides_bad/bad_test.yaml:2:11: override: unknown rule "t.restart" (did you mean "t.restarts"?)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			passed, failed, err := RunDir(tt.dir, &out)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err %v, want %s", err, tt.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if passed != tt.passed || failed != tt.failed {
				t.Errorf("passed %d failed %d, want %d and %d\n%s", passed, failed, tt.passed, tt.failed, out.String())
			}
			for _, want := range tt.want {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
			for _, no := range tt.absent {
				if strings.Contains(out.String(), no) {
					t.Errorf("output has %q:\n%s", no, out.String())
				}
			}
		})
	}
}
