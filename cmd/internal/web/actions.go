package web

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/rules"
	"github.com/klaxon-dev/klaxon/sinks/silence"
)

// maxForm caps the body of a form that changes something.
const maxForm = 64 << 10

// checkChange decides whether r may change something: it must come from a
// page of this origin (Origin and Sec-Fetch-Site, against cross-site
// forms), and carry the token when one is configured (Authorization:
// Bearer, or the form field "token"). It answers 0 when allowed.
func (h *Handler) checkChange(r *http.Request) (int, string) {
	site := r.Header.Get("Sec-Fetch-Site")
	switch o := r.Header.Get("Origin"); {
	case o == "null" && site == "same-origin":
		// an opaque origin the browser itself says is this site (a page
		// sent with no-referrer)
	case o != "":
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return http.StatusForbidden, "refused: the request comes from another site (" + o + ")"
		}
	}
	switch site {
	case "", "same-origin", "none":
	default:
		return http.StatusForbidden, "refused: the request comes from another site"
	}
	if !h.cfg.Token.IsSet() {
		return 0, ""
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		got = r.PostFormValue("token")
	}
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(h.cfg.Token.Reveal())) != 1 {
		return http.StatusUnauthorized, "the token (http.token) is required to change silences"
	}
	return 0, ""
}

// parseSilenceForm reads the fields every silence form has: duration,
// comment, author.
func parseSilenceForm(r *http.Request, now time.Time) (s silence.Silence, errs []error) {
	comment := strings.TrimSpace(r.PostFormValue("comment"))
	if comment == "" {
		errs = append(errs, errors.New("a comment is required: say why"))
	}
	d, err := rules.ParseDuration(r.PostFormValue("duration"))
	if err != nil || d <= 0 {
		errs = append(errs, fmt.Errorf("duration %q: want a positive duration such as 2h or 1d", r.PostFormValue("duration")))
	}
	author := strings.TrimSpace(r.PostFormValue("author"))
	if author == "" {
		author = "web"
	}
	return silence.Silence{StartsAt: now, EndsAt: now.Add(d), Comment: comment, CreatedBy: author}, errs
}

// silenceIncident is POST /incidents/{id}/silence: silences the incident,
// the rule on its node, or its node, for a duration with a comment, then
// goes back to the incident page.
func (h *Handler) silenceIncident(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	_ = r.ParseForm()
	d, status, msg := h.incidentData(r)
	if status != http.StatusOK {
		h.renderError(w, status, msg)
		return
	}
	if d.Form == nil {
		h.renderError(w, http.StatusConflict, "This incident cannot be silenced here (it is resolved, or silences are not available in this role).")
		return
	}
	f := d.Form
	f.Scope, f.Duration = r.PostFormValue("scope"), r.PostFormValue("duration")
	f.Comment, f.Author = r.PostFormValue("comment"), r.PostFormValue("author")
	fail := func(status int, msg string) {
		f.Err = msg
		h.renderIncident(w, status, d)
	}
	if status, msg := h.checkChange(r); status != 0 {
		fail(status, msg)
		return
	}
	now := h.cfg.Now()
	sil, errs := parseSilenceForm(r, now)
	i := slices.IndexFunc(f.Scopes, func(s silenceScope) bool { return s.Value == f.Scope })
	if i < 0 {
		errs = append(errs, fmt.Errorf("scope %q: want one of the choices", f.Scope))
	} else {
		sil.Matchers, errs = parseMatchers(sil.Matchers, f.Scopes[i].Matchers, errs)
	}
	if err := errors.Join(errs...); err != nil {
		fail(http.StatusBadRequest, err.Error())
		return
	}
	sil, err := h.cfg.Silences.Add(r.Context(), sil, now)
	if err != nil {
		fail(http.StatusBadGateway, err.Error())
		return
	}
	h.cfg.Log.Info("silence added from the web view", "silence", sil.ID, "matchers", matcherText(sil.Matchers), "ends_at", sil.EndsAt, "created_by", sil.CreatedBy)
	http.Redirect(w, r, "/incidents/"+url.PathEscape(d.In.ID)+"?silenced="+url.QueryEscape(sil.ID), http.StatusSeeOther)
}

// silencesData is the /silences page.
type silencesData struct {
	Available     bool
	Active        []silenceRow
	Expired       []silenceRow
	TokenRequired bool
	Durations     []string
	// The new-silence form, kept on an error.
	Matchers, Duration, Comment, Author string
	Err, Done                           string
}

type silenceRow struct {
	silence.Silence
	State    string
	Matchers string
}

func (h *Handler) silencesData(r *http.Request) (silencesData, error) {
	d := silencesData{Available: h.cfg.Silences != nil, TokenRequired: h.cfg.Token.IsSet(), Durations: silenceDurations, Duration: "2h"}
	if !d.Available {
		return d, nil
	}
	all, err := h.cfg.Silences.List(r.Context())
	now := h.cfg.Now()
	for _, s := range all {
		row := silenceRow{Silence: s, State: s.State(now), Matchers: matcherText(s.Matchers)}
		if row.State == silence.StateExpired {
			d.Expired = append(d.Expired, row)
		} else {
			d.Active = append(d.Active, row)
		}
	}
	return d, err
}

