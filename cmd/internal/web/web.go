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
	"hash/fnv"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/history"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
	"github.com/klaxon-dev/klaxon/sinks/silence"
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

	// Silences, when set, shows which incidents a silence mutes and lets
	// the pages add and expire silences (/silences, the incident page).
	Silences Silences
	// Token is the bearer token that changes need (http.token): sent as
	// Authorization: Bearer or, from the pages' forms, as the field
	// "token". Unset: no token (allowed on loopback only).
	Token ingest.Secret
	// Inhibited lists the incidents an inhibition holds back now (the
	// correlator's held-back groups); nil shows none.
	Inhibited func() []correlate.Inhibited
	// History searches the incident history (KLAXON_INCIDENTS); nil:
	// /history is unavailable.
	History func(ctx context.Context, q history.Query) (history.Result, error)
	// HistoryGet reads one incident from the history; nil: only the
	// incidents of the live view have a page.
	HistoryGet func(ctx context.Context, id string, hint history.Hint) (history.Detail, error)
}

// Silences is what the web view reads and changes silences through;
// *silence.Store implements it.
type Silences interface {
	// SilenceFor returns the active silence that mutes in (from memory).
	SilenceFor(in correlate.Incident, now time.Time) (silence.Silence, bool)
	List(ctx context.Context) ([]silence.Silence, error)
	Add(ctx context.Context, s silence.Silence, now time.Time) (silence.Silence, error)
	Expire(ctx context.Context, id string, now time.Time) (silence.Silence, error)
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
		"shown":   shownStatus,
		"since":   func(a, b time.Time) string { return fmtDuration(b.Sub(a).Round(time.Second)) },
		"rfc3339": func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
		"list":    func(s ...string) []string { return s },
	}
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/parts.html"))
	for _, page := range []string{"index", "incident", "rules", "playground", "error", "history", "silences"} {
		t := template.Must(template.Must(base.Clone()).ParseFS(templateFS, "templates/"+page+".html"))
		h.tmpl[page] = t
	}
	return h
}

// Register mounts the web view's routes on mux: /, /incidents/{id} (and
// POST …/silence), /rules, /playground, /history, /silences, /api/… and
// /static/….
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
	mux.Handle("POST /incidents/{id}/silence", h.wrap(h.silenceIncident))
	mux.Handle("GET /silences", h.wrap(h.silencesPage))
	mux.Handle("POST /silences", h.wrap(h.silencesAdd))
	mux.Handle("POST /silences/{id}/expire", h.wrap(h.silencesExpire))
	mux.Handle("GET /history", h.wrap(h.historyPage))
	mux.Handle("GET /api/history", h.wrap(h.apiHistory))
	mux.Handle("GET /api/history/{id}", h.wrap(h.apiHistoryGet))
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
		hd.Set("Referrer-Policy", "same-origin") // forms send their Origin; other sites learn nothing
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
	Open, Resolved []row
	Inhibited      []correlate.Inhibited
	ResolvedFor    time.Duration
	Version        uint64
	// History says whether /history is available.
	History bool
}

// row is an incident as the lists show it: what on-call thinks of its
// status (firing or resolved) and the silence that mutes it, if any.
type row struct {
	correlate.Incident
	Shown   string       `json:"display_status"`
	Silence *silenceInfo `json:"silenced_by,omitempty"`
}

// silenceInfo is the silence that mutes an incident.
type silenceInfo struct {
	ID        string    `json:"id"`
	EndsAt    time.Time `json:"ends_at"`
	CreatedBy string    `json:"created_by"`
	Comment   string    `json:"comment"`
	Matchers  string    `json:"matchers"`
}

// shownStatus is the status on-call reads: an incident fires until it
// resolved ("updated" is a change of a firing incident, not a state).
func shownStatus(status string) string {
	if status == correlate.StatusResolved {
		return correlate.StatusResolved
	}
	return correlate.StatusFiring
}

// silenceOf returns the silence that mutes in now (nil: none, or in is
// resolved).
func (h *Handler) silenceOf(in correlate.Incident, now time.Time) *silenceInfo {
	if h.cfg.Silences == nil || in.Status == correlate.StatusResolved {
		return nil
	}
	s, ok := h.cfg.Silences.SilenceFor(in, now)
	if !ok {
		return nil
	}
	return &silenceInfo{ID: s.ID, EndsAt: s.EndsAt, CreatedBy: s.CreatedBy, Comment: s.Comment, Matchers: matcherText(s.Matchers)}
}

func matcherText(ms []silence.Matcher) string {
	var parts []string
	for _, m := range ms {
		parts = append(parts, m.String())
	}
	return strings.Join(parts, " ")
}

func (h *Handler) rows(ins []correlate.Incident, now time.Time) []row {
	out := make([]row, 0, len(ins))
	for _, in := range ins {
		out = append(out, row{Incident: in, Shown: shownStatus(in.Status), Silence: h.silenceOf(in, now)})
	}
	return out
}

