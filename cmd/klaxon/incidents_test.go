package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/history"
	"github.com/klaxon-dev/klaxon/sinks"
)

// TestToolsOverHTTP: while `klaxon run` holds the embedded store and has
// no nats.listen, `klaxon dlq list|replay` and `klaxon incidents
// list|show` reach it through its HTTP endpoint (the replay with
// http.token); once it is stopped they open the store themselves and
// find the same history.
func TestToolsOverHTTP(t *testing.T) {
	hook := newHookServer(t, http.StatusBadRequest)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "nomad.log")
	now := time.Now().UTC().Format(hclogTS)
	appendLines(t, logPath, []string{
		now + ` [WARN]  client.driver_mgr: failed to reattach to plugin, starting new instance: driver=app_pool error="Reattachment process not found"`,
		now + ` [ERROR] client.driver_mgr: dispensing initial plugin failed: driver=app_pool error="failed to start plugin: pipe: Insufficient system resources exist to complete the requested service."`,
	})
	rulesDir, _ := filepath.Abs("../../rules.d")
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfgPath := filepath.Join(dir, "klaxon.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
node: tools-node
data_dir: %s
rules_dir: %s
http: {listen: %q, token: s3cret}
sources:
  nomad_log:
    - paths: [%q]
      read_from: beginning
      poll_interval: 50ms
sinks:
  - type: webhook
    name: hook
    url: %s
correlator: {snapshot_interval: 100ms}
`, filepath.Join(dir, "data"), rulesDir, httpAddr, logPath, hook.URL)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run", "--config", cfgPath}, io.Discard, &logs) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("klaxon run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("klaxon run did not stop")
		}
	}
	defer stop()
	defer func() {
		if t.Failed() {
			t.Logf("klaxon log:\n%s", logs.String())
		}
	}()
	waitFor(t, 20*time.Second, "klaxon's HTTP endpoint", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})

	// dlq list over HTTP.
	var dead []sinks.DeadLetter
	waitFor(t, 20*time.Second, "a dead letter in `klaxon dlq list` (over HTTP)", func() bool {
		out, err := cli("dlq", "list", "--config", cfgPath, "--format", "json")
		if err != nil {
			t.Fatalf("dlq list: %s", out)
		}
		dead = nil
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var dl sinks.DeadLetter
			if line != "" && json.Unmarshal([]byte(line), &dl) == nil {
				dead = append(dead, dl)
			}
		}
		return len(dead) > 0
	})
	if dl := dead[0]; dl.Sink != "hook" || dl.Rule != "nomad.windows.desktop_heap_exhaustion" || !strings.Contains(dl.Error, "HTTP 400") {
		t.Errorf("dead letter %+v", dl)
	}
	if out, err := cli("dlq", "list", "--config", cfgPath); err != nil || !strings.Contains(out, "1 dead letter(s)") {
		t.Errorf("dlq list (text): %v\n%s", err, out)
	}

	// incidents list and show over HTTP.
	var occ history.Occurrence
	waitFor(t, 20*time.Second, "the incident in `klaxon incidents list` (over HTTP)", func() bool {
		out, err := cli("incidents", "list", "--config", cfgPath, "--node", "tools-node", "--format", "json")
		if err != nil {
			t.Fatalf("incidents list: %s", out)
		}
		return json.Unmarshal([]byte(strings.TrimSpace(out)), &occ) == nil && occ.ID != ""
	})
	if occ.Rule != "nomad.windows.desktop_heap_exhaustion" || occ.Node != "tools-node" || occ.Status != "firing" || occ.Changes < 1 {
		t.Errorf("occurrence %+v", occ)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"incidents", "list", "--config", cfgPath}, []string{"STARTED", "firing", "tools-node", occ.ID, "1 incident(s)"}},
		{[]string{"incidents", "list", "--config", cfgPath, "--status", "resolved"}, []string{"no incidents"}},
		{[]string{"incidents", "list", "--config", cfgPath, "--node", "elsewhere"}, []string{"no incidents"}},
		{[]string{"incidents", "list", "--config", cfgPath, "--rule", "nomad.windows.desktop_heap_exhaustion", "--since", "all"}, []string{occ.ID}},
		{[]string{"incidents", "show", "--config", cfgPath, occ.ID}, []string{"FIRING  CRITICAL  Desktop heap exhaustion on tools-node", "Changes:", "#1", "Evidence (", "Insufficient system resources", "Runbook:"}},
	} {
		out, err := cli(tc.args...)
		for _, w := range tc.want {
			if err != nil || !strings.Contains(out, w) {
				t.Errorf("%v: %v, lacks %q:\n%s", tc.args[:2], err, w, out)
				break
			}
		}
	}
	out, err := cli("incidents", "show", "--config", cfgPath, "--format", "json", occ.ID)
	var d history.Detail
	if err != nil || json.Unmarshal([]byte(out), &d) != nil || d.Incident.ID != occ.ID || len(d.Incident.Evidence) != 2 || len(d.Changes) < 1 {
		t.Errorf("incidents show --format json: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"incidents"}, 2, "list or show"},
		{[]string{"incidents", "list", "--config", cfgPath, "--status", "maybe"}, 2, `status "maybe"`},
		{[]string{"incidents", "list", "--config", cfgPath, "--since", "whenever"}, 2, `since "whenever"`},
		{[]string{"incidents", "show", "--config", cfgPath}, 2, "which incident id"},
		{[]string{"incidents", "show", "--config", cfgPath, "nope"}, 1, "no such incident"},
	} {
		out, err := cli(tc.args...)
		if exitCode(err) != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, want %d with %q:\n%s", tc.args, exitCode(err), tc.code, tc.want, out)
		}
	}

	// dlq replay over HTTP, with the token from the config.
	hook.status.Store(0)
	out, err = cli("dlq", "replay", "--config", cfgPath, "--sink", "hook")
	if err != nil || !strings.Contains(out, fmt.Sprintf("replayed %d dead letter(s) of sink hook", len(dead))) {
		t.Fatalf("dlq replay: %v\n%s", err, out)
	}
	waitFor(t, 20*time.Second, "the replayed change at the fixed receiver", func() bool { return len(hook.got()) >= len(dead) })
	// Without the token the running klaxon refuses the replay.
	req, _ := http.NewRequest("POST", "http://"+httpAddr+"/api/dlq/replay", strings.NewReader(`{"sink":"hook"}`))
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("replay without the token: %v %v", resp.StatusCode, err)
	}

	// Stopped: the commands open the store themselves.
	stop()
	out, err = cli("incidents", "list", "--config", cfgPath, "--format", "json")
	var again history.Occurrence
	if err != nil || json.Unmarshal([]byte(strings.TrimSpace(out)), &again) != nil || again.ID != occ.ID {
		t.Errorf("incidents list with klaxon stopped: %v\n%s", err, out)
	}
	if out, err := cli("dlq", "list", "--config", cfgPath); err != nil || !strings.Contains(out, "no dead letters") {
		t.Errorf("dlq list with klaxon stopped: %v\n%s", err, out)
	}
}
