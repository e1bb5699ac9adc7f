package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/history"
	"github.com/klaxon-dev/klaxon/cmd/internal/web"
	"github.com/klaxon-dev/klaxon/correlate"
)

const incidentsUsage = `Usage:
  klaxon incidents list [--config FILE] [--node N] [--job J] [--rule R] [--status firing|resolved]
                        [--severity S] [--text T] [--since T] [--until T] [--limit N] [--format text|json]
  klaxon incidents show [--config FILE] [--started TIME] [--rule R] [--format text|json] ID

The incident history: every change of every incident kept in KLAXON_INCIDENTS
(nats.incidents_max_age, 30 days by default). list shows the incidents that
were open at some time between --since (default 7d ago) and --until (default
now), newest first; times are RFC 3339, a date, or a duration back from now
(24h, 7d); --since all reads the whole stream. show prints one incident with
its changes and evidence (the newest occurrence, or the one --started names).

They reach the stream like klaxon silence: nats.url, the running klaxon's fixed
nats.listen, its HTTP endpoint (http.listen, /api/history), or the store in
data_dir when klaxon is stopped.
`

func cmdIncidents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return subcommands(ctx, args, stdout, stderr, incidentsUsage, "incidents", "incidents: list or show?", map[string]command{
		"list": cmdIncidentsList, "ls": cmdIncidentsList, "show": cmdIncidentsShow,
	})
}

// incidentsTimeout bounds one command (connecting and reading included).
const incidentsTimeout = 2 * time.Minute

func cmdIncidentsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("incidents list", "klaxon incidents list [--config FILE] [--node N] [--job J] [--rule R] [--status firing|resolved] [--severity S] [--text T] [--since T] [--until T] [--limit N] [--format text|json]", stderr)
	config, logLevel := toolFlags(fs)
	v := url.Values{}
	for _, f := range []struct{ name, usage string }{
		{"node", "only this node"}, {"job", "only incidents about this job (group fields.job or label job)"},
		{"rule", "only this rule"}, {"status", "firing (open) or resolved"}, {"severity", "only this severity"},
		{"text", "text in the title or summary"}, {"until", "open at some time before this (RFC 3339, date, or duration back from now)"},
	} {
		fs.Func(f.name, f.usage, func(s string) error {
			key := f.name
			if key == "text" {
				key = "q"
			}
			v.Set(key, s)
			return nil
		})
	}
	since := fs.String("since", "7d", "open at some time after this (RFC 3339, date, duration back from now, or all)")
	limit := fs.Int("limit", history.DefaultLimit, "at most this many incidents, newest first")
	format := fs.String("format", "text", "output: text (a table) or json (one incident per line)")
	if err := parseList(fs, args, "incidents list", format); err != nil {
		return err
	}
	if *since != "all" && *since != "" {
		v.Set("since", *since)
	}
	v.Set("limit", strconv.Itoa(*limit))
	now := time.Now()
	q, err := web.ParseHistoryQuery(v, now, 0)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("incidents list: %w", err)}
	}
	ctx, c, done, err := connectTool(ctx, incidentsTimeout, *config, *logLevel, stderr)
	if err != nil {
		return err
	}
	defer done()
	var res history.Result
	if c.api != nil {
		err = c.api.do(ctx, http.MethodGet, "/api/history?"+v.Encode(), nil, &res)
	} else {
		res, err = history.Search(ctx, c.b.JS, q)
	}
	if err != nil {
		return err
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		for _, o := range res.Occurrences {
			if err := enc.Encode(o); err != nil {
				return err
			}
		}
		return nil
	}
	if len(res.Occurrences) == 0 {
		fmt.Fprintln(stdout, "no incidents")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STARTED\tSTATUS\tSEVERITY\tRULE\tNODE\tJOB\tCOUNT\tRESOLVED\tID\tTITLE")
	for _, o := range res.Occurrences {
		resolved := "-"
		if o.ResolvedAt != nil {
			resolved = o.ResolvedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", o.StartedAt.UTC().Format(time.RFC3339), shown(o.Status), o.Severity, o.Rule,
			dash(o.Node), dash(o.Job), o.Count, resolved, o.ID, oneLine(o.Title))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	more := ""
	if res.Total > len(res.Occurrences) {
		more = fmt.Sprintf(" of %d (--limit)", res.Total)
	}
	fmt.Fprintf(stdout, "%d incident(s)%s; `klaxon incidents show ID` for one\n", len(res.Occurrences), more)
	return nil
}

// shown is the status on-call reads: firing until resolved.
func shown(status string) string {
	if status == correlate.StatusResolved {
		return correlate.StatusResolved
	}
	return correlate.StatusFiring
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cmdIncidentsShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("incidents show", "klaxon incidents show [--config FILE] [--started TIME] [--rule R] [--format text|json] ID", stderr)
	config, logLevel := toolFlags(fs)
	started := fs.String("started", "", "the occurrence that started at this time (RFC 3339, as incidents list prints it; default the newest)")
	rule := fs.String("rule", "", "the incident's rule (reads only its changes: faster)")
	format := fs.String("format", "text", "output: text or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("incidents show: which incident id? (see klaxon incidents list)")}
	}
	if err := textOrJSON("incidents show", *format); err != nil {
		return err
	}
	id := fs.Arg(0)
	hint := history.Hint{Rule: *rule}
	v := url.Values{}
	if *rule != "" {
		v.Set("rule", *rule)
	}
	if *started != "" {
		t, err := time.Parse(time.RFC3339Nano, *started)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("incidents show: --started %q: want RFC 3339", *started)}
		}
		hint.Started, hint.Since = t, t.Add(-time.Hour)
		v.Set("started", t.UTC().Format(time.RFC3339Nano))
	}
	ctx, c, done, err := connectTool(ctx, incidentsTimeout, *config, *logLevel, stderr)
	if err != nil {
		return err
	}
	defer done()
	var d history.Detail
	if c.api != nil {
		err = c.api.do(ctx, http.MethodGet, "/api/history/"+url.PathEscape(id)+"?"+v.Encode(), nil, &d)
	} else {
		d, err = history.Get(ctx, c.b.JS, id, hint)
	}
	if err != nil {
		return err
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(d)
	}
	printIncident(stdout, d)
	return nil
}

