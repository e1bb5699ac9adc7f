package app

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/nomadapi"
	"github.com/klaxon-dev/klaxon/internal/winetest"
)

// externalNATS starts Debian's nats-server as a separate process with
// JetStream on a loopback port and returns its URL.
func externalNATS(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("KLAXON_NATS_SERVER")
	if bin == "" {
		winetest.SkipLinuxProgram(t, "nats-server", "nats-server")
		var err error
		if bin, err = exec.LookPath("nats-server"); err != nil {
			bin = "/usr/sbin/nats-server"
		}
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("KLAXON_REQUIRE_EXTERNAL") == "1" {
			t.Fatalf("nats-server required (KLAXON_REQUIRE_EXTERNAL=1): %v", err)
		}
		t.Skipf("nats-server not installed (apt-get install nats-server): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "-js", "-sd", t.TempDir(), "-a", "127.0.0.1", "-p", fmt.Sprint(port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc, err := nats.Connect(url)
		if err == nil {
			t.Logf("external nats-server %s at %s", nc.ConnectedServerVersion(), url)
			nc.Close()
			return url
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRunOnExternalNATS runs the whole pipeline (tailer → publisher →
// correlator → file sink) against nats-server started as its own process.
func TestRunOnExternalNATS(t *testing.T) {
	url := externalNATS(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "nomad.log")
	sinkPath := filepath.Join(dir, "incidents.jsonl")
	rulesDir, _ := filepath.Abs("../../../rules.d")
	cfg, err := ParseConfig(filepath.Join(dir, "klaxon.yaml"), []byte(fmt.Sprintf(`
node: ext-node
http: {listen: "127.0.0.1:0"}
rules_dir: %s
nats:
  url: %s
sources:
  nomad_log:
    - paths: [%q]
      read_from: beginning
      poll_interval: 50ms
sinks:
  - type: file
    path: %s
correlator:
  snapshot_interval: 100ms
`, rulesDir, url, logPath, sinkPath)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000Z0700")
	lines := fmt.Sprintf("%s [WARN]  client.driver_mgr: failed to reattach to plugin, starting new instance: driver=app_pool error=\"Reattachment process not found\"\n"+
		"%s [ERROR] client.driver_mgr: dispensing initial plugin failed: driver=app_pool error=\"failed to start plugin: failed to launch plugin: pipe: Insufficient system resources exist to complete the requested service.\"\n", now, now)
	if err := os.WriteFile(logPath, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, Options{Log: quiet()}) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(sinkPath)
		if strings.Contains(string(b), `"rule":"nomad.windows.desktop_heap_exhaustion"`) {
			if !strings.Contains(string(b), `"node":"ext-node"`) {
				t.Errorf("incident without the configured node: %s", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no incident in the sink; got %q", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	// The streams live on the external server.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(context.Background(), "KLAXON_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := st.Info(context.Background())
	if info.State.Msgs != 2 {
		t.Errorf("KLAXON_EVENTS on the external server holds %d events, want 2", info.State.Msgs)
	}
}

// TestAskNodeNameUntilTheAgentAnswers: with the agent down at start the
// host name is used; once the agent answers, the host name resolves to the
// agent's node name (events are labelled with it from then on).
func TestAskNodeNameUntilTheAgentAnswers(t *testing.T) {
	var up atomic.Bool
	var asked atomic.Int32
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		if !up.Load() {
			http.Error(w, "agent starting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, `{"config":{"NodeName":"Win-Client-7"},"member":{},"stats":{}}`)
	}))
	defer agent.Close()
	cfg := Config{Nomad: NomadConfig{Address: agent.URL}}
	host, answered := resolveNode(&cfg, quiet())
	if answered {
		t.Fatal("resolveNode: the agent answered while down")
	}
	ident := ingest.NewIdentity()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { nomadapi.LearnNodeName(ctx, cfg.Nomad.apiConfig(), host, ident, quiet()); close(done) }()
	waitUntil(t, 10*time.Second, "a second question to the agent", func() bool { return asked.Load() >= 2 })
	if got := ident.Resolve(host); got != host {
		t.Fatalf("host resolves to %q before the agent answered", got)
	}
	up.Store(true)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("askNodeName did not stop after the agent answered")
	}
	if got := ident.Resolve(host); got != "win-client-7" {
		t.Errorf("host %q resolves to %q, want win-client-7", host, got)
	}
}

// TestResolveNode: config, else the agent's /v1/agent/self, else the host name.
func TestResolveNode(t *testing.T) {
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/agent/self" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("X-Nomad-Token") != "s3cret" {
			http.Error(w, "Permission denied", http.StatusForbidden)
			return
		}
		fmt.Fprint(w, `{"config":{"NodeName":"WIN-CLIENT-7.corp.example"},"member":{},"stats":{"client":{"node_id":"x"}}}`)
	}))
	defer agent.Close()
	host, _ := os.Hostname()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"config wins", Config{Node: "Explicit.Example.com", Nomad: NomadConfig{Address: agent.URL, Token: "s3cret"}}, "explicit"},
		{"agent self", Config{Nomad: NomadConfig{Address: agent.URL, Token: "s3cret"}}, "win-client-7"},
		{"agent refuses: host name", Config{Nomad: NomadConfig{Address: agent.URL, Token: "wrong"}}, strings.ToLower(strings.Split(host, ".")[0])},
		{"no agent: host name", Config{}, strings.ToLower(strings.Split(host, ".")[0])},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs strings.Builder
			if got, _ := resolveNode(&tc.cfg, logTo(&logs)); got != tc.want {
				t.Errorf("node %q, want %q", got, tc.want)
			}
			if strings.Contains(logs.String(), "s3cret") || strings.Contains(logs.String(), "wrong") {
				t.Errorf("token in logs: %s", logs.String())
			}
		})
	}
}
