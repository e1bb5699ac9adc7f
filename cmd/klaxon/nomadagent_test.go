//go:build linux

// The Nomad binary of ../shared/tools/nomad is linux/amd64.

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	"github.com/klaxon-dev/klaxon/internal/testkit"
)

// The real Nomad 2.0.5 of ../shared/tools/nomad, run as a dev agent on
// loopback (see that folder's README for the quirks this follows).

var nomadXZ = filepath.Join("..", "..", "..", "shared", "tools", "nomad", "nomad_2.0.5_linux_amd64.xz")

const nomadBinarySHA256 = "3fb8681cd3080f9816c5fd47bf24833c6a1ecf57fa6610e0bb044a887c090e6d"

var (
	nomadBinOnce sync.Once
	nomadBinPath string
	nomadBinErr  error
)

// nomadBinary unpacks the Nomad binary once into the user cache (checked
// against its sha256) and returns its path; the test skips only when the
// archive is absent.
func nomadBinary(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(nomadXZ); err != nil {
		t.Skipf("no Nomad binary at %s: %v", nomadXZ, err)
	}
	nomadBinOnce.Do(func() {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		dir := filepath.Join(cache, "klaxon-test")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			nomadBinErr = err
			return
		}
		p := filepath.Join(dir, "nomad-2.0.5")
		if b, err := os.ReadFile(p); err == nil && sha(b) == nomadBinarySHA256 {
			nomadBinPath = p
			return
		}
		out, err := exec.Command("xz", "-dc", nomadXZ).Output()
		if err != nil {
			nomadBinErr = fmt.Errorf("xz -dc %s: %v (Debian package xz-utils)", nomadXZ, err)
			return
		}
		if got := sha(out); got != nomadBinarySHA256 {
			nomadBinErr = fmt.Errorf("nomad binary sha256 %s, want %s", got, nomadBinarySHA256)
			return
		}
		tmp := p + ".tmp" + strconv.Itoa(os.Getpid())
		if err := os.WriteFile(tmp, out, 0o755); err != nil {
			nomadBinErr = err
			return
		}
		nomadBinErr = os.Rename(tmp, p)
		nomadBinPath = p
	})
	if nomadBinErr != nil {
		t.Fatal(nomadBinErr)
	}
	return nomadBinPath
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

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
}

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
}

// startNomadAgent starts an agent in a directory of its own: a dev agent
// (server and client) unless clientOnly. Its HCL log goes to nomad.log
// there; it is stopped with SIGINT at cleanup, its tasks killed and the
// secrets mounts it leaves unmounted.
func startNomadAgent(t *testing.T, bin, dir string, o agentOptions) *nomadAgent {
	t.Helper()
	for i := range o.ports {
		if o.ports[i] == 0 {
			o.ports[i] = freePort(t)
		}
	}
	if o.data == "" {
		o.data = "data"
	}
	a := &nomadAgent{t: t, name: o.name, dir: dir, http: o.ports[0], rpc: o.ports[1], serf: o.ports[2], done: make(chan struct{})}
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
	waitFor(t, 60*time.Second, o.name+" ready", func() bool {
		if a.exited() {
			t.Fatalf("nomad agent %s exited:\n%s", o.name, a.output())
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
	return a
}

func (a *nomadAgent) output() string {
	b, _ := os.ReadFile(a.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return a.out.String() + "\n--- log tail:\n" + string(b)
}

func (a *nomadAgent) addr() string { return "http://127.0.0.1:" + strconv.Itoa(a.http) }

func (a *nomadAgent) api() *nomad.Client {
	conf := nomad.DefaultConfig()
	conf.Address = a.addr()
	conf.HttpClient = &http.Client{Timeout: 5 * time.Second}
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

// runJob submits an HCL job with the nomad CLI.
func (a *nomadAgent) runJob(bin, name, hcl string) {
	a.t.Helper()
	p := filepath.Join(a.dir, name+".nomad.hcl")
	if err := os.WriteFile(p, []byte(hcl), 0o644); err != nil {
		a.t.Fatal(err)
	}
	cmd := exec.Command(bin, "job", "run", "-detach", p)
	cmd.Env = append(os.Environ(), "NOMAD_ADDR="+a.addr())
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
	unmountUnder(a.dir)
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

// unmountUnder unmounts what is mounted below dir, deepest first.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return
	}
	var mps []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			mps = append(mps, f[1])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mps)))
	for _, m := range mps {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
}
