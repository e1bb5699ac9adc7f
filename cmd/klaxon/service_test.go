package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/internal/testkit"
)

func TestParseServiceArgs(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "klaxon.yaml")
	tests := []struct {
		name string
		args []string
		code int    // exit code of the error (0: no error)
		msg  string // in the error or usage
		cmd  []string
	}{
		{"no action", nil, 2, "an action is required", nil},
		{"help", []string{"--help"}, 0, "Windows service", nil},
		{"unknown action", []string{"restart"}, 2, `unknown action "restart"`, nil},
		{"install without config", []string{"install"}, 2, "--config is required", nil},
		{"install with a bad role", []string{"install", "--config", cfg, "--role", "replay"}, 2, `--role "replay"`, nil},
		{"install with a bad log level", []string{"install", "--config", cfg, "--log-level", "loud"}, 2, "--log-level", nil},
		{"name with a backslash", []string{"stop", "--name", `a\b`}, 2, "must not contain", nil},
		{"empty name", []string{"start", "--name", ""}, 2, "must not be empty", nil},
		{"stray argument", []string{"stop", "now"}, 2, `unexpected argument "now"`, nil},
		{"unknown flag", []string{"start", "--config", cfg}, 2, "flag provided but not defined: -config", nil},
		{"install", []string{"install", "--config", cfg}, 0, "",
			[]string{"service", "run", "--name", "klaxon", "run", "--config", cfg, "--log-level", "info"}},
		{"install an ingester", []string{"install", "--config", cfg, "--name", "klaxon-ingest", "--role", "ingest", "--log-file", filepath.Join(filepath.Dir(cfg), "k.log"), "--log-level", "debug"}, 0, "",
			[]string{"service", "run", "--name", "klaxon-ingest", "--log-file", filepath.Join(filepath.Dir(cfg), "k.log"), "ingest", "--config", cfg, "--log-level", "debug"}},
		{"run without a role", []string{"run", "--name", "k"}, 2, "role command line is required", nil},
		{"run with a role", []string{"run", "--name", "k", "correlate", "--config", cfg}, 0, "", nil},
		{"stop", []string{"stop", "--name", "klaxon-2"}, 0, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			o, err := parseServiceArgs(tc.args, &stderr)
			all := stderr.String()
			if err != nil {
				all += err.Error()
			}
			if got := exitCode(err); got != tc.code || (tc.code == 0 && tc.name != "help" && err != nil) {
				t.Fatalf("exit %d (%v), want %d\n%s", got, err, tc.code, all)
			}
			if !strings.Contains(all, tc.msg) {
				t.Errorf("output does not contain %q:\n%s", tc.msg, all)
			}
			if tc.cmd != nil && !slices.Equal(o.commandLine(), tc.cmd) {
				t.Errorf("service command line\n%q\nwant\n%q", o.commandLine(), tc.cmd)
			}
			if tc.name == "run with a role" && !slices.Equal(o.roleArgs, []string{"correlate", "--config", cfg}) {
				t.Errorf("role args %q", o.roleArgs)
			}
		})
	}
}

// TestServiceInstallRelativeConfig: the installed command line names the
// config by its absolute path (a service starts in System32).
func TestServiceInstallRelativeConfig(t *testing.T) {
	o, err := parseServiceArgs([]string{"install", "--config", "deploy/k.yaml"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if want := filepath.Join(wd, "deploy", "k.yaml"); o.config != want {
		t.Errorf("config %q, want %q", o.config, want)
	}
}

// stateLog records the states a service reports.
type stateLog struct {
	mu     sync.Mutex
	states []serviceState
}

func (l *stateLog) report(s serviceState) {
	l.mu.Lock()
	l.states = append(l.states, s)
	l.mu.Unlock()
}

func (l *stateLog) get() []serviceState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.states)
}

// TestServeService drives the service loop the Windows handler uses with
// the requests the service control manager sends.
func TestServeService(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name   string
		role   func(ctx context.Context) error
		cmds   []serviceCmd
		err    error
		states []serviceState
	}{
		{"stop cancels the role", func(ctx context.Context) error { <-ctx.Done(); return nil },
			[]serviceCmd{svcInterrogate, svcStop}, nil,
			[]serviceState{stateStartPending, stateRunning, stateRunning, stateStopPending}},
		{"shutdown cancels the role", func(ctx context.Context) error { <-ctx.Done(); return nil },
			[]serviceCmd{svcShutdown}, nil,
			[]serviceState{stateStartPending, stateRunning, stateStopPending}},
		{"the role's error on stop is the result", func(ctx context.Context) error { <-ctx.Done(); return boom },
			[]serviceCmd{svcStop}, boom,
			[]serviceState{stateStartPending, stateRunning, stateStopPending}},
		{"a role that fails ends the service", func(ctx context.Context) error { return boom },
			nil, boom,
			[]serviceState{stateStartPending, stateRunning}},
		{"a role that ignores the stop times out", func(ctx context.Context) error { select {} },
			[]serviceCmd{svcStop}, errStopTimeout,
			[]serviceState{stateStartPending, stateRunning, stateStopPending}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var log stateLog
			cmds := make(chan serviceCmd)
			done := make(chan error, 1)
			go func() { done <- serveService(tc.role, cmds, log.report, 200*time.Millisecond) }()
			for _, c := range tc.cmds {
				select {
				case cmds <- c:
				case <-time.After(10 * time.Second):
					t.Fatalf("request %d not taken", c)
				}
			}
			select {
			case err := <-done:
				if !errors.Is(err, tc.err) {
					t.Errorf("err %v, want %v", err, tc.err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("serveService did not return")
			}
			if got := log.get(); !slices.Equal(got, tc.states) {
				t.Errorf("states %v, want %v", got, tc.states)
			}
		})
	}
}

// TestServeServiceRunsKlaxon: the service loop runs the real `klaxon run`
// (embedded NATS, temp dirs) and a Stop request shuts it down in order.
func TestServeServiceRunsKlaxon(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	rulesDir, _ := filepath.Abs("../../rules.d")
	cfg := filepath.Join(dir, "klaxon.yaml")
	conf := fmt.Sprintf("data_dir: %s\nrules_dir: %s\nhttp: {listen: %q}\nsinks: [{type: file, path: %s}]\n",
		filepath.Join(dir, "data"), rulesDir, addr, filepath.Join(dir, "incidents.jsonl"))
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := parseServiceArgs([]string{"run", "--name", "klaxon-test", "run", "--config", cfg}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	var log stateLog
	cmds := make(chan serviceCmd)
	done := make(chan error, 1)
	go func() {
		done <- serveService(func(ctx context.Context) error { return run(ctx, o.roleArgs, &out, &out) }, cmds, log.report, 30*time.Second)
	}()
	waitFor(t, 30*time.Second, "/readyz of the service's klaxon run", func() bool {
		select {
		case err := <-done:
			t.Fatalf("klaxon run ended: %v\n%s", err, out.String())
		default:
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	cmds <- svcStop
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stop: %v\n%s", err, out.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("klaxon run did not stop")
	}
	if !strings.Contains(out.String(), "stopped") {
		t.Errorf("no orderly stop in the log:\n%s", out.String())
	}
	if got := log.get(); !slices.Equal(got, []serviceState{stateStartPending, stateRunning, stateStopPending}) {
		t.Errorf("states %v", got)
	}
}

// syncBuffer is a log destination shared by goroutines.
type syncBuffer = testkit.SyncBuffer
