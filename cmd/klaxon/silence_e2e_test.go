package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSilenceEndToEnd runs the real binary: with a silence on the crash
// loop rule, klaxon writes the other incidents of a log to its JSONL sink
// but not the crash loop; `klaxon silence expire` (through the running
// klaxon's HTTP endpoint, as its embedded store is locked) sends it.
func TestSilenceEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildKlaxon(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "nomad.log")
	sinkPath := filepath.Join(dir, "incidents.jsonl")
	rulesDir, err := filepath.Abs("../../rules.d")
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cfgPath := filepath.Join(dir, "klaxon.yaml")
	cfg := fmt.Sprintf(`
node: silent-node
http: {listen: "127.0.0.1:%d", token: "s3cret"}
data_dir: %s
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
`, port, filepath.Join(dir, "data"), rulesDir, logPath, sinkPath)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	appendLines(t, logPath, []string{noiseLine(time.Now(), 0), noiseLine(time.Now(), 1), noiseLine(time.Now(), 2)})
	// The silence is added while klaxon is stopped (the store in data_dir).
	out, err := exec.Command(bin, "silence", "add", "--config", cfgPath, "--duration", "1h", "--comment", "deploy", `rule=~nomad\.task\..*`).CombinedOutput()
	if err != nil {
		t.Fatalf("silence add: %v: %s", err, out)
	}
	id := strings.TrimSpace(string(out))

	cmd := exec.Command(bin, "run", "--config", cfgPath, "--log-level", "debug")
	logf, _ := os.Create(filepath.Join(dir, "klaxon.log"))
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "klaxon.log"))
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("klaxon log:\n%s", b)
		}
	}()
	rules := func() map[string]int {
		m := map[string]int{}
		for _, in := range readIncidents(t, sinkPath) {
			m[in.Rule]++
		}
		return m
	}
	// A crash loop (silenced) and GC pressure (not silenced).
	now := time.Now().UTC()
	var lines []string
	for i := range 3 {
		ts := now.Add(time.Duration(i) * time.Second).Format(hclogTS)
		lines = append(lines, ts+` [INFO]  client.alloc_runner.task_runner: restarting task: alloc_id=aaaa task=app reason="Restart within policy" delay=15s`)
	}
	lines = append(lines,
		now.Add(4*time.Second).Format(hclogTS)+` [INFO]  client.alloc_runner.task_runner: not restarting task: alloc_id=aaaa task=app reason="Exceeded allowed attempts 2 in interval 1m0s and mode is \"fail\""`,
		gcLine(now.Add(5*time.Second), 51), gcLine(now.Add(6*time.Second), 52))
	appendLines(t, logPath, lines)
	waitFor(t, 20*time.Second, "the GC pressure incident", func() bool { return rules()["nomad.client.gc_pressure"] > 0 })
	logText := func() string { b, _ := os.ReadFile(filepath.Join(dir, "klaxon.log")); return string(b) }
	waitFor(t, 20*time.Second, "the crash loop to be silenced", func() bool { return strings.Contains(logText(), "change silenced") })
	if n := rules()["nomad.task.crash_loop"]; n != 0 {
		t.Fatalf("silenced crash loop written %d times", n)
	}
	out, err = exec.Command(bin, "silence", "expire", "--config", cfgPath, id).CombinedOutput()
	if err != nil || !strings.Contains(string(out), id+" expired") {
		t.Fatalf("silence expire: %v: %s", err, out)
	}
	waitFor(t, 20*time.Second, "the crash loop after the silence", func() bool { return rules()["nomad.task.crash_loop"] == 1 })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("klaxon did not stop")
	}
}
