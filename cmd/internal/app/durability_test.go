package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/testkit"
)

// ruleFile is a rule firing at three matches of msg prefix within window, per node and task.
func ruleFile(id, prefix, window string) string {
	return fmt.Sprintf(`rules:
  - id: %s
    title: "%s on {{ .node }}"
    severity: warning
    runbook: "Look at the task."
    match:
      m: msg startsWith %q
    correlate:
      by: [node, fields.task]
      window: %s
      when: count("m") >= 3
    resolve:
      after: 2h
`, id, id, prefix, window)
}

// TestRuleEditKeepsUnchangedRules: the correlator keeps the windows and
// incidents of rules whose definition did not change when the rules are
// reloaded in place and when klaxon restarts with edited rules, and starts
// the changed rule afresh.
func TestRuleEditKeepsUnchangedRules(t *testing.T) {
	for _, restart := range []bool{false, true} {
		name := "reload"
		if restart {
			name = "restart"
		}
		t.Run(name, func(t *testing.T) { testRuleEdit(t, restart) })
	}
}

func testRuleEdit(t *testing.T, restart bool) {
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules.d")
	if err := os.MkdirAll(rulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(rulesDir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("keep.yaml", ruleFile("test.keep", "KEEP", "1h"))
	write("change.yaml", ruleFile("test.change", "CHANGE", "1h"))
	logPath := filepath.Join(dir, "nomad.log")
	sinkPath := filepath.Join(dir, "incidents.jsonl")
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(filepath.Join(dir, "klaxon.yaml"), []byte(fmt.Sprintf(`
node: dur-node
http: {listen: "off"}
rules_dir: %s
sources:
  nomad_log:
    - paths: [%q]
      read_from: beginning
      poll_interval: 20ms
sinks:
  - type: file
    name: jsonl
    path: %s
correlator:
  update_interval: 1ms
  snapshot_interval: 50ms
`, rulesDir, logPath, sinkPath)))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	reload := make(chan struct{}, 1)
	start := func() (stop func()) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan struct{})
		done := make(chan error, 1)
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		go func() { done <- Run(ctx, cfg, Options{Log: log, Reload: reload, Ready: ready}) }()
		select {
		case <-ready:
		case err := <-done:
			t.Fatalf("Run: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatal("Run not ready")
		}
		return func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("Run did not return")
			}
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	ts := time.Now().Add(-time.Minute)
	lines := func(specs ...string) {
		t.Helper()
		var out []string
		for _, s := range specs {
			prefix, task, _ := strings.Cut(s, "/")
			ts = ts.Add(10 * time.Millisecond)
			out = append(out, fmt.Sprintf("%s [INFO]  client: %s event: task=%s", ts.UTC().Format("2006-01-02T15:04:05.000Z07:00"), prefix, task))
		}
		f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(strings.Join(out, "\n") + "\n"); err != nil {
			t.Fatal(err)
		}
	}
	changes := func(rule, task string) []correlate.Incident {
		var out []correlate.Incident
		for _, in := range readSink(t, sinkPath) {
			if in.Rule == rule && in.Group["fields.task"] == task {
				out = append(out, in)
			}
		}
		return out
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		testkit.WaitFor(t, 20*time.Second, what, cond)
	}

	stop := start()
	// Task b of both rules gets two matches (a window, no incident); task a
	// gets three (an incident). The b lines come first, so once both a
	// incidents fired every line was processed.
	lines("KEEP/b", "KEEP/b", "CHANGE/b", "CHANGE/b", "KEEP/a", "KEEP/a", "KEEP/a", "CHANGE/a", "CHANGE/a", "CHANGE/a")
	waitFor("both a incidents", func() bool { return len(changes("test.keep", "a")) == 1 && len(changes("test.change", "a")) == 1 })
	keepFiring := changes("test.keep", "a")[0]

	// Edit one rule (its window), in place or across a restart.
	write("change.yaml", ruleFile("test.change", "CHANGE", "2h"))
	if restart {
		stop()
		stop = start()
	} else {
		before := strings.Count(logs.String(), "rules reloaded")
		reload <- struct{}{}
		waitFor("the reload", func() bool { return strings.Count(logs.String(), "rules reloaded") > before })
	}
	defer func() { stop() }()

	// One more match for every group; then three matches of a new task of
	// the changed rule, whose incident shows that the correlator processed
	// everything before it. The sink delivers up to four incidents at once,
	// so its changes can reach the file in another order: wait for every
	// change the edit should bring, not for the last one published.
	lines("KEEP/a", "KEEP/b", "CHANGE/a", "CHANGE/b", "CHANGE/c", "CHANGE/c", "CHANGE/c")
	waitFor("every change the edit brings (c fires, keep/a updated, keep/b fires, change/a resolved)", func() bool {
		return len(changes("test.change", "c")) >= 1 && len(changes("test.keep", "a")) >= 2 &&
			len(changes("test.keep", "b")) >= 1 && len(changes("test.change", "a")) >= 2
	})
	if c := changes("test.change", "c"); len(c) != 1 || c[0].Status != correlate.StatusFiring {
		t.Fatalf("test.change task c: %+v; want one firing change", summary(c))
	}

	// Unchanged rule: the incident goes on, the window of b was kept.
	ka := changes("test.keep", "a")
	if last := ka[len(ka)-1]; len(ka) != 2 || last.Status != correlate.StatusUpdated || last.Count != 4 || !last.StartedAt.Equal(keepFiring.StartedAt) {
		t.Errorf("test.keep task a: %d changes, last %s count %d started %v; want the firing incident updated to count 4 (started %v)",
			len(ka), last.Status, last.Count, last.StartedAt, keepFiring.StartedAt)
	}
	if kb := changes("test.keep", "b"); len(kb) != 1 || kb[0].Status != correlate.StatusFiring || kb[0].Count != 3 {
		t.Errorf("test.keep task b: %+v; want one firing change with count 3 (two matches kept from before the edit)", summary(kb))
	}
	// Changed rule: nothing is kept, and its open incident is resolved
	// rather than left open at the sinks.
	if ca := changes("test.change", "a"); len(ca) != 2 || ca[1].Status != correlate.StatusResolved || !strings.Contains(ca[1].Summary, "rule was changed") {
		t.Errorf("test.change task a: %+v; want the firing from before the edit, then its resolution (its state starts afresh)", summary(ca))
	}
	if cb := changes("test.change", "b"); len(cb) != 0 {
		t.Errorf("test.change task b fired (%+v): its window was not dropped", summary(cb))
	}
}

func summary(ins []correlate.Incident) []string {
	var out []string
	for _, in := range ins {
		out = append(out, fmt.Sprintf("%s seq %d count %d", in.Status, in.Seq, in.Count))
	}
	return out
}

// readSink reads the incident changes of a JSONL file sink.
func readSink(t *testing.T, path string) []correlate.Incident {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []correlate.Incident
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		var in correlate.Incident
		if err := json.Unmarshal([]byte(l), &in); err != nil {
			continue // a line being written
		}
		out = append(out, in)
	}
	return out
}
