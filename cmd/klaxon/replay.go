package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/klaxon-dev/klaxon/cmd/internal/replay"
	"github.com/klaxon-dev/klaxon/rules"
)

// progressTerminal decides whether replay draws its progress on stderr.
var progressTerminal = isTerminal

func cmdReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("replay", "klaxon replay [--rules DIR] [--format text|json] [--node NAME] [--events] FILE|DIR...", stderr)
	rulesDir := fs.String("rules", "rules.d", "rules directory")
	format := fs.String("format", "text", "output format: text (one line per incident change) or json (one object per line)")
	node := fs.String("node", "", "node name for inputs that do not carry one")
	events := fs.Bool("events", false, "print the normalised events as JSON lines instead of incidents")
	maxLine := fs.Int("max-line-bytes", 1<<20, "skip (and count) input lines longer than this")
	stats := fs.Bool("stats", false, "print a summary to stderr at the end")
	logLevel := fs.String("log-level", "warn", "log level: debug, info, warn, error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("replay: no input files")}
	}
	if err := textOrJSON("replay", *format); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	opts := replay.Options{Format: *format, Node: *node, Events: *events, Out: stdout, Log: log, MaxLineBytes: *maxLine}
	if !*events {
		set, err := rules.LoadDir(*rulesDir)
		if err != nil {
			return err
		}
		opts.Rules = set
	}
	inputs, err := replay.ExpandInputs(fs.Args())
	if err != nil {
		return err
	}
	opts.Progress = &replay.Progress{}
	stopProgress := startProgress(stderr, progressTerminal, inputs, opts.Progress)
	st, err := replay.Run(ctx, inputs, opts)
	stopProgress()
	if *stats {
		fmt.Fprintf(stderr, "files=%d lines=%d events=%d incidents=%d oversize=%d unparsed=%d\n",
			st.Files, st.Lines, st.Events, st.Incidents, st.Oversize, st.Unparsed)
	}
	return err
}
