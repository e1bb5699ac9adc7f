//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
)

// nomadPKI is a CA and its server and CLI certificates, made by the real
// nomad CLI (`nomad tls ca create`, `nomad tls cert create`).
type nomadPKI struct {
	ca, server, serverKey, cli, cliKey string
}

func newNomadPKI(t *testing.T, nomadBin, dir string) nomadPKI {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"tls", "ca", "create"}, {"tls", "cert", "create", "-server", "-region", "global"}, {"tls", "cert", "create", "-cli"}} {
		cmd := exec.Command(nomadBin, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nomad %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	return nomadPKI{ca: p("nomad-agent-ca.pem"), server: p("global-server-nomad.pem"), serverKey: p("global-server-nomad-key.pem"),
		cli: p("global-cli-nomad.pem"), cliKey: p("global-cli-nomad-key.pem")}
}

// startEnvRun starts `klaxon run` with a config that names no Nomad
// setting: the address, CA and client certificate come from the NOMAD_*
// variables of the environment, as for the nomad CLI.
func startEnvRun(t *testing.T, bin, rulesDir, dir, sources string) *liveRun {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "klaxon.yaml")
	sink := filepath.Join(dir, "incidents.jsonl")
	cfg := fmt.Sprintf(`data_dir: %s
rules_dir: %s
http: {listen: "127.0.0.1:0"}
sources:
%ssinks:
  - {type: file, name: jsonl, path: %q}
correlator:
  update_interval: 1s
  lateness: 1s
`, filepath.Join(dir, "data"), rulesDir, sources, sink)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	run := &liveRun{t: t, sink: sink}
	run.proc = soStart(t, dir, "klaxon", bin, "run", "--config", cfgPath, "--log-level", "debug")
	t.Cleanup(func() {
		if t.Failed() {
			l := run.proc.log()
			if len(l) > 6000 {
				l = l[len(l)-6000:]
			}
			t.Logf("--- klaxon in %s:\n%s", dir, l)
		}
	})
	return run
}

