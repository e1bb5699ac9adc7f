package app

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestActionsConfig: the action is off unless configured, a dry run by
// default, and its settings are checked; the Windows facts source is on by
// default only on Windows.
func TestActionsConfig(t *testing.T) {
	dir := t.TempDir()
	cfg, err := ParseConfig(filepath.Join(dir, "k.yaml"), []byte("node: n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Actions.NodeEligibility != nil {
		t.Errorf("action on without configuration: %+v", cfg.Actions.NodeEligibility)
	}
	if w := cfg.Sources.WindowsFacts; w == nil || *w.Enabled != (runtime.GOOS == "windows") || w.Interval <= 0 {
		t.Errorf("windows_facts defaults %+v", w)
	}
	cfg, err = ParseConfig(filepath.Join(dir, "k.yaml"), []byte("node: n\nactions:\n  nomad_node_eligibility: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.Actions.NodeEligibility
	if n == nil || !*n.DryRun || !*n.Undo || n.MaxPerHour != 1 || *n.KeepEligible != 1 {
		t.Fatalf("defaults %+v", n)
	}
	if ec := n.ExecutorConfig(1); ec.KeepEligible != 1 || !*ec.DryRun {
		t.Errorf("executor config %+v", ec)
	}
	zero := 0
	n.KeepEligible = &zero
	if ec := n.ExecutorConfig(1); ec.KeepEligible >= 0 {
		t.Errorf("keep_eligible 0 is not 'no guard': %+v", ec)
	}
	_, err = ParseConfig(filepath.Join(dir, "k.yaml"), []byte("node: n\nactions:\n  nomad_node_eligibility: {max_per_hour: -1, keep_eligible: -2}\n"))
	for _, want := range []string{"actions.nomad_node_eligibility.max_per_hour", "actions.nomad_node_eligibility.keep_eligible"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want %s", err, want)
		}
	}
	_, err = ParseConfig(filepath.Join(dir, "k.yaml"), []byte("node: n\nsources:\n  windows_facts: {enabled: true}\n"))
	if (err == nil) != (runtime.GOOS == "windows") {
		t.Errorf("windows_facts enabled on %s: %v", runtime.GOOS, err)
	}
}
