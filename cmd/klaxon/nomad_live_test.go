//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
)

// Jobs of the live test. A crash loop that exhausts its restarts once
// (no reschedule), so that Nomad's restart count is final.
func crashJob(name, task string) string {
	return fmt.Sprintf(`job %q {
  datacenters = ["dc1"]
  type = "service"
  group "g" {
    restart {
      attempts = 2
      interval = "1m"
      delay    = "1s"
      mode     = "fail"
    }
    reschedule {
      attempts  = 0
      unlimited = false
    }
    task %q {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "sleep 1; echo boom >&2; exit 1"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
`, name, task)
}

const unhealthyJob = `job "unhealthy" {
  datacenters = ["dc1"]
  type = "service"
  group "svc" {
    network {
      port "http" {}
    }
    restart {
      attempts = 3
      interval = "5m"
      delay    = "1s"
      mode     = "fail"
    }
    reschedule {
      attempts  = 0
      unlimited = false
    }
    task "srv" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "sleep 3600"]
      }
      service {
        name     = "unhealthy"
        provider = "nomad"
        port     = "http"
        check {
          type     = "http"
          path     = "/health"
          interval = "2s"
          timeout  = "1s"
          check_restart {
            limit = 2
            grace = "2s"
          }
        }
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
`

const healthyJob = `job "healthy" {
  datacenters = ["dc1"]
  type = "service"
  group "web" {
    task "web" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "sleep 3600"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
`

const batchJob = `job "batchmany" {
  datacenters = ["dc1"]
  type = "batch"
  group "b" {
    count = 8
    task "t" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "echo done"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
`

// edgeJob prefers the client-only agent; when it is gone a replacement
// runs on the dev agent, and is stopped when it comes back (seed 002).
func edgeJob(node string) string {
	return fmt.Sprintf(`job "edge-affine" {
  datacenters = ["dc1"]
  type = "service"
  group "g" {
    disconnect {
      lost_after = "10m"
      replace    = true
      reconcile  = "keep_original"
    }
    affinity {
      attribute = "${node.unique.name}"
      value     = %q
      weight    = 100
    }
    update {
      min_healthy_time = "1s"
      healthy_deadline = "1m"
    }
    reschedule {
      delay          = "5s"
      delay_function = "constant"
      unlimited      = true
    }
    task "app" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "sleep 3600"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
`, node)
}

// liveRun is `klaxon run` on a dev agent's log file and event stream.
type liveRun struct {
	t     *testing.T
	proc  *soProc
	sink  string
	stdio string
}

func (r *liveRun) incidents() []correlate.Incident { return readIncidents(r.t, r.sink) }

// last returns the newest change of each incident.
func (r *liveRun) last() map[string]correlate.Incident {
	m := map[string]correlate.Incident{}
	for _, in := range r.incidents() {
		m[in.ID] = in
	}
	return m
}

// find returns the newest change of the incident of rule whose group holds
// every key=value of want.
func (r *liveRun) find(rule string, want map[string]string) (correlate.Incident, bool) {
	for _, in := range r.last() {
		if in.Rule != rule {
			continue
		}
		ok := true
		for k, v := range want {
			if in.Group[k] != v {
				ok = false
			}
		}
		if ok {
			return in, true
		}
	}
	return correlate.Incident{}, false
}

// startLive starts `klaxon run` in dir on the agent's log and, with
// stream, its event stream.
func startLive(t *testing.T, bin, rulesDir, dir, addr, logGlob string, stream bool) *liveRun {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "klaxon.yaml")
	sink := filepath.Join(dir, "incidents.jsonl")
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
  - {type: file, name: jsonl, path: %q}
correlator:
  update_interval: 1s
  lateness: 1s
