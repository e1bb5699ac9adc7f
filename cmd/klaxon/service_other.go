//go:build !windows

package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
)

// cmdService: Windows services exist only on Windows. The arguments are
// still checked, so that a script gets the same usage errors everywhere.
func cmdService(_ context.Context, args []string, _, stderr io.Writer) error {
	o, err := parseServiceArgs(args, stderr)
	if err != nil {
		return err
	}
	return &exitError{code: 1, err: fmt.Errorf("service %s: Windows services are managed on Windows only (this is %s); "+
		"on Linux run klaxon under systemd (deploy/systemd/klaxon.service) or as a Nomad job (deploy/nomad/)", o.action, runtime.GOOS)}
}

// serviceArgs returns the command line unchanged: only Windows has a
// service control manager.
func serviceArgs(args []string) []string { return args }
