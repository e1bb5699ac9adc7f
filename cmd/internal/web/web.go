// Package web is klaxon's web view: the live incidents, an incident page
// with a timeline of its evidence per source, the rules with their hit
// counts, and a playground that runs pasted input through the rules. It is
// mounted on the HTTP endpoint of a role (klaxon run, klaxon correlate)
// and reads its data through the functions and interfaces of Config, so
// it holds no pipeline state of its own.
package web

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/rules"
)

// Defaults of Config.
const (
	// DefaultMaxBody caps a playground request body.
	DefaultMaxBody = 1 << 20
	// DefaultPlaygroundTimeout bounds one playground run.
	DefaultPlaygroundTimeout = 10 * time.Second
)

// RuleStats are the correlator's counters the rules page shows.
type RuleStats struct {
	// Events is the number of events the correlator processed.
	Events uint64
	// MatchesByRule counts (event, rule) matches per rule id.
	MatchesByRule map[string]uint64
	// ActiveGroups is the number of groups with window state per rule id.
	ActiveGroups map[string]int
}

// PlaygroundRequest is one playground run: pasted input in any format
// that `klaxon replay` reads.
type PlaygroundRequest struct {
	Input []byte
	// Node names the node of inputs that carry none.
	Node string
}

// PlaygroundResult is what a playground run found.
type PlaygroundResult struct {
	// Format is the detected input format.
	Format string `json:"format"`
	// Lines counts input records (log lines, stream frames, Windows
	// records); Unparsed those that could not be used.
	Lines    int64 `json:"lines"`
	Unparsed int64 `json:"unparsed"`
	// Events holds the decoded events in event-time order, at most
	// MaxEvents of them; EventsTotal counts them all.
	Events      []PlaygroundEvent `json:"events"`
	EventsTotal int               `json:"events_total"`
	// Matched counts the events that matched at least one rule.
	Matched int `json:"matched"`
	// Incidents holds the last change of each incident the input raises.
	Incidents []correlate.Incident `json:"incidents"`
	// Changes counts all incident changes.
	Changes int `json:"changes"`
	// TimedOut is set when the run was cut short by its time bound.
	TimedOut bool `json:"timed_out,omitempty"`
}

// PlaygroundEvent is one decoded event and the rules it matched.
type PlaygroundEvent struct {
	Time    time.Time      `json:"time"`
	Node    string         `json:"node"`
	Source  string         `json:"source"`
	Kind    string         `json:"kind"`
	Level   string         `json:"level"`
	Msg     string         `json:"msg"`
	Fields  map[string]any `json:"fields,omitempty"`
	Matches []RuleMatch    `json:"matches,omitempty"`
}

// RuleMatch names a rule and the selectors of it that matched an event.
type RuleMatch struct {
	Rule      string   `json:"rule"`
	Selectors []string `json:"selectors"`
}

// PlaygroundFunc runs a playground request. It must change no state of
// the running pipeline. An error means the input could not be read at all
// (e.g. unknown format); it is shown to the operator.
type PlaygroundFunc func(ctx context.Context, req PlaygroundRequest) (*PlaygroundResult, error)

// Config is what the web view reads.
type Config struct {
	// Incidents feeds / and /incidents/{id} (required).
	Incidents Incidents
	// Rules returns the rules in use (required).
	Rules func() *rules.Set
	// Stats returns the correlator's counters; nil shows none.
	Stats func() RuleStats
	// Playground runs pasted input; nil disables /playground.
	Playground PlaygroundFunc
	// Now is the wall clock (default time.Now).
	Now func() time.Time
	// Log receives diagnostics (default slog.Default()).
	Log *slog.Logger
	// MaxBody caps a playground request body (default DefaultMaxBody).
	MaxBody int64
	// PlaygroundTimeout bounds one playground run (default DefaultPlaygroundTimeout).
	PlaygroundTimeout time.Duration
	// ResolvedFor is how long resolved incidents are listed on / (default DefaultResolvedFor).
	ResolvedFor time.Duration
}

