//go:build linux

// Package nomadtest runs the real Nomad agent of ../shared/tools/nomad
// (2.0.5, linux/amd64) for tests: a dev agent (server and client) and
// client-only agents on loopback, as that folder's README describes. It is
// a minimal copy of cmd/klaxon's helpers for the tests of other packages.
package nomadtest

import (
	"bytes"
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

	"github.com/hashicorp/nomad/api"

	"github.com/klaxon-dev/klaxon/internal/externaltest"
	"github.com/klaxon-dev/klaxon/internal/testkit"
)

// Binary is the unpacked Nomad binary (externaltest.NomadBinary: checked
// against its sha256, cached; the test skips only when the archive is
// absent).
func Binary(t testing.TB) string { return externaltest.NomadBinary(t) }

type syncWriter struct {
	mu sync.Mutex
	w  bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// Agent is one running Nomad agent.
type Agent struct {
	t        testing.TB
	Name     string
	Dir      string
	HTTP     int
	RPC      int
	proc     *exec.Cmd
	done     chan struct{}
	out      syncWriter
	stopOnce sync.Once
}

// Start starts a dev agent (server and client) when servers is empty,
// else a client-only agent of those servers ("127.0.0.1:<rpc>"), named
// name, with the node class class. It is stopped at the test's cleanup.
// extra is added to its configuration (RawExec enables the raw_exec
// driver).
func Start(t testing.TB, bin, name, servers, class string, extra ...string) *Agent {
	t.Helper()
	dir := t.TempDir()
	a := &Agent{t: t, Name: name, Dir: dir, HTTP: testkit.FreePort(t), RPC: testkit.FreePort(t), done: make(chan struct{})}
	serf := testkit.FreePort(t)
	mode := "server {\n  enabled = true\n  bootstrap_expect = 1\n}"
	args := []string{"agent", "-dev", "-bind", "127.0.0.1"}
	if servers != "" {
		mode = fmt.Sprintf("server { enabled = false }\nclient { servers = [%q] }\n"+
			"advertise {\n  http = \"127.0.0.1\"\n  rpc = \"127.0.0.1\"\n  serf = \"127.0.0.1\"\n}", servers)
		args = []string{"agent", "-client", "-bind", "127.0.0.1"}
	}
	hcl := fmt.Sprintf(`name = %q
log_file = %q
data_dir = %q
ports {
  http = %d
  rpc  = %d
  serf = %d
}
%s
client {
  enabled = true
  node_class = %q
  options { "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean" }
}
%s
`, name, filepath.Join(dir, "nomad.log"), filepath.Join(dir, "data"), a.HTTP, a.RPC, serf, mode, class, strings.Join(extra, "\n"))
	cfg := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(cfg, []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	a.proc = exec.Command(bin, append(args, "-config", cfg)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_CA_BUNDLE=") && !strings.HasPrefix(kv, "NOMAD_") {
			a.proc.Env = append(a.proc.Env, kv)
		}
	}
	a.proc.Stdout, a.proc.Stderr = &a.out, &a.out
	a.proc.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.proc.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = a.proc.Wait(); close(a.done) }()
	t.Cleanup(a.Stop)
	return a
}

// RawExec is agent configuration that enables the raw_exec driver (tasks
// run as plain processes; Stop ends those left).
const RawExec = `plugin "raw_exec" {
  config { enabled = true }
}`

// Addr is the agent's HTTP address.
func (a *Agent) Addr() string { return "http://127.0.0.1:" + strconv.Itoa(a.HTTP) }

// API is a client of the agent (no token).
func (a *Agent) API() *api.Client {
	conf := api.DefaultConfig()
	conf.Address = a.Addr()
	conf.SecretID = ""
	conf.HttpClient = &http.Client{Timeout: 5 * time.Second}
	c, err := api.NewClient(conf)
	if err != nil {
		a.t.Fatal(err)
	}
	return c
}

// Exited reports whether the agent process ended.
func (a *Agent) Exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// WaitReady waits until the servers of c list the agents' nodes ready and
// returns the ready nodes by name.
func WaitReady(t testing.TB, c *api.Client, agents ...*Agent) map[string]*api.NodeListStub {
	t.Helper()
	var nodes map[string]*api.NodeListStub
	Poll(t, 90*time.Second, "nodes ready", func() bool {
		for _, a := range agents {
			if a.Exited() {
				t.Fatalf("nomad agent %s exited:\n%s", a.Name, a.out.String())
			}
		}
		list, _, err := c.Nodes().List(nil)
		if err != nil {
			return false
		}
		nodes = map[string]*api.NodeListStub{}
		for _, n := range list {
			if n.Status == "ready" {
				nodes[n.Name] = n
			}
		}
		for _, a := range agents {
			if nodes[a.Name] == nil {
				return false
			}
		}
		return true
	})
	return nodes
}

// Stop ends the agent (SIGINT, SIGKILL after 20s) and the task processes
// it leaves (its descendants, by PID), and unmounts what it leaves under
// its directory.
func (a *Agent) Stop() {
	a.stopOnce.Do(func() {
		tasks := descendants(a.proc.Process.Pid)
		if !a.Exited() {
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
		UnmountUnder(a.Dir)
	})
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
			if f := strings.Fields(s[i+1:]); len(f) > 1 {
				parent[p], _ = strconv.Atoi(f[1])
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

// UnmountUnder unmounts what is mounted below dir, deepest first (the
// tmpfs secrets directories a Nomad client leaves).
func UnmountUnder(dir string) {
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

// Poll calls cond every 100 ms until it holds or d passes.
func Poll(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitEvery(t, d, 100*time.Millisecond, what, cond)
}
