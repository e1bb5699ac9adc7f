//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
)

// ownedCrashJob is a crash-looping job whose meta names its owners.
func ownedCrashJob(name string, meta map[string]string) string {
	var m strings.Builder
	for k, v := range meta {
		fmt.Fprintf(&m, "    %s = %q\n", k, v)
	}
	return strings.Replace(crashJob(name, "worker"), `  type = "service"`, "  type = \"service\"\n  meta {\n"+m.String()+"  }", 1)
}

// startRouted starts `klaxon run` on the agent's log (and, with stream,
// its event stream) with three file sinks: one routed to the payments
// team, one to the search team, one for everything.
func startRouted(t *testing.T, bin, rulesDir, dir, addr, logGlob string, stream bool) (*soProc, map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sinks := map[string]string{}
	for _, n := range []string{"payments", "search", "all"} {
		sinks[n] = filepath.Join(dir, n+".jsonl")
	}
	streamCfg := ""
	if stream {
		streamCfg = "  nomad_events:\n    - {}\n"
	}
	cfg := fmt.Sprintf(`data_dir: %s
rules_dir: %s
nomad: {address: %q}
http: {listen: "127.0.0.1:0"}
sources:
  nomad_log:
    - paths: [%q]
      read_from: beginning
      poll_interval: 50ms
%ssinks:
  - {type: file, name: payments, path: %q, match: {labels.team: payments}}
  - {type: file, name: search, path: %q, match: {labels.team: search}}
  - {type: file, name: all, path: %q}
correlator:
  update_interval: 1s
  lateness: 1s
`, filepath.Join(dir, "data"), rulesDir, addr, logGlob, streamCfg, sinks["payments"], sinks["search"], sinks["all"])
	cfgPath := filepath.Join(dir, "klaxon.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := soStart(t, dir, "klaxon", bin, "run", "--config", cfgPath, "--log-level", "debug")
	t.Cleanup(func() {
		if t.Failed() {
			l := p.log()
			if len(l) > 6000 {
				l = l[len(l)-6000:]
			}
			t.Logf("--- klaxon in %s:\n%s", dir, l)
			for _, in := range readIncidents(t, sinks["all"]) {
				t.Logf("incident %s %s %v labels=%v", in.Status, in.Rule, in.Group, in.Labels)
			}
		}
	})
	waitFor(t, 30*time.Second, "klaxon to start", func() bool {
		if p.exited() {
			t.Fatalf("klaxon exited:\n%s", p.log())
		}
		return strings.Contains(p.log(), "nomadlog: following file")
	})
	return p, sinks
}

// TestLiveOwnerRouting: a job's meta (team, owner, pager) and namespace
// become the labels of its incidents, and sinks route by them — against
// the real Nomad 2.0.5: two crash-looping jobs of two teams, klaxon on the
// agent's log and event stream (the meta from the stream's Job events),
// and a log-only sidecar (the meta from the agent's API, with the
// allocation). Each team's sink gets its job's incidents and nothing else;
// the catch-all sink gets both.
func TestLiveOwnerRouting(t *testing.T) {
	// It mostly waits on Nomad (restart delays, heartbeats): it runs beside
	// the other live tests.
	t.Parallel()
	if testing.Short() {
		t.Skip("runs a Nomad agent")
	}
	nomadBin := nomadBinary(t)
	bin := buildKlaxon(t)
	rulesDir, err := filepath.Abs("../../rules.d")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	agentDir := filepath.Join(dir, "agent")
	agent := startNomadAgent(t, nomadBin, agentDir, agentOptions{name: "vm-route"})
	logGlob := filepath.Join(agentDir, "nomad*.log")
	_, withStream := startRouted(t, bin, rulesDir, filepath.Join(dir, "klaxon"), agent.addr(), logGlob, true)
	_, logOnly := startRouted(t, bin, rulesDir, filepath.Join(dir, "klaxon-log-only"), agent.addr(), logGlob, false)

	owners := map[string]map[string]string{
		"pay":  {"team": "payments", "owner": "alice", "pager": "pd-payments"},
		"find": {"team": "search", "owner": "bob"},
	}
	for job, meta := range owners {
		agent.runJob(nomadBin, job, ownedCrashJob(job, meta))
	}
	crashOf := func(path, job string) (correlate.Incident, bool) {
		for _, in := range readIncidents(t, path) {
			if in.Rule == "nomad.task.crash_loop" && in.Group["fields.job"] == job {
				return in, true
			}
		}
		return correlate.Incident{}, false
	}
	for name, sinks := range map[string]map[string]string{"stream+log": withStream, "log only": logOnly} {
		for job, team := range map[string]string{"pay": "payments", "find": "search"} {
			var in correlate.Incident
			waitFor(t, 120*time.Second, name+": the crash loop of "+job+" at the "+team+" sink", func() bool {
				var ok bool
				in, ok = crashOf(sinks[team], job)
				return ok
			})
			want := map[string]string{"namespace": "default", "job": job}
			for k, v := range owners[job] {
				want[k] = v
			}
			for k, v := range want {
				if in.Labels[k] != v {
					t.Errorf("%s: %s's incident: label %s = %q, want %q (labels %v)", name, job, k, in.Labels[k], v, in.Labels)
				}
			}
			if in.Labels["component"] != "workload" {
				t.Errorf("%s: the rule's own labels are gone: %v", name, in.Labels)
			}
		}
		// Nothing of one team at the other's sink; both at the catch-all.
		for team, other := range map[string]string{"payments": "find", "search": "pay"} {
			for _, in := range readIncidents(t, sinks[team]) {
				if in.Labels["team"] != team || in.Group["fields.job"] == other {
					t.Errorf("%s: sink %s got %s %s of job %q (labels %v)", name, team, in.Rule, in.Status, in.Group["fields.job"], in.Labels)
				}
			}
		}
		// Each sink has its own dispatcher: the catch-all may write later
		// than the team's sink.
		for _, job := range []string{"pay", "find"} {
			waitFor(t, 30*time.Second, name+": the crash loop of "+job+" at the catch-all sink", func() bool {
				_, ok := crashOf(sinks["all"], job)
				return ok
			})
		}
	}
}
