package main

import (
	"context"
	"errors"
	"io"

	"github.com/klaxon-dev/klaxon/cmd/internal/app"
)

const configUsage = `Usage:
  klaxon config show --config FILE   print the effective configuration (defaults filled
                                     in, secrets shown as <secret>) after checking it
`

func cmdConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return subcommands(ctx, args, stdout, stderr, configUsage, "config", "config: show?", map[string]command{
		"show": noContext(cmdConfigShow),
	})
}
func cmdConfigShow(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("config show", "klaxon config show --config FILE", stderr)
	config := fs.String("config", "", "configuration file (YAML)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *config == "" {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("config show: --config is required")}
	}
	cfg, err := app.LoadConfig(*config)
	if err != nil {
		return err
	}
	b, err := cfg.ShowYAML()
	if err != nil {
		return err
	}
	_, err = stdout.Write(b)
	return err
}