`, filepath.Join(dir, "data"), rulesDir, addr, logGlob, streamCfg, sink)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	run := &liveRun{t: t, sink: sink}
	run.proc = soStart(t, dir, "klaxon", bin, "run", "--config", cfgPath, "--log-level", "debug")
	t.Cleanup(func() {
		if t.Failed() {
			l := run.proc.log()
			if len(l) > 8000 {
				l = l[len(l)-8000:]
			}
			t.Logf("--- klaxon in %s:\n%s", dir, l)
			for _, in := range run.incidents() {
				t.Logf("incident %s %s %v counts=%v: %s — %s", in.Status, in.Rule, in.Group, in.Counts, in.Title, in.Summary)
			}
		}
	})
	want := "nomadlog: following file"
	if stream {
		want = "nomadevents: streaming"
	}
	waitFor(t, 30*time.Second, "klaxon to start", func() bool {
		if run.proc.exited() {
			t.Fatalf("klaxon exited:\n%s", run.proc.log())
		}
		return strings.Contains(run.proc.log(), want)
	})
	return run
}

// TestLiveNomadAgent runs klaxon against a real Nomad 2.0.5 agent: its
// agent log and its event stream, both followed live. It checks what an
// on-call engineer sees on the first page: one incident per crash-looping
// job that names the job, restart counts equal Nomad's own, GC pressure on
// the agent's node, health-check restarts only past the limit, nothing for
// a healthy job; after the agent restarts with fresh state (its event index
// back at the start) a new crash loop is still seen through the stream;
// and a client frozen past its heartbeat and thawed makes reconnect churn
// naming its job (seed 002).
func TestLiveNomadAgent(t *testing.T) {
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
	gcHCL := `client {
  gc_max_allocs = 4
  gc_interval   = "10s"
}`
	agent := startNomadAgent(t, nomadBin, agentDir, agentOptions{name: "vm-live", extraHCL: gcHCL})

	run := startLive(t, bin, rulesDir, filepath.Join(dir, "klaxon"), agent.addr(), filepath.Join(agentDir, "nomad*.log"), true)
	// A sidecar that tails the log alone learns each allocation's job from
	// the agent's API.
	logOnly := startLive(t, bin, rulesDir, filepath.Join(dir, "klaxon-log-only"), agent.addr(), filepath.Join(agentDir, "nomad*.log"), false)

	// Phase 1: the jobs.
	for name, hcl := range map[string]string{
		"alpha": crashJob("alpha", "worker"), "beta": crashJob("beta", "worker"),
		"unhealthy": unhealthyJob, "healthy": healthyJob, "batchmany": batchJob,
	} {
		agent.runJob(nomadBin, name, hcl)
	}
	// Each crash loop is one incident naming its job, and once Nomad has
	// given up on the allocation its restart count is final: klaxon's count
	// of the occurrences seen in the log and the stream equals it.
	for _, job := range []string{"alpha", "beta"} {
		var in correlate.Incident
		waitFor(t, 90*time.Second, "crash loop of "+job+" with Nomad's restart count", func() bool {
			var ok bool
			in, ok = run.find("nomad.task.crash_loop", map[string]string{"fields.job": job, "fields.task": "worker"})
			if !ok || in.Counts["exhausted"] < 1 {
				return false
			}
			n, err := agent.restarts(job, "worker")
			return err == nil && n > 0 && in.Counts["restarting"] == n
		})
		if in.Node != "vm-live" || in.Group["fields.namespace"] != "default" || in.Group["fields.task_group"] != "g" {
			t.Errorf("%s: node %q group %v", job, in.Node, in.Group)
		}
		if !strings.Contains(in.Title, "of job "+job) || !strings.Contains(in.Summary, "Job "+job) {
			t.Errorf("%s: title/summary do not name the job: %q / %q", job, in.Title, in.Summary)
		}
		if in.Counts["exhausted"] != 1 {
			t.Errorf("%s: %d exhausted restart policies, want 1 (one allocation, no reschedule)", job, in.Counts["exhausted"])
		}
		sources := map[string]bool{}
		for _, ev := range in.Evidence {
			sources[ev.Source] = true
		}
		if !sources["nomad.log"] || !sources["nomad.event"] {
			t.Errorf("%s: evidence from %v, want both the log and the stream", job, sources)
		}
	}
	for _, job := range []string{"alpha", "beta"} {
		waitFor(t, 30*time.Second, "the log-only sidecar's crash loop of "+job, func() bool {
			in, ok := logOnly.find("nomad.task.crash_loop", map[string]string{"fields.job": job, "fields.task": "worker"})
			if !ok || in.Counts["exhausted"] < 1 {
				return false
			}
			n, err := agent.restarts(job, "worker")
			return err == nil && in.Counts["restarting"] == n
		})
	}
	if in, ok := logOnly.find("nomad.task.crash_loop", map[string]string{"fields.job": ""}); ok {
		t.Errorf("the log-only sidecar has a crash loop without its job: %s", in.Title)
	}
	fired := map[string]int{}
	for _, in := range run.incidents() {
		if in.Rule == "nomad.task.crash_loop" && in.Status == correlate.StatusFiring {
			fired[in.Group["fields.job"]]++
		}
	}
	if fired["alpha"] != 1 || fired["beta"] != 1 {
		t.Errorf("crash loops fired per job: %v, want alpha and beta once each", fired)
	}
	waitFor(t, 60*time.Second, "gc_pressure on the agent's node", func() bool {
		_, ok := run.find("nomad.client.gc_pressure", map[string]string{"node": "vm-live"})
		return ok
	})
	var unhealthy correlate.Incident
	waitFor(t, 90*time.Second, "unhealthy_restarts with Nomad's restart count", func() bool {
		var ok bool
		unhealthy, ok = run.find("nomad.task.unhealthy_restarts", map[string]string{"fields.job": "unhealthy", "fields.task": "srv"})
		if !ok {
			return false
		}
		n, err := agent.restarts("unhealthy", "srv")
		return err == nil && n >= 1 && unhealthy.Counts["restarting"] == n
	})
	for _, in := range run.incidents() {
		if in.Rule == "nomad.task.unhealthy_restarts" && in.Status == correlate.StatusFiring && in.Counts["signaled"] < 2 {
			t.Errorf("unhealthy_restarts fired after %d health-check restarts, want the limit (2)", in.Counts["signaled"])
		}
	}
	for _, in := range run.incidents() {
		if in.Group["fields.job"] == "healthy" || strings.Contains(in.Summary, "healthy,") {
			t.Errorf("incident for the healthy job: %s %s", in.Rule, in.Summary)
		}
	}

	// Phase 2: the agent restarts with fresh state: its event index starts
	// again below klaxon's checkpoint. A new crash loop is still seen
	// through the stream.
	agent.stop()
	agent = startNomadAgent(t, nomadBin, agentDir, agentOptions{name: "vm-live", extraHCL: gcHCL,
		ports: [3]int{agent.http, agent.rpc, agent.serf}, data: "data2"})
	agent.runJob(nomadBin, "gamma", crashJob("gamma", "worker"))
	waitFor(t, 90*time.Second, "the crash loop of gamma through the stream after the reset", func() bool {
		in, ok := run.find("nomad.task.crash_loop", map[string]string{"fields.job": "gamma"})
		if !ok {
			return false
		}
		for _, ev := range in.Evidence {
			if ev.Source == "nomad.event" {
				return true
			}
		}
		return false
	})
	if l := run.proc.log(); !strings.Contains(l, "event index went backwards") {
		t.Errorf("klaxon did not say that the server's event index went back")
	} else if strings.Contains(l, "event stream gap") {
		t.Errorf("klaxon reported a gap for an index reset")
	}

	// Phase 3: a client-only agent frozen past its heartbeat and thawed.
	edge := startNomadAgent(t, nomadBin, filepath.Join(dir, "edge"), agentOptions{name: "edge-live",
		clientOnly: true, servers: fmt.Sprintf("127.0.0.1:%d", agent.rpc)})
	agent.runJob(nomadBin, "edge-affine", edgeJob("edge-live"))
	runningOn := func(node string) bool {
		allocs, _, err := agent.api().Jobs().Allocations("edge-affine", true, nil)
		if err != nil {
			return false
		}
		for _, a := range allocs {
			if a.NodeName == node && a.ClientStatus == "running" {
				return true
			}
		}
		return false
	}
	waitFor(t, 60*time.Second, "edge-affine running on edge-live", func() bool { return runningOn("edge-live") })
	// A deployment still in progress is not rescheduled: wait until it is
	// done, as the recorded one was.
	waitFor(t, 60*time.Second, "edge-affine's deployment successful", func() bool {
		d, _, err := agent.api().Jobs().LatestDeployment("edge-affine", nil)
		return err == nil && d != nil && d.Status == "successful"
	})
	edge.signal(syscall.SIGSTOP)
	t.Cleanup(func() {
		if t.Failed() {
			nodes, _, _ := agent.api().Nodes().List(nil)
			for _, n := range nodes {
				t.Logf("node %s %s", n.Name, n.Status)
			}
			allocs, _, _ := agent.api().Jobs().Allocations("edge-affine", true, nil)
			for _, a := range allocs {
				t.Logf("edge-affine alloc %s on %s: %s/%s %s", a.ID[:8], a.NodeName, a.ClientStatus, a.DesiredStatus, a.DesiredDescription)
			}
			evals, _, _ := agent.api().Jobs().Evaluations("edge-affine", nil)
			for _, e := range evals {
				t.Logf("edge-affine eval %s %s %s %s failed=%v queued=%v", e.ID[:8], e.TriggeredBy, e.Status, e.StatusDescription, e.FailedTGAllocs, e.QueuedAllocations)
			}
		}
	})
	waitFor(t, 60*time.Second, "edge-live disconnected and a replacement running on vm-live", func() bool {
		return runningOn("vm-live")
	})
	edge.signal(syscall.SIGCONT)
	waitFor(t, 90*time.Second, "reconnect churn naming edge-affine", func() bool {
		in, ok := run.find("nomad.client.reconnect_churn", nil)
		return ok && in.Node == "edge-live" && strings.Contains(in.Summary, "edge-affine")
	})
}
