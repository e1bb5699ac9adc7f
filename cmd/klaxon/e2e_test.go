package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/internal/testkit"
	"github.com/klaxon-dev/klaxon/internal/winetest"
)

// buildKlaxon builds the binary once per test binary run.
func buildKlaxon(t *testing.T) string {
	t.Helper()
	winetest.Skip(t, "builds klaxon with the go command (none for Windows here) and stops it with SIGTERM, which a Windows process cannot be sent")
	bin := filepath.Join(t.TempDir(), "klaxon")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build: %v", err)
	}
	return bin
}

// readIncidents reads the JSONL sink file.
func readIncidents(t *testing.T, path string) []correlate.Incident {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []correlate.Incident
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var in correlate.Incident
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			t.Fatalf("%s: bad line %q: %v", path, sc.Text(), err)
		}
		out = append(out, in)
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, d, what, cond)
}

func appendLines(t *testing.T, path string, lines []string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.WriteString(f, strings.Join(lines, "\n")+"\n"); err != nil {
		t.Fatal(err)
	}
}

const hclogTS = "2006-01-02T15:04:05.000Z0700"

func gcLine(ts time.Time, n int) string {
	return fmt.Sprintf(`%s [WARN]  client.gc: garbage collection skipped because no terminal allocations: reason="number of allocations (%d) is over the limit (50)"`, ts.UTC().Format(hclogTS), n)
}

func noiseLine(ts time.Time, i int) string {
	return fmt.Sprintf(`%s [DEBUG] client: updated allocations: index=%d total=76 pulled=0 filtered=76`, ts.UTC().Format(hclogTS), i)
}

// TestEndToEndKillRestart runs the real binary on the embedded NATS: a
// tailed log gives a firing incident in the JSONL sink within 2 s; the
// process is SIGKILLed mid-stream and restarted; afterwards every line was
// processed exactly once and no incident change is duplicated.
func TestEndToEndKillRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary")
	}
	bin := buildKlaxon(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "nomad.log")
	sinkPath := filepath.Join(dir, "incidents.jsonl")
	rulesDir, err := filepath.Abs("../../rules.d")
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`
node: e2e-node
http: {listen: "127.0.0.1:0"}
data_dir: %s
rules_dir: %s
sources:
  nomad_log:
    - paths: [%q]
      read_from: beginning
      poll_interval: 50ms
sinks:
  - type: file
    name: jsonl
    path: %s
correlator:
  update_interval: 1ms
  snapshot_interval: 100ms
`, filepath.Join(dir, "data"), rulesDir, logPath, sinkPath)
	cfgPath := filepath.Join(dir, "klaxon.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	appendLines(t, logPath, []string{noiseLine(time.Now(), 0)})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		logs, _ := filepath.Glob(filepath.Join(dir, "klaxon-*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("--- %s:\n%s", filepath.Base(l), b)
		}
	})

	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "run", "--config", cfgPath, "--log-level", "debug")
		stderr, err := os.Create(filepath.Join(dir, fmt.Sprintf("klaxon-%d.log", time.Now().UnixNano())))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = stderr
		cmd.Stdout = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
			stderr.Close()
		})
		return cmd
	}
	gcIncidents := func() []correlate.Incident {
		var out []correlate.Incident
		for _, in := range readIncidents(t, sinkPath) {
			if in.Rule == "nomad.client.gc_pressure" {
				out = append(out, in)
			}
		}
		return out
	}

	proc := start()
	// Two matching lines: the rule fires. Measure from the append.
	appended := time.Now()
	appendLines(t, logPath, []string{gcLine(time.Now(), 51), gcLine(time.Now(), 52)})
	waitFor(t, 10*time.Second, "a firing incident", func() bool { return len(gcIncidents()) > 0 })
	latency := time.Since(appended)
	t.Logf("append → firing incident in the JSONL sink: %v", latency)
	if latency > 2*time.Second {
		t.Errorf("incident took %v, want within 2s", latency)
	}
	matching := 2
	total := 3

	// Mid-stream: write a burst, kill -9 while it is being processed.
	var burst []string
	for i := 0; i < 3000; i++ {
		if i%10 == 0 {
			burst = append(burst, gcLine(time.Now(), 60+i))
			matching++
		} else {
			burst = append(burst, noiseLine(time.Now(), i))
		}
		total++
	}
	appendLines(t, logPath, burst[:1500])
	waitFor(t, 10*time.Second, "the burst to be partly processed", func() bool {
		ins := gcIncidents()
		return len(ins) > 0 && ins[len(ins)-1].Count > 10
	})
	if err := proc.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = proc.Process.Wait()
	before := gcIncidents()
	t.Logf("killed with %d gc changes in the sink, last count %d", len(before), before[len(before)-1].Count)
	appendLines(t, logPath, burst[1500:])

	proc = start()
	waitFor(t, 20*time.Second, "all matching lines counted", func() bool {
		ins := gcIncidents()
		return len(ins) > 0 && ins[len(ins)-1].Count >= matching
	})
	// Stop gracefully and inspect what is stored.
	if err := proc.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := proc.Process.Wait(); done <- err }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("klaxon did not stop on SIGTERM")
	}

	all := readIncidents(t, sinkPath)
	seen := map[string]bool{}
	firing := map[string]int{}
	for _, in := range all {
		if seen[in.ChangeID()] {
			t.Errorf("duplicated incident change %s (status %s count %d)", in.ChangeID(), in.Status, in.Count)
		}
		seen[in.ChangeID()] = true
		if in.Status == correlate.StatusFiring {
			firing[in.ID]++
		}
	}
	for id, n := range firing {
		if n != 1 {
			t.Errorf("incident %s fired %d times", id, n)
		}
	}
	gc := gcIncidents()
	last := gc[len(gc)-1]
	if last.Count != matching {
		t.Errorf("gc incident count %d, want exactly %d matching lines (each processed once)", last.Count, matching)
	}
	if last.Node != "e2e-node" {
		t.Errorf("node %q", last.Node)
	}
	for i := 1; i < len(gc); i++ {
		if gc[i].Count < gc[i-1].Count {
			t.Errorf("count went backwards: %d after %d", gc[i].Count, gc[i-1].Count)
		}
	}

	// Every line is in KLAXON_EVENTS exactly once.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.OpenEmbedded(ctx, filepath.Join(dir, "data"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	st, err := b.JS.Stream(ctx, natslayout.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if int(info.State.Msgs) != total {
		t.Errorf("KLAXON_EVENTS holds %d events, want %d lines", info.State.Msgs, total)
	}
	cons, err := st.Consumer(ctx, "correlator")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ci.AckFloor.Stream != info.State.LastSeq {
		t.Errorf("correlator acked up to %d of %d", ci.AckFloor.Stream, info.State.LastSeq)
	}
}

