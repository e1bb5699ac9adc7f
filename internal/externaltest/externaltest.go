// Package externaltest starts the Debian programs that klaxon's tests use
// as real parts (not mocks). A test that needs a program that is not
// installed is skipped, unless KLAXON_REQUIRE_EXTERNAL=1 (as `make test`
// sets it), which makes it a failure.
package externaltest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/internal/winetest"
)

// AlertmanagerBinary is where Debian's prometheus-alertmanager installs.
const AlertmanagerBinary = "/usr/bin/prometheus-alertmanager"

// Need skips the test when path does not exist (fails it under
// KLAXON_REQUIRE_EXTERNAL=1); pkg names the Debian package to install.
// Under Wine (make test-windows) it skips: the path exists there, but a
// Windows process cannot start a Linux program.
func Need(t testing.TB, path, pkg string) {
	t.Helper()
	winetest.SkipLinuxProgram(t, path, pkg)
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("KLAXON_REQUIRE_EXTERNAL") == "1" {
			t.Fatalf("%s missing and KLAXON_REQUIRE_EXTERNAL=1 (apt-get install %s)", path, pkg)
		}
		t.Skipf("%s not installed (apt-get install %s); set KLAXON_REQUIRE_EXTERNAL=1 to make this a failure", path, pkg)
	}
}

// StartAlertmanager runs Debian's prometheus-alertmanager with a minimal
// config (one blackhole receiver, group_wait 1s, resolve_timeout as given)
// on a free loopback port, waits for /-/ready and returns its base URL.
// It is killed at cleanup; its log is shown when the test failed.
func StartAlertmanager(t testing.TB, resolveTimeout string) string {
	t.Helper()
	Need(t, AlertmanagerBinary, "prometheus-alertmanager")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "alertmanager.yml")
	conf := fmt.Sprintf("global:\n  resolve_timeout: %s\nroute:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n", resolveTimeout)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(AlertmanagerBinary, "--config.file="+cfg, "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--cluster.listen-address=", "--log.level=warn")
	logf, err := os.Create(filepath.Join(dir, "am.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close() // an open file cannot be removed on Windows (TempDir cleanup)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("alertmanager log:\n%s", b)
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("alertmanager at %s not ready within 20s", base)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// AlertmanagerVersion is the first line of `prometheus-alertmanager --version`.
func AlertmanagerVersion() string {
	out, err := exec.Command(AlertmanagerBinary, "--version").CombinedOutput()
	if err != nil {
		return "?"
	}
	for i, c := range out {
		if c == '\n' {
			return string(out[:i])
		}
	}
	return string(out)
}

// Alert is an alert as Alertmanager's API v2 returns it (gettableAlert),
// the fields klaxon's tests look at.
type Alert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Status       struct {
		State string `json:"state"`
	} `json:"status"`
}

// Active reports whether the alert fires now (not resolved, not silenced
// or inhibited).
func (a Alert) Active() bool {
	return a.Status.State == "active" && (a.EndsAt.IsZero() || a.EndsAt.After(time.Now()))
}

// Alerts returns the alerts of the Alertmanager at base (GET /api/v2/alerts).
func Alerts(t testing.TB, base string) []Alert {
	t.Helper()
	resp, err := http.Get(base + "/api/v2/alerts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []Alert
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}