// TestLiveNomadTLS runs klaxon against a real Nomad 2.0.5 agent that
// serves its API over mutual TLS (tls { http = true verify_https_client =
// true }, certificates made by the nomad CLI), with klaxon configured only
// through Nomad's variables (NOMAD_ADDR=https://…, NOMAD_CACERT,
// NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY, NOMAD_TOKEN): the event stream is
// followed and a crash loop names its job, with links to the job, the
// allocation and the node in the Nomad UI (Nomad's own IDs); a log-only
// sidecar learns the node name and the allocation's job from the agent's
// API over TLS; a wrong CA is an error naming the address and what to set,
// and no log holds the token.
func TestLiveNomadTLS(t *testing.T) {
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
	pki := newNomadPKI(t, nomadBin, filepath.Join(dir, "pki"))
	other := newNomadPKI(t, nomadBin, filepath.Join(dir, "other-pki"))
	agentDir := filepath.Join(dir, "agent")
	tlsHCL := fmt.Sprintf(`tls {
  http      = true
  rpc       = true
  ca_file   = %q
  cert_file = %q
  key_file  = %q
  verify_https_client = true
}`, pki.ca, pki.server, pki.serverKey)
	agent := startNomadAgent(t, nomadBin, agentDir, agentOptions{name: "vm-tls", extraHCL: tlsHCL,
		https: &agentTLS{ca: pki.ca, cert: pki.cli, key: pki.cliKey}})

	const token = "klaxon-live-tls-token-5f1c2a" // ACLs are off: sent, never logged
	t.Setenv("NOMAD_ADDR", agent.addr())
	t.Setenv("NOMAD_CACERT", pki.ca)
	t.Setenv("NOMAD_CLIENT_CERT", pki.cli)
	t.Setenv("NOMAD_CLIENT_KEY", pki.cliKey)
	t.Setenv("NOMAD_TOKEN", token)

	stream := startEnvRun(t, bin, rulesDir, filepath.Join(dir, "klaxon"), "  nomad_events:\n    - {}\n")
	logOnly := startEnvRun(t, bin, rulesDir, filepath.Join(dir, "klaxon-log-only"),
		fmt.Sprintf("  nomad_log:\n    - paths: [%q]\n      read_from: beginning\n      poll_interval: 50ms\n", filepath.Join(agentDir, "nomad*.log")))
	waitFor(t, 30*time.Second, "klaxon streaming over TLS", func() bool {
		if stream.proc.exited() {
			t.Fatalf("klaxon exited:\n%s", stream.proc.log())
		}
		return strings.Contains(stream.proc.log(), "nomadevents: streaming")
	})
	t.Setenv("NOMAD_CACERT", other.ca) // the next klaxon trusts another CA
	wrong := startEnvRun(t, bin, rulesDir, filepath.Join(dir, "klaxon-wrong-ca"), "  nomad_events:\n    - {}\n")
	t.Setenv("NOMAD_CACERT", pki.ca)

	out, err := exec.Command(bin, "config", "show", "--config", filepath.Join(dir, "klaxon", "klaxon.yaml")).CombinedOutput()
	if err != nil {
		t.Fatalf("config show: %v\n%s", err, out)
	}
	for _, want := range []string{"address: " + agent.addr(), "ca_cert: " + pki.ca, "client_cert: " + pki.cli, "client_key: " + pki.cliKey,
		"ui_url: " + agent.addr(), "token: <secret>"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("config show lacks %q:\n%s", want, out)
		}
	}

	agent.runJob(nomadBin, "tlscrash", crashJob("tlscrash", "worker"))
	var in correlate.Incident
	waitFor(t, 60*time.Second, "the crash loop of tlscrash through the stream", func() bool {
		var ok bool
		in, ok = stream.find("nomad.task.crash_loop", map[string]string{"fields.job": "tlscrash", "fields.task": "worker"})
		return ok && in.Counts["exhausted"] >= 1
	})
	if in.Node != "vm-tls" || in.Group["fields.namespace"] != "default" || !strings.Contains(in.Title, "of job tlscrash") {
		t.Errorf("incident node %q group %v title %q", in.Node, in.Group, in.Title)
	}
	// The links name Nomad's own allocation and node IDs.
	allocs, _, err := agent.api().Jobs().Allocations("tlscrash", true, nil)
	if err != nil || len(allocs) != 1 {
		t.Fatalf("allocations of tlscrash: %v %v", allocs, err)
	}
	want := map[string]string{
		"job":        agent.addr() + "/ui/jobs/tlscrash@default",
		"allocation": agent.addr() + "/ui/allocations/" + allocs[0].ID,
		"node":       agent.addr() + "/ui/clients/" + allocs[0].NodeID,
	}
	for k, v := range want {
		if in.Links[k] != v {
			t.Errorf("link %s = %q, want %q (links %v)", k, in.Links[k], v, in.Links)
		}
	}

	// The log-only sidecar: node name and the allocation's job from the
	// agent's API over TLS.
	waitFor(t, 30*time.Second, "the log-only sidecar's crash loop of tlscrash", func() bool {
		lin, ok := logOnly.find("nomad.task.crash_loop", map[string]string{"fields.job": "tlscrash", "fields.task": "worker"})
		return ok && lin.Node == "vm-tls" && lin.Counts["exhausted"] >= 1
	})

	// The wrong CA: said, with the address and what to set; retried.
	waitFor(t, 20*time.Second, "the wrong CA reported", func() bool {
		l := wrong.proc.log()
		return strings.Contains(l, "certificate signed by unknown authority") && strings.Contains(l, "NOMAD_CACERT")
	})
	l := wrong.proc.log()
	for _, line := range strings.Split(l, "\n") {
		if strings.Contains(line, "nomadevents: event stream ended") {
			if !strings.Contains(line, "nomad agent "+agent.addr()) || !strings.Contains(line, "nomad.tls.ca_cert (or $NOMAD_CACERT)") {
				t.Errorf("the stream's TLS error does not name the address and what to set: %s", line)
			}
			break
		}
	}
	if wrong.proc.exited() {
		t.Errorf("klaxon with the wrong CA exited instead of retrying:\n%s", l)
	}
	for name, r := range map[string]*liveRun{"stream": stream, "log-only": logOnly, "wrong CA": wrong} {
		if strings.Contains(r.proc.log(), token) {
			t.Errorf("the %s klaxon's log holds the token", name)
		}
	}
}
