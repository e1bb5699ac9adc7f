package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/internal/externaltest"
	"github.com/klaxon-dev/klaxon/internal/testkit"
	"github.com/klaxon-dev/klaxon/sinks"
)

// syncBuffer is a log destination shared by goroutines.
type syncBuffer = testkit.SyncBuffer

// runApp runs Run in the background; stop cancels it and waits.
func runApp(t *testing.T, cfg *Config, opts Options) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, opts) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, d, what, cond)
}

const heapLines = `%[1]s [WARN]  client.driver_mgr: failed to reattach to plugin, starting new instance: driver=app_pool error="Reattachment process not found"
%[1]s [ERROR] client.driver_mgr: dispensing initial plugin failed: driver=app_pool error="failed to start plugin: failed to launch plugin: pipe: Insufficient system resources exist to complete the requested service."
`

// TestRunPagingSinksKeepSecrets runs the real pipeline with PagerDuty,
// Slack and webhook sinks configured with secrets, against a server that
// answers 400 and echoes what it received (the worst a paging service, or
// a proxy in front of the Nomad agent, can do): each change lands in its
// sink's dead letters, and no secret shows in the debug log or in the dead
// letters' errors.
func TestRunPagingSinksKeepSecrets(t *testing.T) {
	var posts atomic.Int64
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, "rejected %s %s headers=%v body=%s", r.Method, r.URL, r.Header, body)
	}))
	defer echo.Close()

	dir := t.TempDir()
	logPath := filepath.Join(dir, "nomad.log")
	if err := os.WriteFile(logPath, []byte(fmt.Sprintf(heapLines, time.Now().UTC().Format("2006-01-02T15:04:05.000Z0700"))), 0o644); err != nil {
		t.Fatal(err)
	}
	rulesDir, _ := filepath.Abs("../../../rules.d")
	t.Setenv("KLAXON_TEST_PD_KEY", "PDROUTINGKEY0123456789abcdef")
	cfg, err := ParseConfig(filepath.Join(dir, "klaxon.yaml"), []byte(fmt.Sprintf(`
rules_dir: %s
nomad: {address: %s, token: NOMADTOKEN-33}
nats: {listen: "127.0.0.1:0", token: NATSTOKEN-55}
http: {listen: "127.0.0.1:0", token: HTTPTOKEN-11}
sources:
  nomad_log:
    - paths: [%q]
      read_from: beginning
      poll_interval: 50ms
sinks:
  - type: pagerduty
    url: %[2]s/v2/enqueue
    routing_key_env: KLAXON_TEST_PD_KEY
  - type: slack
    webhook_url: %[2]s/services/T000/B000/SLACKTOKENxyz
  - type: webhook
    url: %[2]s/in/WEBHOOKPATHTOKEN-88?token=WEBHOOKPATHTOKEN-88
    signing_key: HMACSIGNINGKEY-42
    headers: {Authorization: "Bearer HEADERBEARER-77"}
correlator: {snapshot_interval: 100ms}
`, rulesDir, echo.URL, logPath)))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	stop := runApp(t, cfg, Options{Log: log, Stdout: io.Discard})
	waitUntil(t, 20*time.Second, "a dead letter from each sink", func() bool {
		dead := map[string]bool{}
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "sent to dead letters") {
				for _, s := range []string{"pagerduty", "slack", "webhook"} {
					dead[s] = dead[s] || strings.Contains(line, "sink="+s+" ")
				}
			}
		}
		return len(dead) == 3 && dead["pagerduty"] && dead["slack"] && dead["webhook"]
	})
	stop()
	if posts.Load() < 3 {
		t.Errorf("%d posts", posts.Load())
	}
	assertNoSecrets(t, "the log", logs.String())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.OpenEmbedded(ctx, cfg.DataDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	for _, s := range []string{"pagerduty", "slack", "webhook"} {
		dls, err := sinks.ListDLQ(ctx, b.JS, s, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(dls) == 0 {
			t.Errorf("no dead letter for %s", s)
			continue
		}
		for _, dl := range dls {
			if !strings.Contains(dl.Error, "400") || dl.Rule != "nomad.windows.desktop_heap_exhaustion" || dl.Attempts != 1 {
				t.Errorf("%s: dead letter %+v", s, dl)
			}
			assertNoSecrets(t, s+"'s dead letter", dl.Error)
		}
	}
}

// TestRunAlertmanager is the done-when of issue 6: the real pipeline
// replays the crashloop capture into Debian's prometheus-alertmanager; the
// alerts show in its API with alertname = the rule, node and severity,
// and once the correlator's clock passes resolve.after they are resolved.
func TestRunAlertmanager(t *testing.T) {
	capture := needShared(t, "nomad/captures/crashloop-gc-checkrestart/nomad.log")
	am := externaltest.StartAlertmanager(t, "5m")
	dir := t.TempDir()
	src, err := os.ReadFile(capture)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "nomad.log")
	if err := os.WriteFile(logPath, src, 0o644); err != nil {
		t.Fatal(err)
	}
	// The correlator's clock starts at the end of the capture (so that
	// nothing resolves yet) and is moved past resolve.after later.
	var clock atomic.Int64
	clock.Store(time.Date(2026, 11, 22, 1, 57, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	rulesDir, _ := filepath.Abs("../../../rules.d")
	cfg, err := ParseConfig(filepath.Join(dir, "klaxon.yaml"), []byte(fmt.Sprintf(`
node: fallback
rules_dir: %s
http: {listen: "off"}
sources:
  nomad_log:
    - paths: [%q]
      read_from: beginning
      poll_interval: 50ms
sinks:
  - type: alertmanager
    name: am
    urls: [%s]
    generator_url: https://klaxon.example/incidents/
    resend_interval: 2s
    min_severity: warning
correlator: {snapshot_interval: 100ms}
`, rulesDir, logPath, am)))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	stop := runApp(t, cfg, Options{Log: slog.New(slog.NewTextHandler(&logs, nil)), Stdout: io.Discard, Now: now})
	defer func() {
		if t.Failed() {
			t.Logf("klaxon log:\n%s", logs.String())
		}
	}()

	want := map[string]map[string]string{
		"nomad.client.gc_pressure":      {"node": "vm", "severity": "warning"},
		"nomad.task.crash_loop":         {"node": "vm", "severity": "error", "fields_task": "app"},
		"nomad.task.unhealthy_restarts": {"node": "vm", "severity": "warning", "fields_task": "srv"},
	}
	var alerts map[string]externaltest.Alert
	waitUntil(t, 25*time.Second, "the capture's alerts in Alertmanager", func() bool {
		alerts = activeAMAlerts(t, am)
		for rule := range want {
			if _, ok := alerts[rule]; !ok {
				return false
			}
		}
		return true
	})
	for rule, labels := range want {
		a := alerts[rule]
		for k, v := range labels {
			if a.Labels[k] != v {
				t.Errorf("%s: label %s = %q, want %q (labels %v)", rule, k, a.Labels[k], v, a.Labels)
			}
		}
		if a.Labels["incident_id"] == "" || a.Annotations["title"] == "" || a.Annotations["runbook"] == "" ||
			a.GeneratorURL != "https://klaxon.example/incidents/"+a.Labels["incident_id"] {
			t.Errorf("%s: alert %+v", rule, a)
		}
		if a.StartsAt.Before(time.Date(2026, 11, 22, 1, 57, 0, 0, time.UTC)) || a.StartsAt.After(time.Date(2026, 11, 22, 2, 2, 0, 0, time.UTC)) {
			t.Errorf("%s: startsAt %s is not the capture's time", rule, a.StartsAt)
		}
	}

	// Past resolve.after (30m): every alert resolves.
	clock.Add(int64(3 * time.Hour))
	waitUntil(t, 20*time.Second, "the alerts resolved", func() bool {
		active := activeAMAlerts(t, am)
		for rule := range want {
			if _, ok := active[rule]; ok {
				return false
			}
		}
		return true
	})
	stop()
}

// activeAMAlerts returns Alertmanager's active alerts by alertname.
func activeAMAlerts(t *testing.T, base string) map[string]externaltest.Alert {
	t.Helper()
	out := map[string]externaltest.Alert{}
	for _, a := range externaltest.Alerts(t, base) {
		if a.Active() {
			out[a.Labels["alertname"]] = a
		}
	}
	return out
}