// printIncident writes one incident for a terminal.
func printIncident(w io.Writer, d history.Detail) {
	in := d.Incident
	ts := func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") }
	fmt.Fprintf(w, "%s  %s  %s\n", strings.ToUpper(shown(in.Status)), strings.ToUpper(in.Severity), in.Title)
	fmt.Fprintf(w, "  id       %s\n  rule     %s\n  node     %s\n", in.ID, in.Rule, dash(in.Node))
	fmt.Fprintf(w, "  started  %s\n  updated  %s\n", ts(in.StartedAt), ts(in.UpdatedAt))
	if in.ResolvedAt != nil {
		fmt.Fprintf(w, "  resolved %s (after %s)\n", ts(*in.ResolvedAt), in.ResolvedAt.Sub(in.StartedAt).Round(time.Second))
	}
	fmt.Fprintf(w, "  count    %d\n", in.Count)
	kv := func(name string, m map[string]string) {
		if len(m) == 0 {
			return
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(m)) {
			parts = append(parts, k+"="+m[k])
		}
		fmt.Fprintf(w, "  %-8s %s\n", name, strings.Join(parts, " "))
	}
	kv("group", in.Group)
	kv("labels", in.Labels)
	if in.Summary != "" {
		fmt.Fprintf(w, "\n%s\n", in.Summary)
	}
	if len(d.Changes) > 0 {
		fmt.Fprintf(w, "\nChanges:\n")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, c := range d.Changes {
			fmt.Fprintf(tw, "  #%d\t%s\t%s\t%s\tcount %d\n", c.Seq, ts(c.At), c.Status, c.Severity, c.Count)
		}
		_ = tw.Flush()
	}
	if len(in.Evidence) > 0 {
		fmt.Fprintf(w, "\nEvidence (%d of %d matching events):\n", len(in.Evidence), in.Count)
		for _, e := range in.Evidence {
			lvl := ""
			if e.Level != "" {
				lvl = " [" + e.Level + "]"
			}
			fmt.Fprintf(w, "  %s  %s  %s%s  %s\n", e.Time.UTC().Format("2006-01-02 15:04:05.000Z"), e.Source, e.Kind, lvl, oneLine(e.Msg))
		}
	}
	if in.Runbook != "" {
		fmt.Fprintf(w, "\nRunbook:\n")
		for _, l := range strings.Split(strings.TrimRight(in.Runbook, "\n"), "\n") {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	if len(d.Occurrences) > 1 {
		fmt.Fprintf(w, "\nOccurrences (--started picks one):\n")
		for _, o := range d.Occurrences {
			end := "open"
			if o.ResolvedAt != nil {
				end = "resolved " + ts(*o.ResolvedAt)
			}
			fmt.Fprintf(w, "  %s  %s  count %d\n", o.StartedAt.UTC().Format(time.RFC3339Nano), end, o.Count)
		}
	}
}
