//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
)

// wiJob runs klaxon as deploy/nomad/klaxon-correlate.nomad.hcl's group
// "events" does: no token and no address in its configuration, the task's
// workload identity in NOMAD_TOKEN (identity { env = true }) and the task
// API socket in NOMAD_ADDR (${NOMAD_UNIX_ADDR}); the stream asks for every
// namespace although Nomad sets NOMAD_NAMESPACE to the job's.
func wiJob(klaxonBin, rulesDir, sink string) string {
	return fmt.Sprintf(`job "klaxon-wi" {
  type = "service"
  group "events" {
    task "events" {
      driver = "raw_exec"
      identity {
        env         = true
        change_mode = "restart"
      }
      env {
        NOMAD_ADDR = "${NOMAD_UNIX_ADDR}"
      }
      config {
        command = %q
        args    = ["run", "--config", "${NOMAD_TASK_DIR}/klaxon.yaml", "--log-level", "debug"]
      }
      template {
        destination = "local/klaxon.yaml"
        data        = <<-EOF
          node: "{{ env "node.unique.name" }}"
          data_dir: {{ env "NOMAD_ALLOC_DIR" }}/data
          rules_dir: %s
          http: {listen: "127.0.0.1:0"}
          sources:
            nomad_events:
              - namespace: "*"
          sinks:
            - {type: file, name: jsonl, path: %q}
          correlator: {update_interval: 1s, lateness: 1s}
        EOF
      }
      resources {
        cpu    = 100
        memory = 128
      }
    }
  }
}
`, klaxonBin, rulesDir, sink)
}

// status403 is a status 403 in klaxon's log: not the digits of a port
// (addr=127.0.0.1:40307) nor a timestamp's milliseconds
// (time=…T12:43:51.403Z, a make test failure).
var status403 = regexp.MustCompile(`(^|[^0-9:.])403([^0-9]|$)`)

// TestLiveNomadWorkloadIdentity runs klaxon inside a real Nomad 2.0.5 with
// ACLs enabled, as the deploy jobs do: the event stream is read with the
// task's workload identity through the task API socket, allowed by the
// policy of deploy/nomad/klaxon-events.policy.hcl attached to the job's
// group (nomad acl policy apply -job -group), and a crash loop in another
// namespace fires naming its job. (klaxon-ingest.policy.hcl is applied
// too: Nomad accepts it.)
func TestLiveNomadWorkloadIdentity(t *testing.T) {
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
	policy, err := filepath.Abs("../../deploy/nomad/klaxon-events.policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	// A short directory: the task API socket's path (under the agent's
	// data dir) must fit a unix socket address (108 bytes), which
	// t.TempDir's long names do not.
	dir, err := os.MkdirTemp("", "kwi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // after the agent stopped (cleanups run last first)
	agent := startNomadAgent(t, nomadBin, filepath.Join(dir, "agent"), agentOptions{name: "vm-wi",
		extraHCL: "acl {\n  enabled = true\n}", token: "2b7e1516-28ae-4d2a-9a6b-f7158809cf4f"})
	agent.nomadCLI(nomadBin, "acl", "policy", "apply", "-namespace", "default", "-job", "klaxon-wi", "-group", "events", "klaxon-events", policy)
	// The ingest job's policy is one Nomad takes too.
	agent.nomadCLI(nomadBin, "acl", "policy", "apply", "-namespace", "default", "-job", "klaxon-ingest", "klaxon-ingest",
		filepath.Join(filepath.Dir(policy), "klaxon-ingest.policy.hcl"))
	agent.nomadCLI(nomadBin, "namespace", "apply", "-description", "a namespace of its own", "other")

	sink := filepath.Join(dir, "incidents.jsonl")
	agent.runJob(nomadBin, "klaxon-wi", wiJob(bin, rulesDir, sink))
	run := &liveRun{t: t, sink: sink}
	taskLog := func() string {
		m, _ := filepath.Glob(filepath.Join(dir, "agent", "data", "alloc", "*", "alloc", "logs", "events.stderr.*"))
		var b strings.Builder
		for _, p := range m {
			s, _ := os.ReadFile(p)
			b.Write(s)
		}
		return b.String()
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- klaxon in the task:\n%s", taskLog())
			allocs, _, err := agent.api().Jobs().Allocations("klaxon-wi", true, nil)
			if err != nil {
				t.Logf("allocations of klaxon-wi: %v", err)
			}
			for _, a := range allocs {
				for task, st := range a.TaskStates {
					for _, e := range st.Events {
						t.Logf("alloc %s task %s: %s %s %s", a.ID[:8], task, e.Type, e.DisplayMessage, e.Details)
					}
				}
			}
		}
	})
	waitFor(t, 30*time.Second, "klaxon streaming through the task API", func() bool {
		return strings.Contains(taskLog(), "nomadevents: streaming")
	})
	if l := taskLog(); !strings.Contains(l, "address=unix://") || strings.Contains(l, "event stream refused") {
		t.Fatalf("klaxon does not stream through the socket:\n%s", l)
	}

	crash := strings.Replace(crashJob("wicrash", "worker"), "job \"wicrash\" {\n", "job \"wicrash\" {\n  namespace = \"other\"\n", 1)
	agent.runJob(nomadBin, "wicrash", crash)
	var in correlate.Incident
	waitFor(t, 60*time.Second, "the crash loop of wicrash in namespace other", func() bool {
		var ok bool
		in, ok = run.find("nomad.task.crash_loop", map[string]string{"fields.namespace": "other", "fields.job": "wicrash", "fields.task": "worker"})
		return ok
	})
	if in.Node != "vm-wi" {
		t.Errorf("incident node %q", in.Node)
	}
	// A 403 as a status, not as digits of a port (addr=127.0.0.1:40307).
	if l := taskLog(); status403.MatchString(l) || strings.Contains(l, "Permission denied") {
		t.Errorf("klaxon was refused something:\n%s", l)
	}
}
