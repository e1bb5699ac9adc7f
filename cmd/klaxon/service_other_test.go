//go:build !windows

package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
)

// TestServiceNotWindows: off Windows, `klaxon service` checks its arguments
// like on Windows, then fails with a clear error; nothing is rewritten.
func TestServiceNotWindows(t *testing.T) {
	tests := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"service", "install", "--config", "k.yaml"}, 1, "Windows services are managed on Windows only"},
		{[]string{"service", "start"}, 1, "service start: Windows services are managed on Windows only"},
		{[]string{"service", "stop", "--name", "klaxon-2"}, 1, "systemd"},
		{[]string{"service", "uninstall"}, 1, "deploy/systemd/klaxon.service"},
		{[]string{"service"}, 2, "an action is required"},
		{[]string{"service", "install"}, 2, "--config is required"},
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), tc.args, &stdout, &stderr)
		all := stdout.String() + stderr.String()
		if err != nil {
			all += err.Error()
		}
		if got := exitCode(err); got != tc.code {
			t.Errorf("%q: exit %d, want %d\n%s", tc.args, got, tc.code, all)
		}
		if !strings.Contains(all, tc.msg) {
			t.Errorf("%q: output does not contain %q:\n%s", tc.args, tc.msg, all)
		}
	}
	args := []string{"run", "--config", "k.yaml"}
	if got := serviceArgs(args); !slices.Equal(got, args) {
		t.Errorf("serviceArgs rewrote %q to %q", args, got)
	}
}
