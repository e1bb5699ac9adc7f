// Command klaxon turns the Nomad agent log, the Nomad event stream and the
// Windows Event Log of a Nomad fleet into incidents that page once.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `klaxon turns Nomad agent logs, the Nomad event stream and Windows Event Logs
into incidents.

Usage:
  klaxon run --config FILE        run every role on the embedded (or an external) NATS
  klaxon ingest --config FILE     run the sources and the publisher (external NATS: nats.url)
  klaxon correlate --config FILE  run the correlator, sinks and HTTP endpoint (nats.url)
  klaxon replay [flags] FILE...   push recorded inputs through the rules, print incidents
  klaxon rules lint [DIR]         check rule files
  klaxon rules test [DIR]         run the rule tests kept next to the rules
  klaxon config show --config FILE
                                  print the effective configuration, secrets hidden
  klaxon dlq list|replay          list or re-deliver the incident changes a sink gave up on
  klaxon silence add|list|expire  keep matching incidents from the sinks until a time
  klaxon incidents list|show      search the incident history (KLAXON_INCIDENTS)
  klaxon version                  print the version
  klaxon demo --out DIR           write the bundled demo logs with fresh timestamps
  klaxon service install|uninstall|start|stop [--config FILE] [--name klaxon]
                                  manage the Windows service

Run "klaxon COMMAND --help" for the flags of a command.
`

// exitError carries an exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, serviceArgs(os.Args[1:]), os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if !errors.Is(err, flag.ErrHelp) && err.Error() != "" {
		fmt.Fprintln(os.Stderr, "klaxon:", err)
	}
	if errors.Is(err, flag.ErrHelp) {
		code = 0
	}
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return subcommands(ctx, args, stdout, stderr, usage, "", "no command", map[string]command{
		"run": cmdRun, "ingest": cmdIngest, "correlate": cmdCorrelate, "replay": cmdReplay,
		"rules": cmdRules, "config": cmdConfig, "dlq": cmdDLQ, "silence": cmdSilence,
		"incidents": cmdIncidents, "version": noContext(cmdVersion), "service": cmdService, "demo": noContext(cmdDemo),
	})
}

// command is a command or a subcommand.
type command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

func noContext(f func(args []string, stdout, stderr io.Writer) error) command {
	return func(_ context.Context, args []string, stdout, stderr io.Writer) error { return f(args, stdout, stderr) }
}

// subcommands runs the command of cmds args[0] names with the rest of
// args. Help prints usage to stdout; no command or an unknown one prints
// it to stderr and is a usage error (missing, or "<name>: unknown
// command").
func subcommands(ctx context.Context, args []string, stdout, stderr io.Writer, usage, name, missing string, cmds map[string]command) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &exitError{code: 2, err: errors.New(missing)}
	}
	if c, ok := cmds[args[0]]; ok {
		return c(ctx, args[1:], stdout, stderr)
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	if name != "" {
		name += ": "
	}
	return &exitError{code: 2, err: fmt.Errorf("%sunknown command %q", name, args[0])}
}

// parseList parses the flags of a list command, which takes no
// arguments and a --format of text or json (format, read after parsing).
func parseList(fs *flag.FlagSet, args []string, name string, format *string) error {
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs, name); err != nil {
		return err
	}
	return textOrJSON(name, *format)
}

// noArgs is the usage error of a command given arguments it takes none of.
func noArgs(fs *flag.FlagSet, name string) error {
	if fs.NArg() > 0 {
		return &exitError{code: 2, err: fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))}
	}
	return nil
}

// textOrJSON is the usage error of a --format other than text or json.
func textOrJSON(name, format string) error {
	if format != "text" && format != "json" {
		return &exitError{code: 2, err: fmt.Errorf("%s: --format %q: want text or json", name, format)}
	}
	return nil
}

// newFlags returns a flag set that prints its usage to stderr.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags; a usage error exits 2.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{code: 2, err: err}
	}
	return nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--log-level: %w", err)}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
