package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/replay"
	"github.com/klaxon-dev/klaxon/cmd/internal/web"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/testkit"
	"github.com/klaxon-dev/klaxon/rules"
	"github.com/klaxon-dev/klaxon/sinks/stdout"
)

const desktopHeap = "nomad.windows.desktop_heap_exhaustion"

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func bundledRules(t testing.TB) *rules.Set { return testkit.BundledRules(t) }

// fixture is a web view on a real store, the bundled rules and the real
// playground.
type fixture struct {
	srv   *httptest.Server
	store *web.Store
	set   *rules.Set
}

func newFixture(t *testing.T, mod func(*web.Config)) *fixture {
	t.Helper()
	f := &fixture{store: web.NewStore(), set: bundledRules(t)}
	resolved := at(1900)
	heap := correlate.Incident{ID: "abc123", Rule: desktopHeap, Status: "updated", Severity: "critical", Node: "win-client-7",
		Group: map[string]string{"node": "win-client-7"}, Title: "Desktop heap exhaustion on win-client-7",
		Summary: "2 plugin reattach failures <b>and</b> 1 error", Runbook: "Raise the third SharedSection value",
		Labels: map[string]string{"component": "windows"}, StartedAt: at(3), UpdatedAt: at(60), Count: 4, Seq: 2,
		Links: map[string]string{"node": "https://nomad.example:4646/ui/clients/f3b8d6a2-0c1e-4d4f-9a57-2b1c8e7d6a10", "evil": "javascript:alert(1)"},
		Evidence: []correlate.Evidence{
			{Time: at(0), ID: "l1", Source: "nomad.log", Kind: "client.driver_mgr", Level: "warn", Msg: "failed to reattach to plugin"},
			{Time: at(3), ID: "w1", Source: "winevt", Kind: "Service Control Manager/7000", Level: "error", Msg: "%%1450"},
			{Time: at(60), ID: "e1", Source: "nomad.event", Kind: "Allocation.TaskEvent", Level: "error", Msg: "Task hook failed"},
		}}
	f.store.Apply(heap)
	gc := correlate.Incident{ID: "def456", Rule: "nomad.client.gc_pressure", Status: "resolved", Severity: "warning", Node: "vm",
		Title: "GC pressure on vm", StartedAt: at(100), UpdatedAt: at(1900), ResolvedAt: &resolved, Count: 9, Seq: 3}
	f.store.Apply(gc)
	cfg := web.Config{
		Incidents: f.store,
		Rules:     func() *rules.Set { return f.set },
		Stats: func() web.RuleStats {
			return web.RuleStats{Events: 1234, MatchesByRule: map[string]uint64{desktopHeap: 42}, ActiveGroups: map[string]int{desktopHeap: 3}}
		},
		Playground: replay.Playground(func() *rules.Set { return f.set }, correlate.Options{}, quiet()),
		Now:        func() time.Time { return at(2000) },
		Log:        quiet(),
	}
	if mod != nil {
		mod(&cfg)
	}
	f.srv = httptest.NewServer(web.New(cfg))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) get(t *testing.T, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", f.srv.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestPages: every page renders with its data, escaped, with the security
// headers; unknown incidents are 404.
func TestPages(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		path, ctype string
		status      int
		want        []string
		notWant     []string
	}{
		{"/", "text/html", 200, []string{
			`<a href="/incidents/abc123">Desktop heap exhaustion on win-client-7</a>`, desktopHeap, "win-client-7",
			`id="open-count">1<`, `id="resolved-count">1<`, "GC pressure on vm", `<script src="/static/klaxon.js?v=`,
			`title="2026-11-20 09:14:03Z"`, "33m ago"}, nil},
		{"/incidents/abc123", "text/html", 200, []string{
			"<svg", `id="timeline"`, "Nomad agent log", "Nomad event stream", "Windows Event Log",
			"Raise the third SharedSection value", "component", "&lt;b&gt;and&lt;/b&gt;", // summary escaped
			"<title>2026-11-20 09:14:03.000Z  winevt  Service Control Manager/7000  [error]\n%%1450</title>",
			">started<", `data-incident="abc123"`,
			`<a href="https://nomad.example:4646/ui/clients/f3b8d6a2-0c1e-4d4f-9a57-2b1c8e7d6a10" rel="noreferrer">node</a>`},
			[]string{"<b>and</b>", ">resolved</text>", "javascript:"}},
		{"/incidents/def456", "text/html", 200, []string{"GC pressure on vm", ">resolved</text>"}, nil},
		{"/incidents/nope", "text/html", 404, []string{"No incident nope"}, nil},
		{"/rules", "text/html", 200, []string{`id="` + desktopHeap + `"`, "nomad.client.gc_pressure", "1234 events correlated",
			"<code>no_resources</code>", `<a href="/">1</a>`, ">42<svg"}, nil},
		{"/playground", "text/html", 200, []string{`<form method="post" action="/playground" enctype="multipart/form-data"`, "At most 1 MiB"}, nil},
		{"/playground?example=desktop-heap", "text/html", 200, []string{"failed to reattach to plugin", `value="win-client-7"`}, nil},
		{"/static/style.css", "text/css", 200, []string{".timeline"}, nil},
		{"/static/klaxon.js", "text/javascript", 200, []string{"/api/incidents"}, nil},
		{"/static/nope.css", "text/plain", 404, nil, nil},
		{"/nope", "text/plain", 404, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := f.get(t, tc.path)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %.300s", resp.StatusCode, tc.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
				t.Errorf("Content-Type %q, want %s", ct, tc.ctype)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("body lacks %q", w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(body, w) {
					t.Errorf("body has %q", w)
				}
			}
			if tc.status == 200 && resp.Header.Get("Content-Security-Policy") == "" {
				t.Errorf("no Content-Security-Policy")
			}
		})
	}
}