func (h *Handler) indexData() indexData {
	now := h.cfg.Now()
	v := h.cfg.Incidents.Version()
	open, resolved := h.cfg.Incidents.List(now.Add(-h.cfg.ResolvedFor))
	d := indexData{Open: h.rows(open, now), Resolved: h.rows(resolved, now), ResolvedFor: h.cfg.ResolvedFor, Version: v, History: h.cfg.History != nil}
	if h.cfg.Inhibited != nil {
		d.Inhibited = h.cfg.Inhibited()
	}
	return d
}

func (h *Handler) index(w http.ResponseWriter, r *http.Request) {
	h.render(w, http.StatusOK, "index", page{Title: "Incidents", Nav: "incidents", Data: h.indexData()})
}

// apiIncident is an incident as /api/incidents lists it: no evidence,
// with the status on-call reads and the silence that mutes it.
type apiIncident struct {
	row
	Evidence []correlate.Evidence `json:"evidence,omitempty"`
	URL      string               `json:"url"`
}

func listed(rs []row) []apiIncident {
	out := make([]apiIncident, 0, len(rs))
	for _, r := range rs {
		out = append(out, apiIncident{row: r, URL: "/incidents/" + r.ID})
	}
	return out
}

// apiIncidents serves {"open":[…],"resolved":[…]}; the ETag follows the
// store's version, so polling an unchanged view costs a 304.
func (h *Handler) apiIncidents(w http.ResponseWriter, r *http.Request) {
	d := h.indexData()
	etag := fmt.Sprintf(`W/"%d-%d-%s"`, d.Version, h.cfg.Now().Unix()/60, h.extraTag(d))
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-cache")
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	inhibited := d.Inhibited
	if inhibited == nil {
		inhibited = []correlate.Inhibited{}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"open":      listed(d.Open),
		"resolved":  listed(d.Resolved),
		"inhibited": inhibited,
		"version":   d.Version,
		"now":       h.cfg.Now().UTC(),
	})
}

// --- one incident ---

type incidentData struct {
	In       correlate.Incident
	Shown    string
	Silence  *silenceInfo
	Timeline timeline
	Rule     *rules.Rule
	// FromHistory is set when the incident came from KLAXON_INCIDENTS,
	// not the live view; Changes and Occurrences come from there.
	FromHistory bool
	Changes     []history.Change
	Occurrences []history.Occurrence
	// Form is the silence form (nil: silences unavailable or the incident
	// resolved).
	Form *silenceForm
}

// silenceForm is the incident page's "silence this" form.
type silenceForm struct {
	Action        string
	Scopes        []silenceScope
	Scope         string
	Durations     []string
	Duration      string
	Comment       string
	Author        string
	TokenRequired bool
	Err           string
	// Done names the silence just added (after the redirect).
	Done string
}

// silenceScope is one choice of what to silence: its matchers.
type silenceScope struct {
	Value, Label string
	Matchers     []string
}

var silenceDurations = []string{"30m", "1h", "2h", "4h", "8h", "1d", "3d", "7d"}

func incidentScopes(in correlate.Incident) []silenceScope {
	sc := []silenceScope{{Value: "incident", Label: "this incident", Matchers: []string{"id=" + in.ID}}}
	if in.Node != "" {
		sc = append(sc,
			silenceScope{Value: "rule-node", Label: "rule " + in.Rule + " on node " + in.Node, Matchers: []string{"rule=" + in.Rule, "node=" + in.Node}},
			silenceScope{Value: "node", Label: "everything on node " + in.Node, Matchers: []string{"node=" + in.Node}})
	}
	return sc
}

func (h *Handler) incident(w http.ResponseWriter, r *http.Request) {
	d, status, msg := h.incidentData(r)
	if status != http.StatusOK {
		h.renderError(w, status, msg)
		return
	}
	if d.Form != nil {
		d.Form.Done = r.URL.Query().Get("silenced")
	}
	h.renderIncident(w, http.StatusOK, d)
}

func (h *Handler) renderIncident(w http.ResponseWriter, status int, d incidentData) {
	body := d.In.ID
	if d.FromHistory {
		body = "" // not live: the page does not poll
	}
	h.render(w, status, "incident", page{Title: d.In.Title, Nav: "incidents", Data: d, BodyID: body})
}