// Handler serves the web view.
type Handler struct {
	cfg  Config
	tmpl map[string]*template.Template
	// assets is a digest of the static files, added to their URLs so that
	// browsers load the new ones after an upgrade.
	assets string
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// New returns the web view. It panics when the embedded templates do not
// parse (a build defect, caught by every test).
func New(cfg Config) *Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	cfg.MaxBody = cmp.Or(cfg.MaxBody, DefaultMaxBody)
	cfg.PlaygroundTimeout = cmp.Or(cfg.PlaygroundTimeout, DefaultPlaygroundTimeout)
	cfg.ResolvedFor = cmp.Or(cfg.ResolvedFor, DefaultResolvedFor)
	h := &Handler{cfg: cfg, tmpl: map[string]*template.Template{}, assets: assetsDigest()}
	funcs := template.FuncMap{
		"ts":      fmtTime,
		"tsp":     fmtTimePtr,
		"iso":     func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"ago":     func(t time.Time) string { return ago(cfg.Now(), t) },
		"dur":     fmtDuration,
		"sorted":  func(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) },
		"clip":    clip,
		"bytes":   fmtBytes,
		"kv":      fmtFields,
		"percent": func(a, b uint64) uint64 { return a * 100 / max(b, 1) },
	}
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/parts.html"))
	for _, page := range []string{"index", "incident", "rules", "playground", "error"} {
		t := template.Must(template.Must(base.Clone()).ParseFS(templateFS, "templates/"+page+".html"))
		h.tmpl[page] = t
	}
	return h
}

// Register mounts the web view's routes on mux: /, /incidents/{id},
// /rules, /playground, /api/… and /static/….
func (h *Handler) Register(mux *http.ServeMux) {
	mux.Handle("GET /{$}", h.wrap(h.index))
	mux.Handle("GET /incidents/{id}", h.wrap(h.incident))
	mux.Handle("GET /rules", h.wrap(h.rules))
	mux.Handle("GET /playground", h.wrap(h.playgroundForm))
	mux.Handle("POST /playground", h.wrap(h.playgroundPost))
	mux.Handle("GET /api/incidents", h.wrap(h.apiIncidents))
	mux.Handle("GET /api/incidents/{id}", h.wrap(h.apiIncident))
	mux.Handle("GET /api/rules", h.wrap(h.apiRules))
	mux.Handle("POST /api/playground", h.wrap(h.apiPlayground))
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", h.wrap(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=300")
		http.StripPrefix("/static/", http.FileServerFS(static)).ServeHTTP(w, r)
	}))
}

// ServeHTTP serves the web view on its own (for tests and embedding).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mux := http.NewServeMux()
	h.Register(mux)
	mux.ServeHTTP(w, r)
}

func assetsDigest() string {
	d := sha256.New()
	_ = fs.WalkDir(staticFS, "static", func(path string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			b, _ := staticFS.ReadFile(path)
			d.Write(b)
		}
		return nil
	})
	return hex.EncodeToString(d.Sum(nil)[:6])
}

// wrap sets the security headers of every response: no framing, no
// sniffing, scripts and styles from this origin only.
func (h *Handler) wrap(f http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		f(w, r)
	})
}

// page is the data of every page.
type page struct {
	Title  string
	Nav    string
	Now    time.Time
	Assets string // digest of the static files
	Data   any
	BodyID string // data-incident of the body (incident page)
}

