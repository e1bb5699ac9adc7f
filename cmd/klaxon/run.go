package main

import (
	"context"
	"errors"
	"io"

	"github.com/klaxon-dev/klaxon/cmd/internal/app"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", "klaxon run --config FILE", stderr)
	config := fs.String("config", "", "configuration file (YAML)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *config == "" {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("run: --config is required")}
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	cfg, err := app.LoadConfig(*config)
	if err != nil {
		return err
	}
	return app.Run(ctx, cfg, app.Options{Log: log, Stdout: stdout, Reload: reloadSignal(ctx)})
}
