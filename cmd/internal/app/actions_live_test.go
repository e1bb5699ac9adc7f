//go:build linux

package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/nomadtest"
)

// TestActionEndToEnd runs klaxon (every role, embedded NATS) against the
// real Nomad 2.0.5, a dev agent and a client-only agent: a rule naming
// nomad.node.eligibility fires for the client's node (its registration in
// the event stream), the armed action makes the node ineligible, and its
// record comes back through the correlator into the incident's evidence,
// which the file sink shows; the resolution makes the node eligible again
// and the undo's record follows the resolved change.
func TestActionEndToEnd(t *testing.T) {
	bin := nomadtest.Binary(t)
	dev := nomadtest.Start(t, bin, "vm", "", "")
	nomadtest.Poll(t, 60*time.Second, "the dev agent's API", func() bool {
		_, err := dev.API().Agent().Self()
		return err == nil
	})
	win := nomadtest.Start(t, bin, "win-client-7", fmt.Sprintf("127.0.0.1:%d", dev.RPC), "")
	c := dev.API()
	winID := nomadtest.WaitReady(t, c, dev, win)["win-client-7"].ID
	eligibility := func() string {
		n, _, err := c.Nodes().Info(winID, nil)
		if err != nil {
			t.Fatal(err)
		}
		return n.SchedulingEligibility
	}

	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	if err := os.MkdirAll(rules, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rules, "e2e.yaml"), []byte(`
rules:
  - id: e2e.node.registered
    title: "{{ .node }} registered"
    severity: warning
    runbook: a test
    actions: [nomad.node.eligibility]
    match:
      registered: source == "nomad.event" && kind == "Node.NodeRegistration" && node == "win-client-7"
    correlate:
      by: [node]
      window: 5s
    resolve:
      after: 5s
`), 0o644); err != nil {
		t.Fatal(err)
	}
	sinkPath := filepath.Join(dir, "incidents.jsonl")
	cfg, err := ParseConfig(filepath.Join(dir, "klaxon.yaml"), []byte(fmt.Sprintf(`
node: e2e
http: {listen: "off"}
rules_dir: rules
nomad: {address: %q}
sources:
  nomad_events: [{}]
sinks:
  - type: file
    path: %s
actions:
  nomad_node_eligibility: {dry_run: false}
correlator: {snapshot_interval: 100ms, lateness: 200ms, idle: 200ms}
`, dev.Addr(), sinkPath)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, Options{Log: quiet()}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	changes := func() []correlate.Incident {
		b, _ := os.ReadFile(sinkPath)
		var out []correlate.Incident
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var in correlate.Incident
			if json.Unmarshal(sc.Bytes(), &in) == nil && in.Rule == "e2e.node.registered" {
				out = append(out, in)
			}
		}
		return out
	}
	record := func(in correlate.Incident, result string) bool {
		for _, ev := range in.Evidence {
			if ev.Source == "klaxon.action" && ev.Fields["result"] == result {
				return true
			}
		}
		return false
	}
	nomadtest.Poll(t, 60*time.Second, "the node made ineligible and the record in the incident", func() bool {
		for _, in := range changes() {
			if in.Status != correlate.StatusResolved && record(in, "applied") {
				return eligibility() == "ineligible"
			}
		}
		return false
	})
	nomadtest.Poll(t, 60*time.Second, "the resolution's undo and its record", func() bool {
		for _, in := range changes() {
			if in.Status == correlate.StatusResolved && record(in, "undone") {
				return eligibility() == "eligible"
			}
		}
		return false
	})
	var seqs []string
	for _, in := range changes() {
		seqs = append(seqs, fmt.Sprintf("%s/%d", in.Status, in.Seq))
	}
	t.Logf("changes in the sink: %v", seqs)
}