func (h *Handler) render(w http.ResponseWriter, status int, name string, p page) {
	p.Now = h.cfg.Now()
	p.Assets = h.assets
	var buf bytes.Buffer
	if err := h.tmpl[name].ExecuteTemplate(&buf, "layout.html", p); err != nil {
		h.cfg.Log.Error("web: template", "page", name, "err", err)
		http.Error(w, "template error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (h *Handler) renderError(w http.ResponseWriter, status int, msg string) {
	h.render(w, status, "error", page{Title: http.StatusText(status), Data: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// --- live incidents ---

type indexData struct {
	Open, Resolved []correlate.Incident
	ResolvedFor    time.Duration
	Version        uint64
}

func (h *Handler) indexData() indexData {
	now := h.cfg.Now()
	v := h.cfg.Incidents.Version()
	open, resolved := h.cfg.Incidents.List(now.Add(-h.cfg.ResolvedFor))
	return indexData{Open: open, Resolved: resolved, ResolvedFor: h.cfg.ResolvedFor, Version: v}
}

func (h *Handler) index(w http.ResponseWriter, r *http.Request) {
	h.render(w, http.StatusOK, "index", page{Title: "Incidents", Nav: "incidents", Data: h.indexData()})
}

// apiIncident is an incident as /api/incidents lists it: no evidence.
type apiIncident struct {
	correlate.Incident
	Evidence []correlate.Evidence `json:"evidence,omitempty"`
	URL      string               `json:"url"`
}

func listed(ins []correlate.Incident) []apiIncident {
	out := make([]apiIncident, 0, len(ins))
	for _, in := range ins {
		out = append(out, apiIncident{Incident: in, URL: "/incidents/" + in.ID})
	}
	return out
}

// apiIncidents serves {"open":[…],"resolved":[…]}; the ETag follows the
// store's version, so polling an unchanged view costs a 304.
func (h *Handler) apiIncidents(w http.ResponseWriter, r *http.Request) {
	d := h.indexData()
	etag := fmt.Sprintf(`W/"%d-%d"`, d.Version, h.cfg.Now().Unix()/60)
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-cache")
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"open":     listed(d.Open),
		"resolved": listed(d.Resolved),
		"version":  d.Version,
		"now":      h.cfg.Now().UTC(),
	})
}

// --- one incident ---

type incidentData struct {
	In       correlate.Incident
	Timeline timeline
	Rule     *rules.Rule
}

func (h *Handler) incident(w http.ResponseWriter, r *http.Request) {
	in, ok := h.cfg.Incidents.Get(r.PathValue("id"))
	if !ok {
		h.renderError(w, http.StatusNotFound, "No incident "+r.PathValue("id")+" in the recent history.")
		return
	}
	d := incidentData{In: in, Timeline: newTimeline(in)}
	if set := h.cfg.Rules(); set != nil {
		d.Rule = set.Rule(in.Rule)
	}
	h.render(w, http.StatusOK, "incident", page{Title: in.Title, Nav: "incidents", Data: d, BodyID: in.ID})
}

func (h *Handler) apiIncident(w http.ResponseWriter, r *http.Request) {
	in, ok := h.cfg.Incidents.Get(r.PathValue("id"))
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no incident " + r.PathValue("id")})
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	writeJSON(w, http.StatusOK, in)
}

// --- rules ---

// ruleRow is one rule with its counters.
type ruleRow struct {
	ID           string    `json:"id"`
	Title        string    `json:"title"`
	Severity     string    `json:"severity"`
	Selectors    []ruleSel `json:"selectors"`
	By           []string  `json:"by"`
	Window       string    `json:"window"`
	When         string    `json:"when"`
	ResolveAfter string    `json:"resolve_after"`
	Place        string    `json:"place"`
	Matches      uint64    `json:"matches"`
	ActiveGroups int       `json:"active_groups"`
	Open         int       `json:"open_incidents"`
	MaxMatches   uint64    `json:"-"`
}

type ruleSel struct {
	Name string `json:"name"`
	Expr string `json:"expr"`
}

type rulesData struct {
	Rules  []ruleRow
	Events uint64
	Files  []string
}

func (h *Handler) rulesData() rulesData {
	var d rulesData
	set := h.cfg.Rules()
	var st RuleStats
	if h.cfg.Stats != nil {
		st = h.cfg.Stats()
	}
	d.Events = st.Events
	open, _ := h.cfg.Incidents.List(h.cfg.Now())
	openBy := map[string]int{}
	for _, in := range open {
		openBy[in.Rule]++
	}
	if set == nil {
		return d
	}
	d.Files = set.Files()
	var most uint64
	for _, r := range set.Rules {
		row := ruleRow{
			ID: r.ID, Title: r.Title, Severity: r.Severity, By: r.By,
			Window: fmtDuration(r.Window), ResolveAfter: fmtDuration(r.ResolveAfter),
			Place:   fmt.Sprintf("%s:%d", r.File, r.Line),
			Matches: st.MatchesByRule[r.ID], ActiveGroups: st.ActiveGroups[r.ID], Open: openBy[r.ID],
		}
		if r.When != nil {
			row.When = r.When.Expr
		}
		if row.When == "" {
			row.When = "any match"
		}
		for _, s := range r.Selectors {
			row.Selectors = append(row.Selectors, ruleSel{Name: s.Name, Expr: s.Expr})
		}
		most = max(most, row.Matches)
		d.Rules = append(d.Rules, row)
	}
	for i := range d.Rules {
		d.Rules[i].MaxMatches = most
	}
	return d
}

func (h *Handler) rules(w http.ResponseWriter, r *http.Request) {
	h.render(w, http.StatusOK, "rules", page{Title: "Rules", Nav: "rules", Data: h.rulesData()})
}

func (h *Handler) apiRules(w http.ResponseWriter, r *http.Request) {
	d := h.rulesData()
	writeJSON(w, http.StatusOK, map[string]any{"rules": d.Rules, "events": d.Events, "files": d.Files})
}

// --- playground ---

// MaxEvents caps the events a playground result lists.
const MaxEvents = 2000

type playgroundData struct {
	Enabled bool
	Input   string
	Node    string
	Result  *PlaygroundResult
	Err     string
	MaxBody int64
	Example string
}

//go:embed examples/desktop-heap.log
var exampleInput string

func (h *Handler) playgroundForm(w http.ResponseWriter, r *http.Request) {
	d := playgroundData{Enabled: h.cfg.Playground != nil, MaxBody: h.cfg.MaxBody}
	if r.URL.Query().Get("example") == "desktop-heap" {
		d.Input, d.Node = exampleInput, "win-client-7"
	}
	h.render(w, http.StatusOK, "playground", page{Title: "Playground", Nav: "playground", Data: d})
}

// readInput reads the playground input of a request under the body limit:
// the form field "input" (multipart or urlencoded) or, for the API, the
// raw body. Line ends are normalised (browsers send CRLF).
func (h *Handler) readInput(w http.ResponseWriter, r *http.Request, form bool) (PlaygroundRequest, int, error) {
	r.Body = http.MaxBytesReader(w, r.Body, h.cfg.MaxBody)
	var req PlaygroundRequest
	var err error
	if form {
		if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/") {
			err = r.ParseMultipartForm(h.cfg.MaxBody)
		} else {
			err = r.ParseForm()
		}
		req.Input = []byte(r.PostFormValue("input"))
		req.Node = r.PostFormValue("node")
	} else {
		req.Input, err = io.ReadAll(r.Body)
		req.Node = r.URL.Query().Get("node")
	}
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return req, http.StatusRequestEntityTooLarge, fmt.Errorf("the input exceeds %s", fmtBytes(h.cfg.MaxBody))
		}
		return req, http.StatusBadRequest, fmt.Errorf("reading the input: %w", err)
	}
	req.Input = bytes.ReplaceAll(req.Input, []byte("\r\n"), []byte("\n"))
	req.Node = strings.TrimSpace(req.Node)
	if len(bytes.TrimSpace(req.Input)) == 0 {
		return req, http.StatusBadRequest, errors.New("the input is empty: paste log lines, event-stream frames or event XML")
	}
	return req, 0, nil
}