// incidentData finds an incident: in the live view, else (with
// ?started= and ?rule= as hints) in the history.
func (h *Handler) incidentData(r *http.Request) (incidentData, int, string) {
	id := r.PathValue("id")
	now := h.cfg.Now()
	var d incidentData
	in, ok := h.cfg.Incidents.Get(id)
	started, _ := time.Parse(time.RFC3339Nano, r.URL.Query().Get("started"))
	if ok && !started.IsZero() && !in.StartedAt.Equal(started) {
		ok = false // an earlier occurrence, asked from the history page
	}
	hint := history.Hint{Rule: r.URL.Query().Get("rule"), Started: started}
	if ok {
		hint = history.Hint{Rule: in.Rule, Started: in.StartedAt}
	}
	if !hint.Started.IsZero() {
		hint.Since = hint.Started.Add(-time.Hour) // changes are stored after their time, give or take clock skew
	}
	if h.cfg.HistoryGet != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
		hd, err := h.cfg.HistoryGet(ctx, id, hint)
		cancel()
		switch {
		case err == nil:
			d.Changes, d.Occurrences = hd.Changes, hd.Occurrences
			if !ok {
				in, ok, d.FromHistory = hd.Incident, true, true
			}
		case errors.Is(err, history.ErrNotFound):
		default:
			h.cfg.Log.Warn("web: incident history", "incident", id, "err", err)
		}
	}
	if !ok {
		return d, http.StatusNotFound, "No incident " + id + " in the live view or the history."
	}
	d.In, d.Shown, d.Timeline = in, shownStatus(in.Status), newTimeline(in)
	if !d.FromHistory {
		d.Silence = h.silenceOf(in, now)
	}
	if set := h.cfg.Rules(); set != nil {
		d.Rule = set.Rule(in.Rule)
	}
	if h.cfg.Silences != nil && in.Status != correlate.StatusResolved {
		d.Form = &silenceForm{Action: "/incidents/" + url.PathEscape(in.ID) + "/silence", Scopes: incidentScopes(in), Scope: "incident",
			Durations: silenceDurations, Duration: "2h", TokenRequired: h.cfg.Token.IsSet()}
	}
	return d, http.StatusOK, ""
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
	// Kind is what fires the rule: "count" (the when condition over the
	// window), "sequence" (ordered steps within a span) or "absence" (an
	// event not followed by another in time); Chained marks a rule over
	// other rules' incidents.
	Kind    string   `json:"kind"`
	Chained bool     `json:"chained,omitempty"`
	Steps   []string `json:"steps,omitempty"`  // sequence: the selectors in order
	Join    []string `json:"join,omitempty"`   // sequence: the join key
	Within  string   `json:"within,omitempty"` // sequence span, absence deadline
	After   string   `json:"after,omitempty"`  // absence: the event that starts the wait
	Expect  string   `json:"expect,omitempty"` // absence: the event that must follow
	// For, KeepFiringFor and InhibitedBy as the rule sets them.
	For           string   `json:"for,omitempty"`
	KeepFiringFor string   `json:"keep_firing_for,omitempty"`
	InhibitedBy   []string `json:"inhibited_by,omitempty"`
	Place         string   `json:"place"`
	Matches       uint64   `json:"matches"`
	ActiveGroups  int      `json:"active_groups"`
	Open          int      `json:"open_incidents"`
	MaxMatches    uint64   `json:"-"`
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
		describeRule(&row, r)
		if row.When == "" && row.Kind == "count" {
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

// describeRule says what kind of rule r is and fills in its parts.
func describeRule(row *ruleRow, r *rules.Rule) {
	sel := func(i int) string {
		if i >= 0 && i < len(r.Selectors) {
			return r.Selectors[i].Name
		}
		return "?"
	}
	switch {
	case r.Absence != nil:
		row.Kind = "absence"
		row.After, row.Expect, row.Within = sel(r.Absence.After), sel(r.Absence.Expect), fmtDuration(r.Absence.Within)
		row.When = "" // not used by an absence
	case r.Sequence != nil:
		row.Kind = "sequence"
		for _, st := range r.Sequence.Steps {
			row.Steps = append(row.Steps, sel(st.Selector))
			if len(st.By) > 0 && row.Join == nil {
				row.Join = st.By
			}
		}
		row.Within = fmtDuration(r.Sequence.Within)
	default:
		row.Kind = "count"
	}
	for _, s := range r.Selectors {
		if strings.Contains(s.Expr, `"klaxon.incident"`) {
			row.Chained = true
		}
	}
	if r.For > 0 {
		row.For = fmtDuration(r.For)
	}
	if r.KeepFiringFor > 0 {
		row.KeepFiringFor = fmtDuration(r.KeepFiringFor)
	}
	row.InhibitedBy = r.InhibitedBy
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

// extraTag is the part of /api/incidents's ETag that the store's version
// does not cover: the silences that mute the incidents and the inhibited
// groups.
func (h *Handler) extraTag(d indexData) string {
	f := fnv.New64a()
	for _, rs := range [][]row{d.Open, d.Resolved} {
		for _, r := range rs {
			if r.Silence != nil {
				fmt.Fprintf(f, "%s=%s@%d;", r.ID, r.Silence.ID, r.Silence.EndsAt.UnixNano())
			}
		}
	}
	for _, in := range d.Inhibited {
		fmt.Fprintf(f, "%s:%d:%v;", in.ID, in.Count, in.By)
	}
	return strconv.FormatUint(f.Sum64(), 36)
}