// TestEndToEndReload: a broken rule file leaves the running rules in
// place and the log says why (file:line:col), on SIGHUP and on file change;
// a fixed file is picked up.
func TestEndToEndReload(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary")
	}
	bin := buildKlaxon(t)
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules.d")
	if err := os.MkdirAll(rulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile("../../rules.d/nomad_client.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rulesDir, "nomad_client.yaml"), good, 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "nomad.log")
	sinkPath := filepath.Join(dir, "incidents.jsonl")
	appendLines(t, logPath, []string{noiseLine(time.Now(), 0)})
	cfgPath := filepath.Join(dir, "klaxon.yaml")
	cfg := fmt.Sprintf("node: reload-node\nhttp: {listen: \"127.0.0.1:0\"}\ndata_dir: %s\nrules_dir: %s\nsources:\n  nomad_log:\n    - paths: [%q]\n      read_from: beginning\n      poll_interval: 50ms\nsinks:\n  - type: file\n    path: %s\n",
		filepath.Join(dir, "data"), rulesDir, logPath, sinkPath)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	stderrPath := filepath.Join(dir, "stderr.log")
	stderr, _ := os.Create(stderrPath)
	defer stderr.Close()
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Stderr, cmd.Stdout = stderr, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() }()
	logText := func() string { b, _ := os.ReadFile(stderrPath); return string(b) }
	waitFor(t, 10*time.Second, "startup", func() bool { return strings.Contains(logText(), "following file") })

	// A broken file: the watcher reports it with its place, the rules stay.
	broken := filepath.Join(rulesDir, "broken.yaml")
	if err := os.WriteFile(broken, []byte("rules:\n  - id: x\n    severity: loud\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the reload error on file change", func() bool {
		return strings.Contains(logText(), "broken.yaml:3:15")
	})
	// SIGHUP reports it again.
	before := strings.Count(logText(), "rules not reloaded")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the reload error on SIGHUP", func() bool {
		return strings.Count(logText(), "rules not reloaded") > before
	})
	// The running rules still fire.
	appendLines(t, logPath, []string{gcLine(time.Now(), 51), gcLine(time.Now(), 52)})
	waitFor(t, 10*time.Second, "an incident from the rules kept in place", func() bool {
		b, _ := os.ReadFile(sinkPath)
		return strings.Contains(string(b), "nomad.client.gc_pressure")
	})
	// Fixing the file reloads.
	if err := os.Remove(broken); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the reload after the fix", func() bool {
		return strings.Contains(logText(), "rules reloaded")
	})
}
