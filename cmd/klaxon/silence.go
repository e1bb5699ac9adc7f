package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/cmd/internal/httpapi"
	"github.com/klaxon-dev/klaxon/sinks/silence"
)

const silenceUsage = `Usage:
  klaxon silence add    [--config FILE] (--duration D | --end TIME) --comment TEXT [--start TIME] [--author NAME] MATCHER...
  klaxon silence list   [--config FILE] [--all] [--format text|json]
  klaxon silence expire [--config FILE] ID...

A silence keeps the incident changes its matchers all match from the sinks until
it ends; then the latest change of each incident that still fires is sent.
Matchers are Alertmanager's (amtool's): name=value and name!=value compare the
whole value (no wildcards), name=~regexp and name!~regexp take RE2, anchored at
both ends; a value may be double-quoted. Names: rule, node, severity, id,
labels.<name>, group.<key>, or a bare label name.

  klaxon silence add --duration 2h --comment "maintenance" rule=nomad.task.crash_loop node=vm
  klaxon silence add --duration 1h --comment "deploy" 'rule=~nomad\.task\..*' team=payments

Silences live in the KLAXON_SILENCES bucket of the config's bus: nats.url, or
with the embedded server the running klaxon's fixed nats.listen address, or its
HTTP endpoint (http.listen, /api/silences, with http.token), or the store in
data_dir when klaxon is stopped.
`

func cmdSilence(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return subcommands(ctx, args, stdout, stderr, silenceUsage, "silence", "silence: add, list or expire?", map[string]command{
		"add": cmdSilenceAdd, "list": cmdSilenceList, "ls": cmdSilenceList, "expire": cmdSilenceExpire,
	})
}

// silenceAPI is where the silences are: the bucket, or a running klaxon's
// HTTP endpoint.
type silenceAPI interface {
	add(ctx context.Context, q httpapi.SilenceRequest) (httpapi.SilenceView, error)
	list(ctx context.Context) ([]httpapi.SilenceView, error)
	expire(ctx context.Context, id string) (httpapi.SilenceView, error)
	close()
}

// connectSilences opens the silences of a command that takes at most
// silenceTimeout (connecting included): it returns the command's context,
// and done, which closes the connection and ends the context.
func connectSilences(ctx context.Context, config, logLevel string, stderr io.Writer) (context.Context, silenceAPI, func(), error) {
	ctx, cancel := context.WithTimeout(ctx, silenceTimeout)
	api, err := openSilenceAPI(ctx, config, logLevel, stderr)
	if err != nil {
		cancel()
		return ctx, nil, nil, err
	}
	return ctx, api, func() { api.close(); cancel() }, nil
}

// openSilenceAPI loads the config and reaches its silences: through the bus
// (app.OpenToolBus), or, when a running klaxon holds the embedded store and
// has no fixed nats.listen, through its HTTP endpoint.
func openSilenceAPI(ctx context.Context, config, logLevel string, stderr io.Writer) (silenceAPI, error) {
	c, err := dialTool(ctx, config, logLevel, stderr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	if c.api != nil {
		return c.api, nil
	}
	st, err := silence.Open(ctx, c.b.JS, c.log)
	if err != nil {
		c.close()
		return nil, err
	}
	return &kvSilences{b: c.b, st: st, log: c.log}, nil
}

func closeToolBus(b *bus.Bus) {
	cctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = b.Close(cctx)
}

// httpBase is the URL of the HTTP endpoint a tool can reach ("" when it is
// off or its port is not fixed); a wildcard host is reached on loopback.
func httpBase(listen string) string {
	if listen == "" || listen == "off" {
		return ""
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil || port == "0" || port == "" {
		return ""
	}
	return "http://" + bus.LocalAddr(host, port)
}

type kvSilences struct {
	b   *bus.Bus
	st  *silence.Store
	log *slog.Logger
}

func (k *kvSilences) close() { closeToolBus(k.b) }

func (k *kvSilences) add(ctx context.Context, q httpapi.SilenceRequest) (httpapi.SilenceView, error) {
	now := time.Now()
	s, err := q.Silence(now)
	if err != nil {
		return httpapi.SilenceView{}, err
	}
	s, err = k.st.Add(ctx, s, now)
	return httpapi.SilenceView{Silence: s, State: s.State(now)}, err
}

func (k *kvSilences) list(ctx context.Context) ([]httpapi.SilenceView, error) {
	all, err := k.st.List(ctx)
	now := time.Now()
	out := make([]httpapi.SilenceView, 0, len(all))
	for _, s := range all {
		out = append(out, httpapi.SilenceView{Silence: s, State: s.State(now)})
	}
	return out, err
}

func (k *kvSilences) expire(ctx context.Context, id string) (httpapi.SilenceView, error) {
	now := time.Now()
	s, err := k.st.Expire(ctx, id, now)
	return httpapi.SilenceView{Silence: s, State: s.State(now)}, err
}

type httpSilences struct {
	base, token string
	client      *http.Client
}

func (h *httpSilences) close() {}

func (h *httpSilences) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, h.base+path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, h.base+path, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: %w", method, h.base+path, err)
	}
	return nil
}

