package app

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/internal/testkit"
)

// freePort returns a free loopback host:port.
func freePort(t *testing.T) string { return fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)) }

// TestHTTPEndpoint: /metrics shows the pipeline's counters, /healthz and
// /readyz answer, and POST /-/reload needs the bearer token.
func TestHTTPEndpoint(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "nomad.log")
	rulesDir, _ := filepath.Abs("../../../rules.d")
	addr := freePort(t)
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000Z0700")
	lines := ""
	for i := 0; i < 3; i++ {
		lines += now + ` [WARN]  client.gc: garbage collection skipped because no terminal allocations: reason="number of allocations (61) is over the limit (50)"` + "\n"
	}
	lines += "\x00\x01 garbage before nothing\n"
	if err := os.WriteFile(logPath, []byte("\x00garbage\n"+lines), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(filepath.Join(dir, "k.yaml"), []byte(fmt.Sprintf(`
node: m1
rules_dir: %s
http: {listen: %q, token: s3cret-token}
sources:
  windows_facts: {enabled: false} # on by default on Windows: the counts are the log's events
  nomad_log:
    - paths: [%q]
      read_from: beginning
      poll_interval: 50ms
sinks: [{type: file, path: %s}]
correlator: {snapshot_interval: 50ms}
`, rulesDir, addr, logPath, filepath.Join(dir, "out.jsonl"))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, Options{Log: quiet(), Ready: ready}) }()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("not ready")
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	want := []string{
		`klaxon_source_events_total{source=`,
		`klaxon_events_published_total 3`,
		`klaxon_correlator_events_total 3`,
		`klaxon_rule_matches_total{rule="nomad.client.gc_pressure"} 3`,
		`klaxon_incidents_open{rule="nomad.client.gc_pressure",severity="warning"} 1`,
		`klaxon_incident_changes_total{status="firing"} 1`,
		`klaxon_sink_deliveries_total{sink="file"}`,
		`klaxon_nats_connected 1`,
		`klaxon_correlator_event_duration_seconds_count 3`,
		`klaxon_checkpoint_age_seconds`,
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := get("/metrics")
		missing := ""
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = w
				break
			}
		}
		if code == 200 && missing == "" {
			if !strings.Contains(body, `klaxon_source_parse_errors_total{source=`) {
				t.Error("no parse error counter")
			}
			if strings.Contains(body, "s3cret-token") {
				t.Error("token in metrics")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics missing %q:\n%s", missing, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("healthz %d", code)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("readyz %d", code)
	}
	post := func(token string) int {
		req, _ := http.NewRequest("POST", "http://"+addr+"/-/reload", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(""); code != http.StatusUnauthorized {
		t.Errorf("reload without token: %d", code)
	}
	if code := post("wrong"); code != http.StatusUnauthorized {
		t.Errorf("reload with a wrong token: %d", code)
	}
	if code := post("s3cret-token"); code != http.StatusOK {
		t.Errorf("reload with the token: %d", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestHTTPTokenRequiredBeyondLoopback(t *testing.T) {
	_, err := ParseConfig("k.yaml", []byte("http: {listen: \"0.0.0.0:9464\"}\n"))
	if err == nil || !strings.Contains(err.Error(), "http.token: required") {
		t.Fatalf("got %v", err)
	}
	if _, err := ParseConfig("k.yaml", []byte("http: {listen: \"0.0.0.0:9464\", token: x}\n")); err != nil {
		t.Fatal(err)
	}
}
