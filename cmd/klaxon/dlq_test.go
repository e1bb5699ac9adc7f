package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
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
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/sinks"
)

// hookServer is a webhook receiver that refuses with status while it is
// non-zero and records what it accepted, in arrival order.
type hookServer struct {
	*httptest.Server
	status   atomic.Int32
	refused  atomic.Int64
	mu       sync.Mutex
	accepted []correlate.Incident
	refusedP map[string]bool // incidents refused at least once
}

func newHookServer(t *testing.T, status int) *hookServer {
	h := &hookServer{refusedP: map[string]bool{}}
	h.status.Store(int32(status))
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in correlate.Incident
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.ID == "" {
			t.Errorf("webhook body: %v", err)
			w.WriteHeader(http.StatusUnprocessableEntity)
			return
		}
		if s := h.status.Load(); s != 0 {
			h.refused.Add(1)
			h.mu.Lock()
			h.refusedP[in.ID] = true
			h.mu.Unlock()
			http.Error(w, "not now", int(s))
			return
		}
		h.mu.Lock()
		h.accepted = append(h.accepted, in)
		h.mu.Unlock()
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) got() []correlate.Incident {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]correlate.Incident(nil), h.accepted...)
}

func (h *hookServer) refusedIncidents() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.refusedP)
}

// cli runs one klaxon command in-process and returns its output.
func cli(args ...string) (string, error) {
	var out bytes.Buffer
	err := run(context.Background(), args, &out, &out)
	if err != nil {
		out.WriteString(err.Error())
	}
	return out.String(), err
}

