package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
)

// TestEndToEndDeliveryKillRestart: the real binary delivers to a webhook
// that answers 500 for a while. klaxon is SIGKILLed while the deliveries
// are pending and restarted (more lines come meanwhile); once the receiver
// answers 200, every incident change in KLAXON_INCIDENTS (read through
// nats.listen while klaxon runs) arrives exactly once, and in order within
// each incident.
func TestEndToEndDeliveryKillRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary")
	}
	bin := buildKlaxon(t)
	hook := newHookServer(t, http.StatusInternalServerError)
	dir := t.TempDir()
	rulesDir, _ := filepath.Abs("../../rules.d")
	nodes := []string{"n1", "n2", "n3"}
	logs := map[string]string{}
	var sources string
	for _, n := range nodes {
		logs[n] = filepath.Join(dir, n+".log")
		appendLines(t, logs[n], []string{noiseLine(time.Now(), 0)})
		sources += fmt.Sprintf("    - paths: [%q]\n      node: %s\n      read_from: beginning\n      poll_interval: 50ms\n", logs[n], n)
	}
	cfgPath := filepath.Join(dir, "klaxon.yaml")
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := fmt.Sprintf(`
nats: {listen: %q}
data_dir: %s
rules_dir: %s
http: {listen: "off"}
sources:
  nomad_log:
%ssinks:
  - type: webhook
    name: hook
    url: %s
    max_attempts: 1000
    min_backoff: 50ms
    max_backoff: 400ms
    send_timeout: 5s
correlator:
  update_interval: 1ms
  snapshot_interval: 100ms
`, listen, filepath.Join(dir, "data"), rulesDir, sources, hook.URL)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var logFiles []string
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, l := range logFiles {
			b, _ := os.ReadFile(l)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("--- %s:\n%s", filepath.Base(l), b)
		}
	})
	start := func() *exec.Cmd {
		path := filepath.Join(dir, fmt.Sprintf("klaxon-%d.log", len(logFiles)))
		logFiles = append(logFiles, path)
		out, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "run", "--config", cfgPath, "--log-level", "debug")
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait(); out.Close() })
		return cmd
	}
	lines := map[string]int{}
	write := func(n int) {
		for _, node := range nodes {
			var ls []string
			for i := 0; i < n; i++ {
				lines[node]++
				ls = append(ls, gcLine(time.Now(), 50+lines[node]))
			}
			appendLines(t, logs[node], ls)
		}
	}

	proc := start()
	write(2) // each node's incident fires
	waitFor(t, 20*time.Second, "every incident refused by the failing receiver", func() bool { return hook.refusedIncidents() == len(nodes) })
	write(3) // updates, queued behind the failing firing changes
	time.Sleep(500 * time.Millisecond)
	if err := proc.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = proc.Process.Wait()
	if n := len(hook.got()); n != 0 {
		t.Fatalf("%d changes accepted while the receiver failed", n)
	}
	write(2) // while klaxon is down
	refusedBefore := hook.refused.Load()

	proc = start()
	waitFor(t, 20*time.Second, "the pending deliveries retried after the restart", func() bool { return hook.refused.Load() > refusedBefore })
	hook.status.Store(0)
	var nc *nats.Conn
	waitFor(t, 20*time.Second, "klaxon's NATS listener", func() bool {
		var err error
		nc, err = nats.Connect("nats://" + listen)
		return err == nil
	})
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	pre := map[string]int{}
	for _, n := range nodes {
		pre[n] = 5 // gc lines written before the kill
	}
	// Every change in the stream is delivered, or superseded by a newer
	// change of its incident that was (one the killed run had in flight
	// comes back only after the ack wait, and is then not sent after the
	// newer one): the receiver sees each incident in order, up to its
	// newest change.
	waitFor(t, 30*time.Second, "every change in the stream delivered or superseded, the lines written while klaxon was down counted", func() bool {
		delivered := map[string]bool{}
		newest := map[string]int{}
		for _, in := range hook.got() {
			delivered[in.ChangeID()] = true
			newest[in.ID] = max(newest[in.ID], in.Seq)
		}
		top := map[string]int{}
		for _, in := range readChanges(t, js) {
			if !delivered[in.ChangeID()] && in.Seq >= newest[in.ID] {
				return false
			}
			top[in.Node] = max(top[in.Node], in.Count)
		}
		for _, n := range nodes {
			if top[n] <= pre[n] {
				return false
			}
		}
		return true
	})
	nc.Close()
	if err := proc.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _, _ = proc.Process.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("klaxon did not stop on SIGTERM")
	}

	// Each change was delivered once, in order per incident; none that the
	// stream does not hold.
	want := streamChanges(t, filepath.Join(dir, "data"))
	got := hook.got()
	seen := map[string]int{}
	lastSeq := map[string]int{}
	for _, in := range got {
		seen[in.ChangeID()]++
		if in.Seq <= lastSeq[in.ID] {
			t.Errorf("incident %s (%s): change %d delivered after change %d", in.ID, in.Node, in.Seq, lastSeq[in.ID])
		}
		lastSeq[in.ID] = in.Seq
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("change %s delivered %d times", id, n)
		}
	}
	inStream := map[string]bool{}
	for _, in := range want {
		inStream[in.ChangeID()] = true
	}
	for id := range seen {
		if !inStream[id] {
			t.Errorf("change %s delivered but not in the stream", id)
		}
	}
	t.Logf("%d changes of %d incidents delivered after %d refusals and a SIGKILL", len(got), len(lastSeq), hook.refused.Load())
}

// streamChanges reads every incident change in KLAXON_INCIDENTS of the
// embedded store in dataDir (klaxon stopped).
func streamChanges(t *testing.T, dataDir string) []correlate.Incident {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.OpenEmbedded(ctx, dataDir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	return readChanges(t, b.JS)
}

// readChanges reads every incident change in KLAXON_INCIDENTS.
func readChanges(t *testing.T, js jetstream.JetStream) []correlate.Incident {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, natslayout.IncidentsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oc, err := js.OrderedConsumer(ctx, natslayout.IncidentsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []correlate.Incident
	for uint64(len(out)) < info.State.Msgs {
		batch, err := oc.Fetch(256, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			var in correlate.Incident
			if err := json.Unmarshal(msg.Data(), &in); err != nil {
				t.Fatal(err)
			}
			out = append(out, in)
		}
		if n == 0 {
			t.Fatalf("read %d of the %d incident changes", len(out), info.State.Msgs)
		}
	}
	return out
}
