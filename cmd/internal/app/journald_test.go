package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/journald"
	"github.com/klaxon-dev/klaxon/ingest/journald/journaltest"
)

func TestJournaldConfig(t *testing.T) {
	if runtime.GOOS == "windows" {
		// A Linux source: Windows refuses its configuration, saying why.
		_, err := ParseConfig("k.yaml", []byte("sources:\n  journald:\n    - {}\n"))
		if err == nil || !strings.Contains(err.Error(), "sources.journald[0]: the systemd journal is not available on Windows") {
			t.Errorf("journald on Windows: %v", err)
		}
		return
	}
	cfg, err := ParseConfig("/etc/klaxon/klaxon.yaml", []byte(`
sources:
  journald:
    - {}
    - units: [nomad-client.service]
      directory: journal
      read_from: beginning
      node: edge-1
      journalctl: bin/journalctl
`))
	if err != nil {
		t.Fatal(err)
	}
	j := cfg.Sources.Journald
	if len(j) != 2 || !slices.Equal(j[0].Units, []string{"nomad.service"}) || j[0].ReadFrom != "end" || j[0].Journalctl != "journalctl" || j[0].MaxLineBytes != 1<<20 || j[0].Directory != "" {
		t.Errorf("defaults: %+v", j[0])
	}
	if j[1].Directory != "/etc/klaxon/journal" || j[1].Journalctl != "/etc/klaxon/bin/journalctl" || j[1].ReadFrom != "beginning" || j[1].Node != "edge-1" {
		t.Errorf("paths relative to the config file: %+v", j[1])
	}
	out, err := cfg.ShowYAML()
	if err != nil || !strings.Contains(string(out), "journald:") || !strings.Contains(string(out), "- nomad.service") {
		t.Errorf("config show: %v\n%s", err, out)
	}

	_, err = ParseConfig("k.yaml", []byte(`
sources:
  journald:
    - units: [nomad.service, ""]
      directory: /var/log/journal
      files: [a.journal, ""]
      read_from: middle
      max_line_bytes: -1
`))
	for _, want := range []string{"sources.journald[0].units[1]: empty", "sources.journald[0]: directory and files", "sources.journald[0].files[1]: empty", `sources.journald[0].read_from: "middle"`, "sources.journald[0].max_line_bytes"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v: want %q in it", err, want)
		}
	}
	if _, err := ParseConfig("k.yaml", []byte("sources:\n  journald:\n    - unit: nomad.service\n")); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("unknown key: %v", err)
	}

	// A missing journalctl is an error that names the source.
	cfg, err = ParseConfig("k.yaml", []byte("sources:\n  journald:\n    - journalctl: /nonexistent/journalctl\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = newIngestRole(cfg, "n", time.Now, newMetrics(), quiet())
	if err == nil || !strings.Contains(err.Error(), "sources.journald[0]: journald: /nonexistent/journalctl not found") {
		t.Errorf("missing journalctl: %v", err)
	}
}

// klaxon run with a journald source: entries appended to a journal
// directory become incidents of the node of their _HOSTNAME, and the
// checkpoint holds the cursor of the last entry once JetStream stored its
// event; a restart resumes after it.
func TestRunFollowsJournald(t *testing.T) {
	jctl, remote := journaltest.Tools(t)
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules.d")
	jdir := filepath.Join(dir, "journal")
	for _, d := range []string{rulesDir, jdir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rulesDir, "r.yaml"), []byte(ruleFile("test.journald", "JOURNAL", "1h")), 0o644); err != nil {
		t.Fatal(err)
	}
	sinkPath := filepath.Join(dir, "incidents.jsonl")
	cfg, err := ParseConfig(filepath.Join(dir, "klaxon.yaml"), []byte(fmt.Sprintf(`
node: fallback-node
http: {listen: "off"}
rules_dir: %s
sources:
  journald:
    - directory: %s
      read_from: beginning
      journalctl: %s
sinks:
  - type: file
    name: jsonl
    path: %s
correlator:
  update_interval: 1ms
  snapshot_interval: 50ms
  lateness: 100ms
`, rulesDir, jdir, jctl, sinkPath)))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(jdir, "nomad.journal")
	ts := time.Now().Add(-time.Minute)
	appendLines := func(tasks ...string) {
		t.Helper()
		var lines []string
		for _, task := range tasks {
			ts = ts.Add(10 * time.Millisecond)
			lines = append(lines, fmt.Sprintf("%s [INFO]  client: JOURNAL event: task=%s", ts.UTC().Format("2006-01-02T15:04:05.000Z07:00"), task))
		}
		journaltest.Write(t, remote, file, journaltest.Export(lines, journaltest.Unit{Hostname: "Journal-Node.example.internal", Prefix: "    "}))
	}
	var logs syncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	start := func() (stop func()) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan struct{})
		done := make(chan error, 1)
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		go func() { done <- Run(ctx, cfg, Options{Log: log, Ready: ready}) }()
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
	changes := func(task string) []correlate.Incident {
		var out []correlate.Incident
		for _, in := range readSink(t, sinkPath) {
			if in.Group["fields.task"] == task {
				out = append(out, in)
			}
		}
		return out
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	checkpointCursor := func() string {
		t.Helper()
		cps, err := ingest.OpenCheckpoints(filepath.Join(cfg.DataDir, "checkpoints.json"))
		if err != nil {
			t.Fatal(err)
		}
		var cp struct {
			Cursor string `json:"cursor"`
		}
		b, _ := os.ReadFile(filepath.Join(cfg.DataDir, "checkpoints.json"))
		for _, k := range []string{"journald:dir=" + jdir + ":nomad.service"} {
			if ok, err := cps.Get(k, &cp); err != nil || !ok {
				t.Fatalf("checkpoint %s: %v %v in %s", k, ok, err, b)
			}
		}
		return cp.Cursor
	}

	appendLines("a", "a")
	stop := start()
	appendLines("a")
	waitFor("the incident of task a", func() bool { return len(changes("a")) == 1 })
	in := changes("a")[0]
	if in.Node != "journal-node" || in.Count != 3 || in.Status != correlate.StatusFiring {
		t.Errorf("incident %s node %q count %d; want firing on journal-node (the canonical _HOSTNAME) with count 3", in.Status, in.Node, in.Count)
	}
	stop()
	cursors := journaltest.Cursors(t, jctl, file)
	if c := checkpointCursor(); c != cursors[len(cursors)-1] {
		t.Fatalf("checkpoint after the stop %q, want the last entry's %q", c, cursors[len(cursors)-1])
	}
	if id := in.Evidence[len(in.Evidence)-1].ID; id != journald.CursorID(cursors[2]) {
		t.Errorf("evidence ID %s, want the cursor's %s", id, journald.CursorID(cursors[2]))
	}

	// Restart: the entries appended meanwhile are read, and count once.
	appendLines("a", "b", "b", "b")
	stop = start()
	defer func() { stop() }()
	waitFor("the incident of task b", func() bool { return len(changes("b")) == 1 })
	waitFor("the update of task a", func() bool { return len(changes("a")) == 2 })
	if a := changes("a"); a[1].Count != 4 {
		t.Errorf("task a after the restart: count %d, want 4", a[1].Count)
	}
}