// TestTimelineMarks: the incident page draws one mark per evidence event,
// each with its hover title.
func TestTimelineMarks(t *testing.T) {
	f := newFixture(t, nil)
	_, body := f.get(t, "/incidents/abc123")
	marks := regexp.MustCompile(`<circle class="mark level-(\w+)"[^>]*><title>`).FindAllStringSubmatch(body, -1)
	var levels []string
	for _, m := range marks {
		levels = append(levels, m[1])
	}
	if !slices.Equal(levels, []string{"warn", "error", "error"}) {
		t.Errorf("marks by level %v, want warn error error", levels)
	}
}

// TestAPIIncidents: the JSON the live view polls, with an ETag that turns
// an unchanged poll into a 304 and changes with the store.
func TestAPIIncidents(t *testing.T) {
	f := newFixture(t, nil)
	resp, body := f.get(t, "/api/incidents")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var got struct {
		Open, Resolved []struct {
			ID, Rule, Status, URL string
			Count                 int
			Evidence              []any
		}
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Open) != 1 || got.Open[0].ID != "abc123" || got.Open[0].Rule != desktopHeap || got.Open[0].Count != 4 ||
		got.Open[0].URL != "/incidents/abc123" || got.Open[0].Evidence != nil {
		t.Errorf("open %+v", got.Open)
	}
	if len(got.Resolved) != 1 || got.Resolved[0].ID != "def456" || got.Resolved[0].Status != "resolved" {
		t.Errorf("resolved %+v", got.Resolved)
	}
	etag := resp.Header.Get("ETag")
	if resp, _ := f.get(t, "/api/incidents", "If-None-Match", etag); resp.StatusCode != http.StatusNotModified {
		t.Errorf("unchanged poll: %d, want 304", resp.StatusCode)
	}
	f.store.Apply(change("new", "firing", 1990, 1, 1990))
	resp, body = f.get(t, "/api/incidents", "If-None-Match", etag)
	if resp.StatusCode != 200 || !strings.Contains(body, `"id": "new"`) {
		t.Errorf("poll after a change: %d %.200s", resp.StatusCode, body)
	}

	resp, body = f.get(t, "/api/incidents/abc123")
	var one correlate.Incident
	if err := json.Unmarshal([]byte(body), &one); err != nil || resp.StatusCode != 200 || len(one.Evidence) != 3 {
		t.Errorf("one incident: %d %v %+v", resp.StatusCode, err, one)
	}
	if resp, _ := f.get(t, "/api/incidents/nope"); resp.StatusCode != 404 {
		t.Errorf("unknown incident: %d", resp.StatusCode)
	}
	resp, body = f.get(t, "/api/rules")
	if resp.StatusCode != 200 || !strings.Contains(body, `"matches": 42`) || !strings.Contains(body, `"open_incidents": 1`) {
		t.Errorf("rules: %d %.300s", resp.StatusCode, body)
	}
}