func (h *Handler) runPlayground(r *http.Request, req PlaygroundRequest) (*PlaygroundResult, error) {
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.PlaygroundTimeout)
	defer cancel()
	start := time.Now()
	res, err := h.cfg.Playground(ctx, req)
	if res != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		res.TimedOut = true
	}
	h.cfg.Log.Debug("web: playground", "bytes", len(req.Input), "took", time.Since(start), "err", err)
	return res, err
}

func (h *Handler) playgroundPost(w http.ResponseWriter, r *http.Request) {
	d := playgroundData{Enabled: h.cfg.Playground != nil, MaxBody: h.cfg.MaxBody}
	if !d.Enabled {
		h.renderError(w, http.StatusNotFound, "The playground is not available in this role.")
		return
	}
	req, status, err := h.readInput(w, r, true)
	d.Input, d.Node = string(req.Input), req.Node
	if err != nil {
		if status == http.StatusRequestEntityTooLarge {
			d.Input = "" // partial, and too large to echo
		}
		d.Err = err.Error()
		h.render(w, status, "playground", page{Title: "Playground", Nav: "playground", Data: d})
		return
	}
	res, err := h.runPlayground(r, req)
	d.Result = res
	if err != nil {
		d.Err = err.Error()
		h.render(w, http.StatusUnprocessableEntity, "playground", page{Title: "Playground", Nav: "playground", Data: d})
		return
	}
	h.render(w, http.StatusOK, "playground", page{Title: "Playground", Nav: "playground", Data: d})
}

func (h *Handler) apiPlayground(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Playground == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "the playground is not available in this role"})
		return
	}
	req, status, err := h.readInput(w, r, false)
	if err != nil {
		writeJSON(w, status, map[string]string{"error": err.Error()})
		return
	}
	res, err := h.runPlayground(r, req)
	if err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// --- formatting ---

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "—"
	}
	return fmtTime(*t)
}

// ago is a short relative time ("3m ago").
func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	if d < 0 {
		return "in " + fmtDuration(-d.Round(time.Second))
	}
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s ago"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h ago"
	}
	return strconv.Itoa(int(d.Hours()/24)) + "d ago"
}

// fmtDuration prints 15m, 1h30m, 45s rather than 15m0s.
func fmtDuration(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	s := d.String()
	for _, suf := range []string{"m0s", "h0m"} {
		if strings.HasSuffix(s, suf) {
			s = strings.TrimSuffix(s, suf[1:])
		}
	}
	return s
}

// fmtFields prints an event's fields as sorted key=value pairs, clipped.
func fmtFields(m map[string]any) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		v := fmt.Sprint(m[k])
		if strings.ContainsAny(v, " \t\"") || v == "" {
			v = strconv.Quote(v)
		}
		b.WriteString(k + "=" + v)
	}
	return clip(b.String(), 600)
}

func fmtBytes(n int64) string {
	if n%(1<<20) == 0 {
		return strconv.FormatInt(n>>20, 10) + " MiB"
	}
	if n%(1<<10) == 0 {
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
