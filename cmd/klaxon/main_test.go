package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

// exitCode maps run's error to the process exit code main would use.
func exitCode(err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func TestCLI(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		out  string // expected in stdout+stderr+error
	}{
		{"no command", nil, 2, "Usage:"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"help", []string{"--help"}, 0, "klaxon replay"},
		{"run help", []string{"run", "--help"}, 0, "-config"},
		{"replay help", []string{"replay", "--help"}, 0, "-events"},
		{"rules lint help", []string{"rules", "lint", "--help"}, 0, "-strict"},
		{"rules test help", []string{"rules", "test", "--help"}, 0, "klaxon rules test"},
		{"version help", []string{"version", "--help"}, 0, "klaxon version"},
		{"demo help", []string{"demo", "--help"}, 0, "-out"},
		{"version", []string{"version"}, 0, "klaxon dev"},
		{"run without config", []string{"run"}, 2, "--config is required"},
		{"run with a missing config", []string{"run", "--config", "testdata/nope.yaml"}, 1, "nope.yaml"},
		{"bad flag", []string{"replay", "--nope"}, 2, "flag provided but not defined"},
		{"replay without files", []string{"replay"}, 2, "no input files"},
		{"replay bad format", []string{"replay", "--format", "xml", "x.log"}, 2, `--format "xml"`},
		{"replay missing file", []string{"replay", "--rules", "../../rules.d", "testdata/missing.log"}, 1, "testdata/missing.log"},
		{"lint bundled rules", []string{"rules", "lint", "../../rules.d"}, 0, "0 errors"},
		{"lint broken rules: file:line:col and rule id", []string{"rules", "lint", "testdata/broken"}, 1, "testdata/broken/bad.yaml:3:15: rule broken.rule"},
		{"lint broken rules: every error at once", []string{"rules", "lint", "testdata/broken"}, 1, "testdata/broken/bad.yaml:5:"},
		{"test bundled rules", []string{"rules", "test", "../../rules.d"}, 0, " passed, 0 failed"},
		{"test a dir without tests", []string{"rules", "test", "testdata/broken"}, 1, "bad.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, &stdout, &stderr)
			all := stdout.String() + stderr.String()
			if err != nil {
				all += err.Error()
			}
			if got := exitCode(err); got != tc.code {
				t.Errorf("exit %d, want %d\n%s", got, tc.code, all)
			}
			if !strings.Contains(all, tc.out) {
				t.Errorf("output does not contain %q:\n%s", tc.out, all)
			}
		})
	}
}
