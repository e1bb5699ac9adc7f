package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/httpapi"
	"github.com/klaxon-dev/klaxon/sinks"
)

const dlqUsage = `Usage:
  klaxon dlq list   [--config FILE] [--sink NAME] [--format text|json] [--limit N]
  klaxon dlq replay [--config FILE] --sink NAME [SEQ...]

list shows the incident changes that sinks gave up on (KLAXON_DLQ); replay sends
dead letters of one sink (the given sequences, or all) back to that sink only.
They use the bus of the config: nats.url, or with the embedded server the running
klaxon's fixed nats.listen address, or its HTTP endpoint (http.listen: /api/dlq,
replay with http.token), or the store in data_dir when klaxon is stopped.
`

func cmdDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return subcommands(ctx, args, stdout, stderr, dlqUsage, "dlq", "dlq: list or replay?", map[string]command{
		"list": cmdDLQList, "replay": cmdDLQReplay,
	})
}

// dlqTimeout bounds one dlq command (connecting included).
const dlqTimeout = time.Minute

func cmdDLQList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dlq list", "klaxon dlq list [--config FILE] [--sink NAME] [--format text|json] [--limit N]", stderr)
	config, logLevel := toolFlags(fs)
	sink := fs.String("sink", "", "only the dead letters of this sink (default: every sink)")
	format := fs.String("format", "text", "output: text (a table) or json (one dead letter per line)")
	limit := fs.Int("limit", 0, "at most this many per sink (0: all)")
	if err := parseList(fs, args, "dlq list", format); err != nil {
		return err
	}
	ctx, c, done, err := connectTool(ctx, dlqTimeout, *config, *logLevel, stderr)
	if err != nil {
		return err
	}
	defer done()
	var all []sinks.DeadLetter
	if c.api != nil {
		q := url.Values{"sink": {*sink}, "limit": {strconv.Itoa(*limit)}}
		err = c.api.do(ctx, http.MethodGet, "/api/dlq?"+q.Encode(), nil, &all)
	} else {
		all, err = httpapi.ListDeadLetters(ctx, c.b.JS, *sink, *limit)
	}
	if err != nil {
		return err
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		for _, dl := range all {
			if err := enc.Encode(dl); err != nil {
				return err
			}
		}
		return nil
	}
	if len(all) == 0 {
		fmt.Fprintln(stdout, "no dead letters")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSINK\tFAILED AT\tATTEMPTS\tSTATUS\tSEVERITY\tRULE\tINCIDENT\tERROR")
	for _, dl := range all {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", dl.Seq, dl.Sink, dl.Time.UTC().Format(time.RFC3339),
			dl.Attempts, dl.Status, dl.Severity, dl.Rule, dl.IncidentID, sinks.Truncate(oneLine(dl.Error), 120))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d dead letter(s); `klaxon dlq replay --sink NAME [SEQ...]` sends them again\n", len(all))
	return nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func cmdDLQReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dlq replay", "klaxon dlq replay [--config FILE] --sink NAME [SEQ...]", stderr)
	config, logLevel := toolFlags(fs)
	sink := fs.String("sink", "", "the sink whose dead letters are sent again (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *sink == "" {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("dlq replay: --sink is required")}
	}
	var seqs []uint64
	for _, a := range fs.Args() {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil || n == 0 {
			return &exitError{code: 2, err: fmt.Errorf("dlq replay: %q is not a dead-letter sequence (see klaxon dlq list)", a)}
		}
		seqs = append(seqs, n)
	}
	ctx, c, done, err := connectTool(ctx, dlqTimeout, *config, *logLevel, stderr)
	if err != nil {
		return err
	}
	defer done()
	if names := c.cfg.SinkNames(); !slices.Contains(names, *sink) {
		return fmt.Errorf("dlq replay: sink %q is not in %s (sinks: %s): nothing would deliver the replay", *sink, *config, strings.Join(names, ", "))
	}
	var n int
	if c.api != nil {
		var resp httpapi.DLQReplayResponse
		err = c.api.do(ctx, http.MethodPost, "/api/dlq/replay", httpapi.DLQReplayRequest{Sink: *sink, Seqs: seqs}, &resp)
		n = resp.Replayed
	} else {
		n, err = sinks.ReplayDLQ(ctx, c.b.JS, *sink, seqs)
	}
	fmt.Fprintf(stdout, "replayed %d dead letter(s) of sink %s; klaxon delivers them to that sink only (at once if it runs, else when it starts)\n", n, *sink)
	return err
}