// silencesPage is GET /silences: the silences, with a form to add one and
// a button to expire each.
func (h *Handler) silencesPage(w http.ResponseWriter, r *http.Request) {
	d, err := h.silencesData(r)
	if err != nil {
		d.Err = err.Error()
	}
	d.Done = r.URL.Query().Get("done")
	h.render(w, http.StatusOK, "silences", page{Title: "Silences", Nav: "silences", Data: d})
}

func (h *Handler) silencesFail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	d, err := h.silencesData(r)
	if err != nil {
		msg += "; " + err.Error()
	}
	d.Matchers, d.Duration, d.Comment, d.Author = r.PostFormValue("matchers"), r.PostFormValue("duration"), r.PostFormValue("comment"), r.PostFormValue("author")
	d.Err = msg
	h.render(w, status, "silences", page{Title: "Silences", Nav: "silences", Data: d})
}

// silencesForm reads the form of a change of the silences, and reports
// whether the change may go ahead (else the answer is written).
func (h *Handler) silencesForm(w http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	_ = r.ParseForm()
	if h.cfg.Silences == nil {
		h.renderError(w, http.StatusNotFound, "Silences are not available in this role.")
		return false
	}
	if status, msg := h.checkChange(r); status != 0 {
		h.silencesFail(w, r, status, msg)
		return false
	}
	return true
}

// silencesAdd is POST /silences: a silence of the given matchers
// (Alertmanager's grammar, separated by spaces or commas).
func (h *Handler) silencesAdd(w http.ResponseWriter, r *http.Request) {
	if !h.silencesForm(w, r) {
		return
	}
	now := h.cfg.Now()
	sil, errs := parseSilenceForm(r, now)
	fields := splitMatchers(r.PostFormValue("matchers"))
	if len(fields) == 0 {
		errs = append(errs, errors.New("at least one matcher is required (rule=…, node=…, team=…)"))
	}
	sil.Matchers, errs = parseMatchers(sil.Matchers, fields, errs)
	if err := errors.Join(errs...); err != nil {
		h.silencesFail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	sil, err := h.cfg.Silences.Add(r.Context(), sil, now)
	if err != nil {
		h.silencesFail(w, r, http.StatusBadGateway, err.Error())
		return
	}
	h.cfg.Log.Info("silence added from the web view", "silence", sil.ID, "matchers", matcherText(sil.Matchers), "ends_at", sil.EndsAt, "created_by", sil.CreatedBy)
	http.Redirect(w, r, "/silences?done="+url.QueryEscape("added "+sil.ID), http.StatusSeeOther)
}

// parseMatchers appends the matchers ms to to, and their errors to errs.
func parseMatchers(to []silence.Matcher, ms []string, errs []error) ([]silence.Matcher, []error) {
	for _, m := range ms {
		pm, err := silence.ParseMatcher(m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		to = append(to, pm)
	}
	return to, errs
}

// splitMatchers splits "rule=a, node=b team=\"x y\"" into matchers:
// spaces and commas separate them outside double quotes.
func splitMatchers(s string) []string {
	var out []string
	var cur strings.Builder
	quoted, escaped := false, false
	flush := func() {
		if t := strings.TrimSpace(cur.String()); t != "" {
			out = append(out, t)
		}
		cur.Reset()
	}
	for _, c := range strings.TrimSpace(strings.Trim(strings.TrimSpace(s), "{}")) {
		switch {
		case escaped:
			escaped = false
		case c == '\\' && quoted:
			escaped = true
		case c == '"':
			quoted = !quoted
		case !quoted && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			flush()
			continue
		}
		cur.WriteRune(c)
	}
	flush()
	return out
}

// silencesExpire is POST /silences/{id}/expire.
func (h *Handler) silencesExpire(w http.ResponseWriter, r *http.Request) {
	if !h.silencesForm(w, r) {
		return
	}
	id := r.PathValue("id")
	s, err := h.cfg.Silences.Expire(r.Context(), id, h.cfg.Now())
	switch {
	case errors.Is(err, silence.ErrNotFound):
		h.silencesFail(w, r, http.StatusNotFound, err.Error())
		return
	case err != nil:
		h.silencesFail(w, r, http.StatusConflict, err.Error())
		return
	}
	h.cfg.Log.Info("silence expired from the web view", "silence", s.ID)
	back := "/silences?done=" + url.QueryEscape("expired "+s.ID)
	if to := r.PostFormValue("back"); strings.HasPrefix(to, "/incidents/") && !strings.ContainsAny(to, "\\\r\n") && !strings.HasPrefix(to, "//") {
		back = to
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}