func (h *httpSilences) add(ctx context.Context, q httpapi.SilenceRequest) (httpapi.SilenceView, error) {
	var v httpapi.SilenceView
	err := h.do(ctx, http.MethodPost, "/api/silences", q, &v)
	return v, err
}

func (h *httpSilences) list(ctx context.Context) ([]httpapi.SilenceView, error) {
	var v []httpapi.SilenceView
	err := h.do(ctx, http.MethodGet, "/api/silences", nil, &v)
	return v, err
}

func (h *httpSilences) expire(ctx context.Context, id string) (httpapi.SilenceView, error) {
	var v httpapi.SilenceView
	err := h.do(ctx, http.MethodDelete, "/api/silences/"+id, nil, &v)
	return v, err
}

// silenceTimeout bounds one silence command (connecting included).
const silenceTimeout = time.Minute

func parseTimeFlag(name, v string) (*time.Time, error) {
	if v == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("silence add: --%s %q: want RFC 3339 (2026-11-30T08:00:00Z)", name, v)}
	}
	return &t, nil
}

func cmdSilenceAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("silence add", "klaxon silence add [--config FILE] (--duration D | --end TIME) --comment TEXT [--start TIME] [--author NAME] MATCHER...", stderr)
	config, logLevel := toolFlags(fs)
	duration := fs.String("duration", "", "how long the silence lasts from its start (2h, 30m)")
	end := fs.String("end", "", "when the silence ends (RFC 3339), instead of --duration")
	start := fs.String("start", "", "when the silence starts (RFC 3339; default now)")
	comment := fs.String("comment", "", "why (required)")
	author := fs.String("author", os.Getenv("USER"), "who adds it")
	format := fs.String("format", "text", "output: text (the id) or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("silence add: at least one matcher (rule=..., node=...) is required")}
	}
	if strings.TrimSpace(*comment) == "" {
		return &exitError{code: 2, err: errors.New("silence add: --comment is required (say why)")}
	}
	if (*duration == "") == (*end == "") {
		return &exitError{code: 2, err: errors.New("silence add: give --duration or --end")}
	}
	q := httpapi.SilenceRequest{Matchers: fs.Args(), Duration: *duration, Comment: *comment, CreatedBy: *author}
	var err error
	if q.StartsAt, err = parseTimeFlag("start", *start); err != nil {
		return err
	}
	if q.EndsAt, err = parseTimeFlag("end", *end); err != nil {
		return err
	}
	if q.CreatedBy == "" {
		q.CreatedBy = "klaxon"
	}
	sil, err := q.Silence(time.Now())
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("silence add: %w", err)}
	}
	for _, m := range sil.Matchers {
		if m.LooksLikeGlob() {
			fmt.Fprintf(stderr, "note: %s compares the value literally (* and ? are plain characters, as in Alertmanager); for a pattern use %s=~…\n", m.String(), m.Name)
		}
	}
	ctx, api, done, err := connectSilences(ctx, *config, *logLevel, stderr)
	if err != nil {
		return err
	}
	defer done()
	v, err := api.add(ctx, q)
	if err != nil {
		return err
	}
	if *format == "json" {
		return json.NewEncoder(stdout).Encode(v)
	}
	fmt.Fprintln(stdout, v.ID)
	return nil
}

func cmdSilenceList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("silence list", "klaxon silence list [--config FILE] [--all] [--format text|json]", stderr)
	config, logLevel := toolFlags(fs)
	all := fs.Bool("all", false, "also list expired silences")
	format := fs.String("format", "text", "output: text (a table) or json (one silence per line)")
	if err := parseList(fs, args, "silence list", format); err != nil {
		return err
	}
	ctx, api, done, err := connectSilences(ctx, *config, *logLevel, stderr)
	if err != nil {
		return err
	}
	defer done()
	vs, err := api.list(ctx)
	if err != nil {
		return err
	}
	var shown []httpapi.SilenceView
	for _, v := range vs {
		if *all || v.State != silence.StateExpired {
			shown = append(shown, v)
		}
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		for _, v := range shown {
			if err := enc.Encode(v); err != nil {
				return err
			}
		}
		return nil
	}
	if len(shown) == 0 {
		fmt.Fprintln(stdout, "no silences")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tSTARTS\tENDS\tCREATED BY\tMATCHERS\tCOMMENT")
	for _, v := range shown {
		var ms []string
		for _, m := range v.Matchers {
			ms = append(ms, m.String())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.State, v.StartsAt.UTC().Format(time.RFC3339), v.EndsAt.UTC().Format(time.RFC3339),
			v.CreatedBy, strings.Join(ms, " "), oneLine(v.Comment))
	}
	return tw.Flush()
}

func cmdSilenceExpire(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("silence expire", "klaxon silence expire [--config FILE] ID...", stderr)
	config, logLevel := toolFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("silence expire: which silence id?")}
	}
	ctx, api, done, err := connectSilences(ctx, *config, *logLevel, stderr)
	if err != nil {
		return err
	}
	defer done()
	var errs []error
	for _, id := range fs.Args() {
		if _, err := api.expire(ctx, id); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(stdout, "%s expired\n", id)
	}
	return errors.Join(errs...)
}
