//go:build linux

// The Nomad binary of ../shared/tools/nomad is linux/amd64.

package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/klaxon-dev/klaxon/internal/externaltest"
	"github.com/klaxon-dev/klaxon/internal/nomadtest"
	"github.com/klaxon-dev/klaxon/internal/testkit"
)

// The real Nomad 2.0.5 of ../shared/tools/nomad, run as a dev agent on
// loopback (see that folder's README for the quirks this follows).

// nomadBinary returns the unpacked Nomad binary; the test skips only when
// the archive is absent.
func nomadBinary(t *testing.T) string { return externaltest.NomadBinary(t) }

// nomadAgent is one running agent.
type nomadAgent struct {
	t       *testing.T
	name    string
	dir     string
	http    int
	rpc     int
	serf    int
	logPath string
	proc    *exec.Cmd
	done    chan struct{}
	out     testkit.SyncBuffer
	https   *agentTLS
	token   string
}

// agentTLS are the CA and client certificate the helpers connect with to
// an agent that serves HTTPS (its tls block is in extraHCL).
type agentTLS struct{ ca, cert, key string }

// agentOptions shape an agent's configuration.
type agentOptions struct {
	name       string // node name
	clientOnly bool   // a client of servers (rpc address)
	servers    string
	extraHCL   string
	// ports are the http, rpc and serf ports (zero: free ones); data is
	// the data directory's name under the agent's (default "data").
	ports [3]int
	data  string
	// https: the agent serves HTTPS (tls block in extraHCL) and the
	// helpers connect with these files.
	https *agentTLS
	// token: ACLs are enabled (acl block in extraHCL); the agent is
	// bootstrapped with this secret (a UUID), which the helpers send.
	token string
	// retries counts the starts again after a port was taken.
	retries int
}

// startNomadAgent starts an agent in a directory of its own: a dev agent
// (server and client) unless clientOnly. Its HCL log goes to nomad.log
// there; it is stopped with SIGINT at cleanup, its tasks killed and the
// secrets mounts it leaves unmounted.
func startNomadAgent(t *testing.T, bin, dir string, o agentOptions) *nomadAgent {
	t.Helper()
	orig := o
	// Ports chosen here were free a moment before the agent binds them;
	// another test's connection can take one meanwhile ("address already
	// in use", a failure of make test). A new agent with fresh ports is
	// then started in its place, when its data directory was new.
	autoPorts := o.ports == [3]int{}
	for i := range o.ports {
		if o.ports[i] == 0 {
			o.ports[i] = freePort(t)
		}
	}
	if o.data == "" {
		o.data = "data"
	}
	_, err := os.Stat(filepath.Join(dir, o.data))
	freshData := os.IsNotExist(err)
	a := &nomadAgent{t: t, name: o.name, dir: dir, http: o.ports[0], rpc: o.ports[1], serf: o.ports[2], done: make(chan struct{}), https: o.https, token: o.token}
	if err := os.MkdirAll(filepath.Join(dir, o.data), 0o755); err != nil {
		t.Fatal(err)
	}
	a.logPath = filepath.Join(dir, "nomad.log")
	mode := `server {
  enabled = true
  bootstrap_expect = 1
  heartbeat_grace = "1s"
  min_heartbeat_ttl = "2s"
}`
	args := []string{"agent", "-dev", "-bind", "127.0.0.1"}
	if o.clientOnly {
		mode = fmt.Sprintf("server { enabled = false }\nclient { servers = [%q] }\n"+
			"advertise {\n  http = \"127.0.0.1\"\n  rpc = \"127.0.0.1\"\n  serf = \"127.0.0.1\"\n}", o.servers)
		args = []string{"agent", "-client", "-bind", "127.0.0.1"}
	}
	hcl := fmt.Sprintf(`name = %q
log_file = %q
log_level = "DEBUG"
data_dir = %q
ports {
  http = %d
  rpc  = %d
  serf = %d
}
%s
client {
  enabled = true
  options { "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean" }
}
plugin "raw_exec" {
  config { enabled = true }
}
%s
`, o.name, a.logPath, filepath.Join(dir, o.data), a.http, a.rpc, a.serf, mode, o.extraHCL)
	cfg := filepath.Join(dir, o.data+".hcl")
	if err := os.WriteFile(cfg, []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	a.proc = exec.Command(bin, append(args, "-config", cfg)...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_CA_BUNDLE=") && !strings.HasPrefix(kv, "NOMAD_") {
			env = append(env, kv)
		}
	}
	a.proc.Env = env
	// One writer for both: the two copying goroutines share its lock.
	a.proc.Stdout, a.proc.Stderr = &a.out, &a.out
	a.proc.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.proc.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = a.proc.Wait(); close(a.done) }()
	t.Cleanup(a.stop)
	bootstrapped := o.token == ""
	portTaken := false
	waitFor(t, 60*time.Second, o.name+" ready", func() bool {
		if a.exited() {
			if autoPorts && freshData && o.retries < 3 && strings.Contains(a.out.String(), "address already in use") {
				portTaken = true
				return true
			}
			t.Fatalf("nomad agent %s exited:\n%s", o.name, a.output())
		}
		if !bootstrapped {
			bootstrapped = a.bootstrapACL(bin)
			return false
		}
		nodes, _, err := a.api().Nodes().List(nil)
		if err != nil {
			return false
		}
		for _, n := range nodes {
			if n.Name == o.name && n.Status == "ready" {
				return true
			}
		}
		return false
	})
	if portTaken {
		t.Logf("nomad agent %s: a port was taken before it bound it; starting it again on others", o.name)
		nomadtest.UnmountUnder(dir)
		if err := os.RemoveAll(filepath.Join(dir, o.data)); err != nil {
			t.Fatal(err)
		}
		_ = os.Remove(a.logPath)
		orig.retries++
		return startNomadAgent(t, bin, dir, orig)
	}
	return a
}

