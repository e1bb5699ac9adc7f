package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const serviceSynopsis = `klaxon service install|uninstall|start|stop [--name klaxon] [flags]

Manages klaxon as a Windows service (Windows only; on Linux use the systemd
unit deploy/systemd/klaxon.service). install registers the service with
automatic (delayed) start, restart on failure and an Event Log source; the
service runs "klaxon ROLE --config FILE" and stops in order on a service
Stop or a system shutdown.`

// serviceRoles are the commands a service may run.
var serviceRoles = []string{"run", "ingest", "correlate"}

// serviceActions are the subcommands of `klaxon service`. "run" is what the
// service control manager starts (see commandLine); run by hand it runs the
// role in the foreground.
var serviceActions = []string{"install", "uninstall", "start", "stop", "run"}

// serviceOptions is a parsed `klaxon service` command line.
type serviceOptions struct {
	action   string
	name     string
	config   string // absolute (install)
	role     string
	logLevel string
	logFile  string   // where the service's log goes ("": the default)
	roleArgs []string // run: the role's command line
}

// parseServiceArgs parses `klaxon service ACTION [flags]`; usage errors
// are exit code 2.
func parseServiceArgs(args []string, stderr io.Writer) (*serviceOptions, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprintf(stderr, "Usage: %s\n", serviceSynopsis)
			return nil, flag.ErrHelp
		}
		fmt.Fprintf(stderr, "Usage: %s\n", serviceSynopsis)
		return nil, &exitError{code: 2, err: errors.New("service: an action is required: install, uninstall, start or stop")}
	}
	o := &serviceOptions{action: args[0]}
	if !slices.Contains(serviceActions, o.action) {
		fmt.Fprintf(stderr, "Usage: %s\n", serviceSynopsis)
		return nil, &exitError{code: 2, err: fmt.Errorf("service: unknown action %q: want install, uninstall, start or stop", o.action)}
	}
	fs := newFlags("service "+o.action, serviceSynopsis, stderr)
	fs.StringVar(&o.name, "name", "klaxon", "service name")
	if o.action == "install" {
		fs.StringVar(&o.config, "config", "", "configuration file (YAML) the service runs with; required")
		fs.StringVar(&o.role, "role", "run", "what the service runs: run (every role), ingest or correlate")
		fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
		fs.StringVar(&o.logFile, "log-file", "", `log file of the service (default %ProgramData%\klaxon\NAME.log)`)
	}
	if o.action == "run" {
		fs.StringVar(&o.logFile, "log-file", "", `log file (default %ProgramData%\klaxon\NAME.log)`)
	}
	if err := parse(fs, args[1:]); err != nil {
		return nil, err
	}
	if err := checkServiceName(o.name); err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	switch o.action {
	case "install":
		if fs.NArg() > 0 {
			return nil, &exitError{code: 2, err: fmt.Errorf("service install: unexpected argument %q", fs.Arg(0))}
		}
		if o.config == "" {
			fs.Usage()
			return nil, &exitError{code: 2, err: errors.New("service install: --config is required")}
		}
		if !slices.Contains(serviceRoles, o.role) {
			return nil, &exitError{code: 2, err: fmt.Errorf("service install: --role %q: want run, ingest or correlate", o.role)}
		}
		if _, err := newLogger(io.Discard, o.logLevel); err != nil {
			return nil, err
		}
		abs, err := filepath.Abs(o.config)
		if err != nil {
			return nil, &exitError{code: 2, err: fmt.Errorf("service install: --config: %w", err)}
		}
		o.config = abs
		if o.logFile != "" {
			if o.logFile, err = filepath.Abs(o.logFile); err != nil {
				return nil, &exitError{code: 2, err: fmt.Errorf("service install: --log-file: %w", err)}
			}
		}
	case "run":
		o.roleArgs = fs.Args()
		if len(o.roleArgs) == 0 || !slices.Contains(serviceRoles, o.roleArgs[0]) {
			return nil, &exitError{code: 2, err: errors.New("service run: the role command line is required: run|ingest|correlate --config FILE")}
		}
	default:
		if fs.NArg() > 0 {
			return nil, &exitError{code: 2, err: fmt.Errorf("service %s: unexpected argument %q", o.action, fs.Arg(0))}
		}
	}
	return o, nil
}

// checkServiceName rejects names the service control manager refuses.
func checkServiceName(name string) error {
	switch {
	case name == "":
		return errors.New("service: --name must not be empty")
	case len(name) > 256:
		return errors.New("service: --name is longer than 256 characters")
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("service: --name %q: must not contain / or \\", name)
	}
	return nil
}

// commandLine is what the installed service runs (after the executable):
// the hidden "service run" action, which hands the role to the service
// control manager.
func (o *serviceOptions) commandLine() []string {
	args := []string{"service", "run", "--name", o.name}
	if o.logFile != "" {
		args = append(args, "--log-file", o.logFile)
	}
	return append(args, o.role, "--config", o.config, "--log-level", o.logLevel)
}

// serviceCmd is a request of the service control manager, reduced to what
// klaxon acts on.
type serviceCmd int

const (
	svcInterrogate serviceCmd = iota
	svcStop
	svcShutdown
)

// serviceState is the state klaxon reports to the service control manager.
type serviceState int

const (
	stateStartPending serviceState = iota
	stateRunning
	stateStopPending
)

func (s serviceState) String() string {
	return [...]string{"start pending", "running", "stop pending"}[s]
}

// errStopTimeout: the role did not stop within the stop timeout.
var errStopTimeout = errors.New("service: the role did not stop in time")

// serveService runs role as a service: it reports start pending, then
// running, and cancels the role's context on a Stop or Shutdown request
// (reporting stop pending), answering Interrogate with the current state.
// It returns when the role returns (its error) or stopTimeout after a stop
// request (errStopTimeout). The platform code turns states into service
// status and the result into the exit code.
func serveService(role func(context.Context) error, cmds <-chan serviceCmd, report func(serviceState), stopTimeout time.Duration) error {
	report(stateStartPending)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- role(ctx) }()
	state := stateRunning
	report(state)
	for {
		select {
		case err := <-done:
			return err
		case c := <-cmds:
			switch c {
			case svcInterrogate:
				report(state)
			case svcStop, svcShutdown:
				state = stateStopPending
				report(state)
				cancel()
				select {
				case err := <-done:
					return err
				case <-time.After(stopTimeout):
					return errStopTimeout
				}
			}
		}
	}
}
