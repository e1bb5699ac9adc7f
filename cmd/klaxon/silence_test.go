package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSilenceCommands: add, list and expire on the store of a stopped
// klaxon (the embedded store in data_dir), and the usage errors.
func TestSilenceCommands(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "klaxon.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: data\nhttp: {listen: \"127.0.0.1:0\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	klaxon := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, &out, &errOut)
		return out.String() + errOut.String(), err
	}
	usage := []struct {
		args []string
		want string
	}{
		{[]string{"silence", "add", "--config", cfg, "--duration", "2h", "rule=x"}, "--comment is required"},
		{[]string{"silence", "add", "--config", cfg, "--duration", "2h", "--comment", "c"}, "at least one matcher"},
		{[]string{"silence", "add", "--config", cfg, "--comment", "c", "rule=x"}, "give --duration or --end"},
		{[]string{"silence", "add", "--config", cfg, "--duration", "2h", "--comment", "c", "rule=~("}, "missing closing )"},
		{[]string{"silence", "add", "--config", cfg, "--duration", "soon", "--comment", "c", "rule=x"}, "want a positive duration"},
		{[]string{"silence", "add", "--config", cfg, "--end", "tomorrow", "--comment", "c", "rule=x"}, "want RFC 3339"},
		{[]string{"silence", "expire", "--config", cfg}, "which silence id"},
		{[]string{"silence", "mute"}, "unknown command"},
	}
	for _, tc := range usage {
		out, err := klaxon(tc.args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error()+out, tc.want) {
			t.Errorf("%v: %v (%s), want exit 2 with %q", tc.args, err, out, tc.want)
		}
	}

	out, err := klaxon("silence", "add", "--config", cfg, "--duration", "2h", "--comment", "maintenance", "--author", "alice",
		"rule=nomad.task.crash_loop", "node=vm")
	if err != nil {
		t.Fatalf("add: %v: %s", err, out)
	}
	id := strings.TrimSpace(out)
	if len(id) != 36 {
		t.Fatalf("add printed %q, want the silence id", out)
	}
	out, err = klaxon("silence", "list", "--config", cfg)
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "active") ||
		!strings.Contains(out, "rule=nomad.task.crash_loop node=vm") || !strings.Contains(out, "alice") || !strings.Contains(out, "maintenance") {
		t.Fatalf("list: %v:\n%s", err, out)
	}
	if out, err := klaxon("silence", "expire", "--config", cfg, id); err != nil || !strings.Contains(out, id+" expired") {
		t.Fatalf("expire: %v: %s", err, out)
	}
	if out, err := klaxon("silence", "expire", "--config", cfg, id); err == nil || !strings.Contains(err.Error(), "already expired") {
		t.Errorf("second expire: %v: %s", err, out)
	}
	if out, err := klaxon("silence", "list", "--config", cfg); err != nil || !strings.Contains(out, "no silences") {
		t.Errorf("list after expire: %v: %s", err, out)
	}
	if out, err := klaxon("silence", "list", "--config", cfg, "--all", "--format", "json"); err != nil ||
		!strings.Contains(out, `"id":"`+id+`"`) || !strings.Contains(out, `"state":"expired"`) {
		t.Errorf("list --all: %v: %s", err, out)
	}
}
