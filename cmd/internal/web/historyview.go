package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/history"
	"github.com/klaxon-dev/klaxon/rules"
)

// DefaultHistorySince is how far back /history looks without since.
const DefaultHistorySince = 7 * 24 * time.Hour

// historyTimeout bounds one history search.
const historyTimeout = 30 * time.Second

// ParseHistoryQuery reads a history query from URL parameters: node, job,
// rule, status, severity, q (text), since and until (RFC 3339, or a
// duration back from now such as 24h or 7d), limit. Without since it looks
// back defSince (0: the whole stream).
func ParseHistoryQuery(v url.Values, now time.Time, defSince time.Duration) (history.Query, error) {
	q := history.Query{
		Node: strings.TrimSpace(v.Get("node")), Job: strings.TrimSpace(v.Get("job")), Rule: strings.TrimSpace(v.Get("rule")),
		Status: strings.TrimSpace(v.Get("status")), Severity: strings.TrimSpace(v.Get("severity")), Text: strings.TrimSpace(v.Get("q")),
	}
	var errs []error
	when := func(name string) time.Time {
		s := strings.TrimSpace(v.Get(name))
		if s == "" {
			return time.Time{}
		}
		if t, ok := parseWhen(s, now); ok {
			return t
		}
		errs = append(errs, fmt.Errorf("%s %q: want a time (2026-11-30T08:00:00Z, 2026-11-30T08:00 UTC, 2026-11-30) or a duration back from now (24h, 7d)", name, s))
		return time.Time{}
	}
	q.Since, q.Until = when("since"), when("until")
	if v.Get("since") == "" && defSince > 0 {
		q.Since = now.Add(-defSince)
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			errs = append(errs, fmt.Errorf("limit %q: want a positive number", s))
		}
		q.Limit = n
	}
	if err := q.Normalize(); err != nil {
		errs = append(errs, err)
	}
	return q, errors.Join(errs...)
}

// parseWhen reads a time: RFC 3339, a datetime-local value or a date (UTC),
// or a duration back from now.
func parseWhen(s string, now time.Time) (time.Time, bool) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, true
		}
	}
	if d, err := rules.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), true
	}
	return time.Time{}, false
}

// historyData is the /history page.
type historyData struct {
	Available bool
	Form      url.Values
	Query     history.Query
	Result    history.Result
	Rows      []historyRow
	Rules     []string
	Err       string
	Took      time.Duration
	Searched  bool
}

type historyRow struct {
	history.Occurrence
	Shown string
	// Link is the incident's page (this occurrence).
	Link string
}

// IncidentLink is the page of one occurrence of an incident.
func IncidentLink(o history.Occurrence) string {
	return "/incidents/" + url.PathEscape(o.ID) + "?started=" + url.QueryEscape(o.StartedAt.UTC().Format(time.RFC3339Nano)) + "&rule=" + url.QueryEscape(o.Rule)
}

func (h *Handler) historyPage(w http.ResponseWriter, r *http.Request) {
	d := historyData{Available: h.cfg.History != nil, Form: r.URL.Query()}
	if set := h.cfg.Rules(); set != nil {
		for _, rl := range set.Rules {
			d.Rules = append(d.Rules, rl.ID)
		}
		slices.Sort(d.Rules)
	}
	if d.Form.Get("since") == "" {
		d.Form.Set("since", "7d")
	}
	status := http.StatusOK
	if d.Available {
		q, err := ParseHistoryQuery(r.URL.Query(), h.cfg.Now(), DefaultHistorySince)
		d.Query = q
		if err != nil {
			d.Err, status = err.Error(), http.StatusBadRequest
		} else {
			start := time.Now()
			ctx, cancel := context.WithTimeout(r.Context(), historyTimeout)
			d.Result, err = h.cfg.History(ctx, q)
			cancel()
			d.Took, d.Searched = time.Since(start).Round(time.Millisecond), true
			if err != nil {
				d.Err, status = err.Error(), http.StatusBadGateway
			}
			for _, o := range d.Result.Occurrences {
				d.Rows = append(d.Rows, historyRow{Occurrence: o, Shown: shownStatus(o.Status), Link: IncidentLink(o)})
			}
		}
	}
	h.render(w, status, "history", page{Title: "History", Nav: "history", Data: d})
}

// apiHistory is GET /api/history: the occurrences the parameters select
// (see ParseHistoryQuery; without since: the whole stream).
func (h *Handler) apiHistory(w http.ResponseWriter, r *http.Request) {
	if h.cfg.History == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "the incident history is not available in this role"})
		return
	}
	q, err := ParseHistoryQuery(r.URL.Query(), h.cfg.Now(), 0)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), historyTimeout)
	defer cancel()
	res, err := h.cfg.History(ctx, q)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	if res.Occurrences == nil {
		res.Occurrences = []history.Occurrence{}
	}
	writeJSON(w, http.StatusOK, res)
}

// apiHistoryGet is GET /api/history/{id}: one incident from the history
// (?started= picks an occurrence, ?rule= narrows the scan), with its
// changes and merged evidence.
func (h *Handler) apiHistoryGet(w http.ResponseWriter, r *http.Request) {
	if h.cfg.HistoryGet == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "the incident history is not available in this role"})
		return
	}
	hint := history.Hint{Rule: r.URL.Query().Get("rule")}
	if s := r.URL.Query().Get("started"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("started %q: want RFC 3339", s)})
			return
		}
		hint.Started, hint.Since = t, t.Add(-time.Hour)
	}
	ctx, cancel := context.WithTimeout(r.Context(), historyTimeout)
	defer cancel()
	d, err := h.cfg.HistoryGet(ctx, r.PathValue("id"), hint)
	switch {
	case errors.Is(err, history.ErrNotFound):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
	case err != nil:
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
	default:
		writeJSON(w, http.StatusOK, d)
	}
}
