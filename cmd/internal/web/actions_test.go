package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/cmd/internal/history"
	"github.com/klaxon-dev/klaxon/cmd/internal/web"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/sinks/silence"
)

// openBus opens an embedded bus (every stream and bucket) for a test.
func openBus(t *testing.T) *bus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := bus.Open(ctx, bus.Config{DataDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		_ = b.Close(cctx)
	})
	return b
}

// silenceStore is a started silence store on a real KLAXON_SILENCES.
func silenceStore(t *testing.T, b *bus.Bus) *silence.Store {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := silence.Open(ctx, b.JS, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

// post sends a form the way a page of the view does (same origin).
func (f *fixture) post(t *testing.T, path string, form url.Values, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", f.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", f.srv.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestSilenceFromThePages: the incident page silences the incident, its
// rule on its node, or its node, for a duration with a comment; the token
// is required when configured, a request from another site is refused;
// the lists and the API then show the incident as silenced, and expiring
// the silence from the page ends it.
func TestSilenceFromThePages(t *testing.T) {
	b := openBus(t)
	st := silenceStore(t, b)
	now := time.Now().UTC().Truncate(time.Second)
	f := newFixture(t, func(c *web.Config) {
		c.Silences, c.Token = st, ingest.Secret("s3cret")
		c.Now = func() time.Time { return now }
	})
	// The incident's latest change is "updated": the page says firing.
	_, body := f.get(t, "/incidents/abc123")
	for _, want := range []string{`<span class="status status-firing">firing</span>`, `id="silence-form"`, `name="token"`,
		`value="node"`, "node=win-client-7", "id=abc123", "rule=" + desktopHeap} {
		if !strings.Contains(body, want) {
			t.Errorf("incident page lacks %q", want)
		}
	}
	if strings.Contains(body, ">updated</span>") {
		t.Error(`incident page shows the status "updated"`)
	}
	form := url.Values{"scope": {"node"}, "duration": {"2h"}, "comment": {"rebooting the node"}, "author": {"alice"}}
	if resp, body := f.post(t, "/incidents/abc123/silence", form); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "token") ||
		!strings.Contains(body, `value="rebooting the node"`) {
		t.Errorf("without token: %d %.300s", resp.StatusCode, body)
	}
	form.Set("token", "s3cret")
	if resp, _ := f.post(t, "/incidents/abc123/silence", form, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("from another site: %d", resp.StatusCode)
	}
	bad := url.Values{"scope": {"node"}, "duration": {"soon"}, "comment": {""}, "token": {"s3cret"}}
	if resp, body := f.post(t, "/incidents/abc123/silence", bad); resp.StatusCode != http.StatusBadRequest ||
		!strings.Contains(body, "a comment is required") || !strings.Contains(body, `duration &#34;soon&#34;`) {
		t.Errorf("bad form: %d %.600s", resp.StatusCode, body)
	}
	if all, _ := st.List(context.Background()); len(all) != 0 {
		t.Fatalf("silences stored by refused requests: %+v", all)
	}
	resp, _ := f.post(t, "/incidents/abc123/silence", form)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/incidents/abc123?silenced=") {
		t.Fatalf("silence: %d %q", resp.StatusCode, loc)
	}
	all, err := st.List(context.Background())
	if err != nil || len(all) != 1 {
		t.Fatalf("stored %+v %v", all, err)
	}
	sil := all[0]
	if got := sil.Matchers[0].String(); len(sil.Matchers) != 1 || got != "node=win-client-7" || sil.CreatedBy != "alice" ||
		sil.Comment != "rebooting the node" || !sil.EndsAt.Equal(now.Add(2*time.Hour)) {
		t.Errorf("silence %+v", sil)
	}
	_, body = f.get(t, loc)
	for _, want := range []string{`id="silence-done"`, `id="silenced"`, "rebooting the node", `class="badge silenced"`, `action="/silences/` + sil.ID + `/expire"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page after silencing lacks %q", want)
		}
	}
	_, body = f.get(t, "/")
	if !regexp.MustCompile(`<tr data-id="abc123" class="is-silenced">\s*<td class="badges">.*badge silenced`).MatchString(body) {
		t.Errorf("index row not marked silenced:\n%.2000s", body)
	}
	var api struct {
		Open []struct {
			ID            string `json:"id"`
			DisplayStatus string `json:"display_status"`
			Status        string `json:"status"`
			SilencedBy    *struct {
				ID, Comment, Matchers string
			} `json:"silenced_by"`
		}
	}
	_, raw := f.get(t, "/api/incidents")
	if err := json.Unmarshal([]byte(raw), &api); err != nil || len(api.Open) == 0 {
		t.Fatalf("%v: %s", err, raw)
	}
	if o := api.Open[0]; o.DisplayStatus != "firing" || o.Status != "updated" || o.SilencedBy == nil || o.SilencedBy.ID != sil.ID || o.SilencedBy.Matchers != "node=win-client-7" {
		t.Errorf("api open %+v", api.Open)
	}

	// Expire from the incident page: back there, no longer silenced.
	resp, _ = f.post(t, "/silences/"+sil.ID+"/expire", url.Values{"token": {"s3cret"}, "back": {"/incidents/abc123"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/incidents/abc123" {
		t.Errorf("expire: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	now = now.Add(time.Second)
	if _, ok := st.SilenceFor(correlate.Incident{Node: "win-client-7"}, now); ok {
		t.Error("still silenced after expire")
	}
	if _, body := f.get(t, "/"); strings.Contains(body, `class="badge silenced"`) {
		t.Error("index still shows a silenced incident")
	}
	// An open redirect is not taken.
	s2, _ := st.Add(context.Background(), silence.Silence{Matchers: sil.Matchers, EndsAt: now.Add(time.Hour), Comment: "x", CreatedBy: "t"}, now)
	if resp, _ := f.post(t, "/silences/"+s2.ID+"/expire", url.Values{"token": {"s3cret"}, "back": {"//evil.example/x"}}); resp.Header.Get("Location") == "//evil.example/x" {
		t.Error("expire redirected off the site")
	}
}

// TestSilencesPage: /silences lists silences and adds one from matchers in
// Alertmanager's grammar; without a configured token none is asked for.
func TestSilencesPage(t *testing.T) {
	b := openBus(t)
	st := silenceStore(t, b)
	f := newFixture(t, func(c *web.Config) { c.Silences = st; c.Now = time.Now })
	_, body := f.get(t, "/silences")
	if !strings.Contains(body, `id="new-silence"`) || strings.Contains(body, `name="token"`) || !strings.Contains(body, "No active or pending silence") {
		t.Errorf("empty page: %.1500s", body)
	}
	form := url.Values{"matchers": {`{rule=~"nomad\\.task\\..*", team="pay ments"}`}, "duration": {"90m"}, "comment": {"deploy"}}
	resp, _ := f.post(t, "/silences", form)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("add: %d", resp.StatusCode)
	}
	all, _ := st.List(context.Background())
	if len(all) != 1 || len(all[0].Matchers) != 2 || all[0].Matchers[0].Value != `nomad\.task\..*` || all[0].Matchers[1].Value != "pay ments" ||
		all[0].CreatedBy != "web" || all[0].EndsAt.Sub(all[0].StartsAt) != 90*time.Minute {
		t.Fatalf("stored %+v", all)
	}
	_, body = f.get(t, "/silences")
	if !strings.Contains(body, `<tr id="`+all[0].ID+`">`) || !strings.Contains(body, "team=&#34;pay ments&#34;") || !strings.Contains(body, ">active<") {
		t.Errorf("list: %.3000s", body)
	}
	if resp, body := f.post(t, "/silences", url.Values{"matchers": {"rule=~("}, "duration": {"1h"}, "comment": {"x"}}); resp.StatusCode != http.StatusBadRequest ||
		!strings.Contains(body, "missing closing )") || !strings.Contains(body, `value="rule=~("`) {
		t.Errorf("bad matcher: %d %.500s", resp.StatusCode, body)
	}
	// Without Silences the pages say so and refuse changes.
	g := newFixture(t, nil)
	if _, body := g.get(t, "/silences"); !strings.Contains(body, "not available") {
		t.Error("no silences: page does not say so")
	}
	if _, body := g.get(t, "/incidents/abc123"); strings.Contains(body, "silence-form") {
		t.Error("no silences: incident page offers a form")
	}
}

// TestInhibitedListed: the groups an inhibition holds back are listed as
// such on / and in /api/incidents.
func TestInhibitedListed(t *testing.T) {
	held := []correlate.Inhibited{{ID: "ffff01", Rule: "nomad.task.crash_loop", Severity: "error", Node: "edge-9",
		Title: "Crash loop of task app", By: []string{"nomad.node.disconnected"}, Count: 3, Last: at(1990)}}
	f := newFixture(t, func(c *web.Config) { c.Inhibited = func() []correlate.Inhibited { return held } })
	_, body := f.get(t, "/")
	for _, want := range []string{`id="inhibited-section">`, `<tr data-id="ffff01" class="is-inhibited">`, `badge inhibited`, "<code>nomad.node.disconnected</code>", "Crash loop of task app"} {
		if !strings.Contains(body, want) {
			t.Errorf("/ lacks %q", want)
		}
	}
	resp, raw := f.get(t, "/api/incidents")
	if !strings.Contains(raw, `"inhibited_by": [`) || !strings.Contains(raw, `"nomad.node.disconnected"`) {
		t.Errorf("api: %s", raw)
	}
	etag := resp.Header.Get("ETag")
	held[0].Count = 4
	if resp, _ := f.get(t, "/api/incidents", "If-None-Match", etag); resp.StatusCode != http.StatusOK {
		t.Errorf("inhibited group changed: %d, want 200 (new ETag)", resp.StatusCode)
	}
	g := newFixture(t, nil)
	if _, body := g.get(t, "/"); !strings.Contains(body, `id="inhibited-section" hidden`) {
		t.Error("no inhibited groups: the section is not hidden")
	}
}

// TestHistoryPages: /history passes the search to the history and lists
// what it found, newest first, linking each occurrence; an incident no
// longer in the live view has its page from the history, with its changes.
func TestHistoryPages(t *testing.T) {
	var asked []history.Query
	resolved := at(-3000)
	old := history.Occurrence{Incident: correlate.Incident{ID: "old1", Rule: "nomad.task.crash_loop", Status: "resolved", Severity: "error",
		Node: "vm", Title: "Crash loop of job pay", StartedAt: at(-4000), UpdatedAt: resolved, ResolvedAt: &resolved, Count: 7,
		Group: map[string]string{"fields.job": "pay"}, Evidence: []correlate.Evidence{{Time: at(-4000), Source: "nomad.log", Msg: "restarting"}}},
		Job: "pay", Changes: 3}
	f := newFixture(t, func(c *web.Config) {
		c.History = func(_ context.Context, q history.Query) (history.Result, error) {
			asked = append(asked, q)
			return history.Result{Occurrences: []history.Occurrence{old}, Total: 1, Scanned: 42}, nil
		}
		c.HistoryGet = func(_ context.Context, id string, hint history.Hint) (history.Detail, error) {
			if id != "old1" {
				return history.Detail{}, history.ErrNotFound
			}
			return history.Detail{Incident: old.Incident, Occurrences: []history.Occurrence{old}, Changes: []history.Change{
				{Seq: 1, Status: "firing", At: at(-4000), Count: 2}, {Seq: 2, Status: "updated", At: at(-3900), Count: 7}, {Seq: 3, Status: "resolved", At: at(-3000), Count: 7},
			}}, nil
		}
	})
	resp, body := f.get(t, "/history?node=vm&job=pay&status=resolved&since=30d&q=crash")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if len(asked) != 1 || asked[0].Node != "vm" || asked[0].Job != "pay" || asked[0].Status != "resolved" || asked[0].Text != "crash" ||
		!asked[0].Since.Equal(at(2000).Add(-30*24*time.Hour)) {
		t.Errorf("asked %+v", asked)
	}
	for _, want := range []string{`id="history"`, `href="/incidents/old1?started=`, "Crash loop of job pay", `data-label="job">pay<`, "42 changes read", `value="vm"`} {
		if !strings.Contains(body, want) {
			t.Errorf("/history lacks %q", want)
		}
	}
	if resp, body := f.get(t, "/history?since=yesterday-ish"); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `id="history-error"`) {
		t.Errorf("bad since: %d", resp.StatusCode)
	}
	_, body = f.get(t, "/incidents/old1?started="+url.QueryEscape(at(-4000).Format(time.RFC3339Nano)))
	for _, want := range []string{"From the incident history", `id="changes"`, ">resolved<", "Crash loop of job pay", `id="timeline"`} {
		if !strings.Contains(body, want) {
			t.Errorf("history incident page lacks %q", want)
		}
	}
	if strings.Contains(body, "data-incident=") || strings.Contains(body, "silence-form") {
		t.Error("a history page polls or offers a silence")
	}
	if resp, _ := f.get(t, "/incidents/nope"); resp.StatusCode != 404 {
		t.Errorf("unknown incident: %d", resp.StatusCode)
	}
	var d history.Detail
	if resp, raw := f.get(t, "/api/history/old1"); resp.StatusCode != 200 || json.Unmarshal([]byte(raw), &d) != nil || len(d.Changes) != 3 {
		t.Errorf("api/history/old1: %d %.300s", resp.StatusCode, raw)
	}
	var res history.Result
	if resp, raw := f.get(t, "/api/history?rule=nomad.task.crash_loop"); resp.StatusCode != 200 || json.Unmarshal([]byte(raw), &res) != nil || res.Total != 1 {
		t.Errorf("api/history: %d %.300s", resp.StatusCode, raw)
	}
	if !asked[len(asked)-1].Since.IsZero() {
		t.Errorf("the API without since bounded the search: %+v", asked[len(asked)-1])
	}
	if resp, _ := f.get(t, "/api/history/nope"); resp.StatusCode != 404 {
		t.Errorf("api/history/nope: %d", resp.StatusCode)
	}
	g := newFixture(t, nil)
	if _, body := g.get(t, "/history"); !strings.Contains(body, "not available") {
		t.Error("no history: page does not say so")
	}
	_ = errors.New
}

// TestRulesPageKinds: the rules page says what fires each rule: a count,
// a sequence (its steps in order) or an absence (what must follow what).
func TestRulesPageKinds(t *testing.T) {
	f := newFixture(t, nil)
	_, body := f.get(t, "/rules")
	row := func(id string) string {
		i := strings.Index(body, `<tr id="`+id+`">`)
		if i < 0 {
			t.Fatalf("no row %s", id)
		}
		j := strings.Index(body[i:], "</tr>")
		return body[i : i+j]
	}
	seq := row("nomad.client.reconnect_churn")
	if !strings.Contains(seq, `<span class="kind kind-sequence">sequence</span>`) || !regexp.MustCompile(`<code>\w+</code> <span class="arrow">→</span> <code>\w+</code>`).MatchString(seq) ||
		!strings.Contains(seq, "in this order, the last within") {
		t.Errorf("sequence row: %s", seq)
	}
	abs := row("nomad.node.disconnected")
	if !strings.Contains(abs, `kind-absence">absence<`) || !strings.Contains(abs, "<strong>not followed</strong> by") || strings.Contains(abs, "resolves after") {
		t.Errorf("absence row: %s", abs)
	}
	cnt := row(desktopHeap)
	if !strings.Contains(cnt, `kind-count">count<`) || !strings.Contains(cnt, "fires when <code>") {
		t.Errorf("count row: %s", cnt)
	}
	if chained := row("nomad.node.flapping"); !strings.Contains(chained, "kind-chained") {
		t.Errorf("chained row: %s", chained)
	}
	if task := row("nomad.task.crash_loop"); !strings.Contains(task, "not while <code>nomad.node.disconnected</code>") {
		t.Errorf("inhibited row: %s", task)
	}
}