// TestDLQReplay: a 400 is not retried, the change lands in the sink's
// dead letters; `klaxon dlq list` shows it (through the running klaxon's
// nats.listen) and `klaxon dlq replay` delivers it once the receiver is
// fixed, to that sink only. With klaxon stopped the commands open the
// store themselves; while a klaxon holds the store without a listener,
// they refuse with a clear error.
func TestDLQReplay(t *testing.T) {
	hook := newHookServer(t, http.StatusBadRequest)
	other := newHookServer(t, 0)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "nomad.log")
	now := time.Now().UTC().Format(hclogTS)
	appendLines(t, logPath, []string{
		now + ` [WARN]  client.driver_mgr: failed to reattach to plugin, starting new instance: driver=app_pool error="Reattachment process not found"`,
		now + ` [ERROR] client.driver_mgr: dispensing initial plugin failed: driver=app_pool error="failed to start plugin: pipe: Insufficient system resources exist to complete the requested service."`,
	})
	rulesDir, _ := filepath.Abs("../../rules.d")
	base := fmt.Sprintf(`
node: dlq-node
data_dir: %s
rules_dir: %s
http: {listen: "off"}
sources:
  nomad_log:
    - paths: [%q]
      read_from: beginning
      poll_interval: 50ms
sinks:
  - type: webhook
    name: hook
    url: %s
  - type: webhook
    name: other
    url: %s
correlator: {snapshot_interval: 100ms}
`, filepath.Join(dir, "data"), rulesDir, logPath, hook.URL, other.URL)
	cfgPath := filepath.Join(dir, "klaxon.yaml")
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	if err := os.WriteFile(cfgPath, []byte(base+"nats: {listen: \""+listen+"\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	noListen := filepath.Join(dir, "nolisten.yaml")
	if err := os.WriteFile(noListen, []byte(base), 0o644); err != nil {
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

	// Tools started before klaxon would take the store: wait for it.
	waitFor(t, 20*time.Second, "klaxon's NATS listener", func() bool {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	// The 400: one attempt, then the dead letter.
	var dead []sinks.DeadLetter
	waitFor(t, 20*time.Second, "a dead letter in `klaxon dlq list`", func() bool {
		out, err := cli("dlq", "list", "--config", cfgPath, "--format", "json")
		if err != nil {
			t.Fatalf("dlq list: %s", out)
		}
		dead = nil
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if line == "" {
				continue
			}
			var dl sinks.DeadLetter
			if err := json.Unmarshal([]byte(line), &dl); err != nil {
				t.Fatalf("dlq list --format json: %q: %v", line, err)
			}
			dead = append(dead, dl)
		}
		return len(dead) > 0
	})
	if hook.refused.Load() != 1 {
		t.Errorf("a 400 was tried %d times, want once (no retry)", hook.refused.Load())
	}
	dl := dead[0]
	if dl.Sink != "hook" || dl.Rule != "nomad.windows.desktop_heap_exhaustion" || dl.Status != "firing" || dl.Attempts != 1 || !strings.Contains(dl.Error, "HTTP 400") {
		t.Errorf("dead letter %+v", dl)
	}
	if len(other.got()) != 1 {
		t.Errorf("the other sink got %d changes, want 1", len(other.got()))
	}
	out, err := cli("dlq", "list", "--config", cfgPath)
	if err != nil || !strings.Contains(out, "hook") || !strings.Contains(out, dl.IncidentID) || !strings.Contains(out, "1 dead letter(s)") {
		t.Errorf("dlq list (text): %v\n%s", err, out)
	}

	// Usage errors.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"dlq", "replay", "--config", cfgPath}, 2, "--sink is required"},
		{[]string{"dlq", "replay", "--config", cfgPath, "--sink", "hook", "x1"}, 2, `"x1" is not a dead-letter sequence`},
		{[]string{"dlq", "replay", "--config", cfgPath, "--sink", "nope"}, 1, `sink "nope" is not in`},
		{[]string{"dlq"}, 2, "list or replay"},
		{[]string{"dlq", "list", "--config", filepath.Join(dir, "missing.yaml")}, 1, "missing.yaml"},
	} {
		out, err := cli(tc.args...)
		if exitCode(err) != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, want %d with %q:\n%s", tc.args, exitCode(err), tc.code, tc.want, out)
		}
	}

	// Fixed: the replay reaches the sink, once, and only that sink.
	hook.status.Store(0)
	out, err = cli("dlq", "replay", "--config", cfgPath, "--sink", "hook")
	if err != nil || !strings.Contains(out, fmt.Sprintf("replayed %d dead letter(s) of sink hook", len(dead))) {
		t.Fatalf("dlq replay: %v\n%s", err, out)
	}
	waitFor(t, 20*time.Second, "the replayed change at the fixed receiver", func() bool { return len(hook.got()) >= len(dead) })
	time.Sleep(300 * time.Millisecond) // would a duplicate follow?
	got := hook.got()
	if len(got) != len(dead) || got[0].ID != dl.IncidentID || got[0].Status != "firing" {
		t.Errorf("after the replay the sink got %+v, want the %d dead letter(s)", got, len(dead))
	}
	if n := len(other.got()); n != 1 {
		t.Errorf("the replay reached the other sink too: it got %d changes", n)
	}
	if out, err := cli("dlq", "list", "--config", cfgPath); err != nil || !strings.Contains(out, "no dead letters") {
		t.Errorf("dlq list after the replay: %v\n%s", err, out)
	}

	// A klaxon that holds the store without a listener: a clear refusal.
	out, err = cli("dlq", "list", "--config", noListen)
	if err == nil || !strings.Contains(out, "a running klaxon holds the embedded NATS store") || !strings.Contains(out, "nats.listen") {
		t.Errorf("dlq list on a store in use: %v\n%s", err, out)
	}

	// Stopped: the commands open the store themselves.
	stop()
	if out, err := cli("dlq", "list", "--config", noListen); err != nil || !strings.Contains(out, "no dead letters") {
		t.Errorf("dlq list with klaxon stopped: %v\n%s", err, out)
	}
	// ... and the store is still fine for the next run.
	b, err := bus.OpenEmbedded(context.Background(), filepath.Join(dir, "data"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	b.Close(context.Background())
}
