package app

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/internal/testkit"
)

// TestCheckpointFailureIsLoud: when the correlator state cannot be stored
// (here the state bucket refuses every message, as NATS refused the one
// value over 1 MB before checkpoints were incremental), every failed
// attempt counts in klaxon_state_checkpoint_failures_total, attempts back
// off instead of following every event, the episode is logged once,
// /readyz turns not ready once correlator.checkpoint_max_age has passed,
// events are still processed; and once the bucket takes writes again the
// checkpoint is stored, the end of the episode logged, and klaxon ready.
func TestCheckpointFailureIsLoud(t *testing.T) {
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules.d")
	if err := os.MkdirAll(rulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rulesDir, "r.yaml"), []byte(ruleFile("test.ck", "CK", "1h")), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "nomad.log")
	sinkPath := filepath.Join(dir, "incidents.jsonl")
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	natsAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	const maxAge = 1500 * time.Millisecond
	cfg, err := ParseConfig(filepath.Join(dir, "klaxon.yaml"), []byte(fmt.Sprintf(`
node: ck-node
http: {listen: %q}
nats: {listen: %q}
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
  update_interval: 1h
  snapshot_interval: 50ms
  checkpoint_max_age: %s
`, httpAddr, natsAddr, rulesDir, logPath, sinkPath, maxAge)))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	go func() { done <- Run(ctx, cfg, Options{Log: log, Ready: ready}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("Run did not return")
		}
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Run not ready")
	}
	waitFor := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ts := time.Now().Add(-time.Minute)
	write := func(n int, task string) {
		t.Helper()
		var b strings.Builder
		for range n {
			ts = ts.Add(time.Millisecond)
			fmt.Fprintf(&b, "%s [INFO]  client: CK event: task=%s\n", ts.UTC().Format("2006-01-02T15:04:05.000Z07:00"), task)
		}
		f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(b.String()); err != nil {
			t.Fatal(err)
		}
	}
	fired := func(task string) bool {
		for _, in := range readSink(t, sinkPath) {
			if in.Group["fields.task"] == task {
				return true
			}
		}
		return false
	}

	// Healthy: an incident, its checkpoint stored, ready.
	write(3, "a")
	waitFor("the incident of task a", 20*time.Second, func() bool { return fired("a") })
	waitFor("a stored checkpoint", 10*time.Second, func() bool {
		return scrapeValues(t, httpAddr)["klaxon_state_checkpoint_last_success_timestamp_seconds"] > 0
	})
	if code := readyz(t, httpAddr); code != http.StatusOK {
		t.Fatalf("/readyz %d before the failure", code)
	}
	if n := scrapeValues(t, httpAddr)["klaxon_state_checkpoint_failures_total"]; n != 0 {
		t.Fatalf("%v checkpoint failures before the failure", n)
	}

	// The bucket refuses every message.
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	setMaxMsgSize := func(n int32) {
		t.Helper()
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		st, err := js.Stream(sctx, "KV_"+natslayout.StateBucket)
		if err != nil {
			t.Fatal(err)
		}
		sc := st.CachedInfo().Config
		sc.MaxMsgSize = n
		if _, err := js.UpdateStream(sctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	setMaxMsgSize(16)
	broke := time.Now()
	// More events than a checkpoint's worth (1000): processed all the same.
	write(1500, "b")
	waitFor("the incident of task b (events are processed while checkpoints fail)", 20*time.Second, func() bool { return fired("b") })
	waitFor("failed checkpoints counted", 10*time.Second, func() bool { return scrapeValues(t, httpAddr)["klaxon_state_checkpoint_failures_total"] >= 3 })
	waitFor("/readyz not ready", 10*time.Second, func() bool { return readyz(t, httpAddr) == http.StatusServiceUnavailable })
	// The last success was at most a tick (50 ms) before the failure.
	if d := time.Since(broke); d < maxAge-100*time.Millisecond {
		t.Errorf("not ready %v after the failure began; the bound is %v", d, maxAge)
	}
	m := scrapeValues(t, httpAddr)
	if m["klaxon_ready"] != 0 {
		t.Errorf("klaxon_ready %v while not ready", m["klaxon_ready"])
	}
	if age := time.Since(time.Unix(0, int64(m["klaxon_state_checkpoint_last_success_timestamp_seconds"]*1e9))); age < maxAge {
		t.Errorf("last success %v ago while failing past the bound", age)
	}
	// Back-off: a tick every 50 ms and 1500 events would have made well
	// over a hundred attempts by now.
	failing := time.Since(broke)
	if n := m["klaxon_state_checkpoint_failures_total"]; n > 15 {
		t.Errorf("%v failed attempts in %v: no back-off", n, failing.Round(time.Millisecond))
	}
	if n := strings.Count(logs.String(), `level=ERROR msg="checkpoint not stored`); n != 1 {
		t.Errorf("the failure episode logged %d times; want once", n)
	}

	// The bucket takes writes again.
	setMaxMsgSize(-1)
	waitFor("/readyz ready again", 60*time.Second, func() bool { return readyz(t, httpAddr) == http.StatusOK })
	waitFor("the recovery logged", 10*time.Second, func() bool { return strings.Contains(logs.String(), "checkpoint stored again") })
	if n := strings.Count(logs.String(), `level=ERROR msg="checkpoint not stored`); n != 1 {
		t.Errorf("the failure episode logged %d times; want once", n)
	}
	after := scrapeValues(t, httpAddr)
	if time.Unix(0, int64(after["klaxon_state_checkpoint_last_success_timestamp_seconds"]*1e9)).Before(broke) {
		t.Error("last success not after the failure")
	}
	// The checkpoint covers the events processed meanwhile.
	write(3, "c")
	waitFor("the incident of task c", 20*time.Second, func() bool { return fired("c") })
	f1 := after["klaxon_state_checkpoint_failures_total"]
	waitFor("a checkpoint after task c", 10*time.Second, func() bool {
		return scrapeValues(t, httpAddr)["klaxon_state_checkpoint_last_success_timestamp_seconds"] > after["klaxon_state_checkpoint_last_success_timestamp_seconds"]
	})
	if f2 := scrapeValues(t, httpAddr)["klaxon_state_checkpoint_failures_total"]; f2 != f1 {
		t.Errorf("checkpoints still fail after the recovery (%v → %v)", f1, f2)
	}
}

// scrapeValues reads /metrics: unlabelled series by name.
func scrapeValues(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// readyz returns the status code of /readyz.
func readyz(t *testing.T, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
