package main

import (
	"context"
	"errors"
	"io"

	"github.com/klaxon-dev/klaxon/cmd/internal/app"
)

func cmdIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return cmdRole(ctx, "ingest", args, stdout, stderr, app.Ingest)
}

// cmdRole runs one of the long-running commands (run, ingest, correlate):
// --config FILE and --log-level, signals handled by main.
func cmdRole(ctx context.Context, name string, args []string, stdout, stderr io.Writer,
	role func(context.Context, *app.Config, app.Options) error) error {
	fs := newFlags(name, "klaxon "+name+" --config FILE", stderr)
	config := fs.String("config", "", "configuration file (YAML)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *config == "" {
		fs.Usage()
		return &exitError{code: 2, err: errors.New(name + ": --config is required")}
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	cfg, err := app.LoadConfig(*config)
	if err != nil {
		return err
	}
	return role(ctx, cfg, app.Options{Log: log, Stdout: stdout, Reload: reloadSignal(ctx)})
}