func (a *nomadAgent) output() string {
	b, _ := os.ReadFile(a.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return a.out.String() + "\n--- log tail:\n" + string(b)
}

func (a *nomadAgent) addr() string {
	if a.https != nil {
		return "https://127.0.0.1:" + strconv.Itoa(a.http)
	}
	return "http://127.0.0.1:" + strconv.Itoa(a.http)
}

// cliEnv is what the nomad CLI needs to reach the agent.
func (a *nomadAgent) cliEnv() []string {
	env := []string{"NOMAD_ADDR=" + a.addr(), "NOMAD_TOKEN=" + a.token}
	if a.https != nil {
		env = append(env, "NOMAD_CACERT="+a.https.ca, "NOMAD_CLIENT_CERT="+a.https.cert, "NOMAD_CLIENT_KEY="+a.https.key)
	}
	return env
}

func (a *nomadAgent) api() *nomad.Client {
	conf := nomad.DefaultConfig()
	conf.Address = a.addr()
	conf.SecretID = a.token
	conf.HttpClient = &http.Client{Timeout: 5 * time.Second}
	if a.https != nil {
		// With a client of one's own, nomad/api does not set TLS up.
		conf.HttpClient.Transport = &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
		if err := nomad.ConfigureTLS(conf.HttpClient, &nomad.TLSConfig{CACert: a.https.ca, ClientCert: a.https.cert, ClientKey: a.https.key}); err != nil {
			a.t.Fatal(err)
		}
	}
	c, err := nomad.NewClient(conf)
	if err != nil {
		a.t.Fatal(err)
	}
	return c
}

func (a *nomadAgent) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// bootstrapACL bootstraps the ACL system with a.token once the leader
// answers; it reports whether that is done.
func (a *nomadAgent) bootstrapACL(bin string) bool {
	p := filepath.Join(a.dir, "bootstrap.token")
	if err := os.WriteFile(p, []byte(a.token), 0o600); err != nil {
		a.t.Fatal(err)
	}
	// Bounded: on a port something else holds, the CLI waits for ever.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "acl", "bootstrap", p)
	cmd.Env = append(os.Environ(), "NOMAD_ADDR="+a.addr(), "NOMAD_TOKEN=")
	out, err := cmd.CombinedOutput()
	return err == nil || strings.Contains(string(out), "bootstrap already done")
}

// nomadCLI runs the nomad CLI against the agent.
func (a *nomadAgent) nomadCLI(bin string, args ...string) {
	a.t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), a.cliEnv()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		a.t.Fatalf("nomad %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// runJob submits an HCL job with the nomad CLI.
func (a *nomadAgent) runJob(bin, name, hcl string) {
	a.t.Helper()
	p := filepath.Join(a.dir, name+".nomad.hcl")
	if err := os.WriteFile(p, []byte(hcl), 0o644); err != nil {
		a.t.Fatal(err)
	}
	cmd := exec.Command(bin, "job", "run", "-detach", p)
	cmd.Env = append(os.Environ(), a.cliEnv()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		a.t.Fatalf("nomad job run %s: %v\n%s", name, err, out)
	}
}

// restarts sums Nomad's own TaskStates[task].Restarts over the job's
// allocations.
func (a *nomadAgent) restarts(job, task string) (int, error) {
	allocs, _, err := a.api().Jobs().Allocations(job, true, nil)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, stub := range allocs {
		if ts, ok := stub.TaskStates[task]; ok {
			n += int(ts.Restarts)
		}
	}
	return n, nil
}

// signal sends sig to the agent process.
func (a *nomadAgent) signal(sig syscall.Signal) {
	if err := a.proc.Process.Signal(sig); err != nil {
		a.t.Fatalf("signal %v to %s: %v", sig, a.name, err)
	}
}

// stop ends the agent (SIGINT, then SIGKILL after 20s), the task processes
// it started, and the mounts it leaves under its directory.
func (a *nomadAgent) stop() {
	tasks := descendants(a.proc.Process.Pid)
	if !a.exited() {
		_ = a.proc.Process.Signal(syscall.SIGCONT)
		_ = a.proc.Process.Signal(syscall.SIGINT)
		select {
		case <-a.done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-a.proc.Process.Pid, syscall.SIGKILL)
			<-a.done
		}
	}
	for _, pid := range tasks {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	nomadtest.UnmountUnder(a.dir)
}

// descendants lists the processes below pid (from /proc).
func descendants(pid int) []int {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, cut after ')'.
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 1 {
				pp, _ := strconv.Atoi(f[1])
				parent[p] = pp
			}
		}
	}
	var out []int
	for p := range parent {
		for q := parent[p]; q > 1; q = parent[q] {
			if q == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}