func postForm(t *testing.T, u, input, node string) (*http.Response, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("input", input)
	_ = mw.WriteField("node", node)
	mw.Close()
	resp, err := http.Post(u, mw.FormDataContentType(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func postAPI(t *testing.T, u string, body []byte) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Post(u, "text/plain", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func playgroundJSON(t *testing.T, u string, body []byte) web.PlaygroundResult {
	t.Helper()
	resp, b := postAPI(t, u, body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var res web.PlaygroundResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// TestPlaygroundFindsDesktopHeap: pasted agent log lines (as a browser
// sends them, CRLF) show the selectors each line matched and the
// desktop-heap incident that would fire, through the form and the API.
func TestPlaygroundFindsDesktopHeap(t *testing.T) {
	f := newFixture(t, nil)
	demo, err := os.ReadFile("../../../deploy/demo/logs/win-client-7.log")
	if err != nil {
		t.Fatal(err)
	}
	crlf := strings.ReplaceAll(string(demo), "\n", "\r\n")
	resp, body := postForm(t, f.srv.URL+"/playground", crlf, "win-client-7")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %.500s", resp.StatusCode, body)
	}
	for _, w := range []string{"Would fire <span class=\"n\">1</span>", "Desktop heap exhaustion on win-client-7",
		"Detected <strong>nomad agent log</strong>: 9 records, 9 events, 5 matched a rule",
		`<a href="/rules#` + desktopHeap + `">` + desktopHeap + `</a>: <code>reattach</code>`,
		`: <code>no_resources</code>`, `: <code>logmon</code>`} {
		if !strings.Contains(body, w) {
			t.Errorf("form result lacks %q", w)
		}
	}

	res := playgroundJSON(t, f.srv.URL+"/api/playground?node=win-client-7", demo)
	if res.Format != "nomad agent log" || res.Lines != 9 || res.EventsTotal != 9 || res.Matched != 5 {
		t.Errorf("result %+v", res)
	}
	if len(res.Incidents) != 1 || res.Incidents[0].Rule != desktopHeap || res.Incidents[0].Node != "win-client-7" || res.Incidents[0].Count != 5 {
		t.Fatalf("incidents %+v", res.Incidents)
	}
	var matched []string
	for _, e := range res.Events {
		for _, m := range e.Matches {
			matched = append(matched, m.Rule+":"+strings.Join(m.Selectors, "+"))
		}
	}
	want := []string{desktopHeap + ":reattach", desktopHeap + ":reattach", desktopHeap + ":reattach", desktopHeap + ":no_resources", desktopHeap + ":logmon"}
	if !slices.Equal(matched, want) {
		t.Errorf("matches %v\nwant    %v", matched, want)
	}
	// The playground changed nothing outside: the live store is as it was.
	if open, _ := f.store.List(time.Time{}); len(open) != 1 {
		t.Errorf("the playground touched the live incidents: %+v", open)
	}
}

// TestPlaygroundEqualsReplay: the playground gives the incidents `klaxon
// replay` gives on the same input, for each input format.
func TestPlaygroundEqualsReplay(t *testing.T) {
	f := newFixture(t, nil)
	inputs := []string{
		"../../../ingest/winevt/testdata/seeds.xml",
		"/work/shared/testdata/nomad/captures/crashloop-gc-checkrestart/nomad.log",
		"/work/shared/testdata/nomad/captures/crashloop-gc-checkrestart/events.ndjson",
	}
	for _, path := range inputs {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Skipf("input absent: %v", err)
			}
			if len(data) > web.DefaultMaxBody {
				t.Skipf("%s is larger than the playground takes", path)
			}
			var out bytes.Buffer
			if _, err := replay.Run(context.Background(), []string{path}, replay.Options{Rules: f.set, Format: stdout.FormatJSON, Out: &out, Log: quiet()}); err != nil {
				t.Fatal(err)
			}
			last := map[string]correlate.Incident{}
			dec := json.NewDecoder(&out)
			for {
				var in correlate.Incident
				if err := dec.Decode(&in); err != nil {
					break
				}
				last[in.ID] = in
			}
			res := playgroundJSON(t, f.srv.URL+"/api/playground", data)
			if len(last) == 0 {
				t.Fatalf("replay raised no incident on %s; the test needs one", path)
			}
			if len(res.Incidents) != len(last) {
				t.Errorf("playground raised %d incidents, replay %d", len(res.Incidents), len(last))
			}
			for _, in := range res.Incidents {
				r, ok := last[in.ID]
				if !ok || r.Status != in.Status || r.Count != in.Count || r.Rule != in.Rule {
					t.Errorf("incident %s %s %s count %d; replay: %+v", in.ID, in.Rule, in.Status, in.Count, r)
				}
			}
			t.Logf("%s: %s, %d events, %d incidents", filepath.Base(path), res.Format, res.EventsTotal, len(res.Incidents))
		})
	}
}

// TestPlaygroundRefusals: the body limit, empty and unreadable input, the
// time bound, and a role without a playground.
func TestPlaygroundRefusals(t *testing.T) {
	f := newFixture(t, func(c *web.Config) { c.MaxBody = 4 << 10 })
	big := bytes.Repeat([]byte("2026-11-20T09:14:41.377Z [WARN]  client.driver_mgr: failed to reattach to plugin\n"), 100)
	resp, b := postAPI(t, f.srv.URL+"/api/playground", big)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "exceeds 4 KiB") {
		t.Errorf("API over the limit: %d %s", resp.StatusCode, b)
	}
	resp, body := postForm(t, f.srv.URL+"/playground", string(big), "")
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "exceeds 4 KiB") {
		t.Errorf("form over the limit: %d %.300s", resp.StatusCode, body)
	}
	resp, b = postAPI(t, f.srv.URL+"/api/playground", []byte(" \n "))
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "empty") {
		t.Errorf("empty input: %d %s", resp.StatusCode, b)
	}
	resp, b = postAPI(t, f.srv.URL+"/api/playground", []byte("\x00\x01\x02 not a log"))
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(b), "unknown input format") || strings.Contains(string(b), os.TempDir()) {
		t.Errorf("unknown format: %d %s", resp.StatusCode, b)
	}
	form := url.Values{"input": {"\x00\x01 not a log"}}
	resp2, err := http.PostForm(f.srv.URL+"/playground", form)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(b), `id="playground-error"`) {
		t.Errorf("urlencoded form with bad input: %d %.300s", resp2.StatusCode, b)
	}

	// A bound already past: a 1ns timer need not fire before a short run
	// ends where timers are coarse (Windows), and the run is then whole.
	timed := newFixture(t, func(c *web.Config) { c.PlaygroundTimeout = -time.Nanosecond })
	demo, _ := os.ReadFile("../../../deploy/demo/logs/win-client-7.log")
	res := playgroundJSON(t, timed.srv.URL+"/api/playground", demo)
	if !res.TimedOut {
		t.Errorf("a run past its time bound is not marked: %+v", res)
	}

	off := newFixture(t, func(c *web.Config) { c.Playground = nil })
	if resp, _ := postAPI(t, off.srv.URL+"/api/playground", demo); resp.StatusCode != 404 {
		t.Errorf("playground disabled: API %d", resp.StatusCode)
	}
	if resp, body := off.get(t, "/playground"); resp.StatusCode != 200 || !strings.Contains(body, "not available") {
		t.Errorf("playground disabled: page %d", resp.StatusCode)
	}
}
