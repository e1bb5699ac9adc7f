package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/app"
	"github.com/klaxon-dev/klaxon/correlate"
)

// heldBackRule is a rule the desktop-heap incident inhibits on its node:
// its group holds from the first "Insufficient system resources" on, while
// the desktop-heap incident is open.
const heldBackRule = `rules:
  - id: test.plugin_trouble
    title: "Plugin trouble on {{ .node }}"
    severity: warning
    runbook: "Look at the driver plugins."
    inhibited_by: [nomad.windows.desktop_heap_exhaustion]
    match:
      failed: source == "nomad.log" && msg startsWith "dispensing initial plugin failed"
    correlate:
      by: [node]
      window: 30m
`

// rulesWith copies the bundled rules into a directory with extra rule
// files.
func rulesWith(t *testing.T, extra map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	src := "../../../rules.d"
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range extra {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// runPipeline runs `klaxon run` in-process on the desktop-heap inputs with
// a token on the HTTP endpoint, and returns the endpoint's URL and the
// desktop-heap incident once all its evidence is in.
func runPipeline(t *testing.T, token string) (string, correlate.Incident) {
	t.Helper()
	dir := t.TempDir()
	base := time.Now().Add(-4 * time.Minute).Truncate(time.Second)
	wantEvidence := desktopHeapInputs(t, dir, base)
	rulesDir := rulesWith(t, map[string]string{"zz_held_back.yaml": heldBackRule})
	cfg, err := app.ParseConfig(filepath.Join(dir, "klaxon.yaml"), []byte(fmt.Sprintf(`
node: win-client-7
data_dir: %s
rules_dir: %s
http: {listen: "127.0.0.1:0", token: %q}
sources:
  nomad_log:
    - paths: [%q]
      read_from: beginning
      poll_interval: 50ms
  winevt_files:
    - paths: [%q]
      read_from: beginning
      poll_interval: 50ms
sinks:
  - type: file
    path: %s
correlator:
  snapshot_interval: 100ms
  update_interval: 1s
`, filepath.Join(dir, "data"), rulesDir, token, filepath.Join(dir, "nomad.log"), filepath.Join(dir, "System.evtx"), filepath.Join(dir, "incidents.jsonl"))))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		done <- app.Run(ctx, cfg, app.Options{Log: slog.New(slog.NewTextHandler(&logs, nil)), Stdout: io.Discard, Ready: ready})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after cancel")
		}
		if t.Failed() {
			t.Logf("klaxon log:\n%s", tail(logs.String(), 4000))
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("pipeline not ready\n%s", logs.String())
	}
	m := regexp.MustCompile(`msg="http endpoint" addr=(127\.0\.0\.1:\d+)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no http endpoint in the log:\n%s", logs.String())
	}
	srv := "http://" + m[1]
	var heap, prev correlate.Incident
	deadline := time.Now().Add(25 * time.Second)
	for {
		heap = findIncident(t, srv, desktopHeap)
		if heap.ID != "" && len(heap.Evidence) == wantEvidence && heap.Seq == prev.Seq && heap.Count == prev.Count {
			return srv, heap
		}
		prev = heap
		if time.Now().After(deadline) {
			t.Fatalf("no desktop-heap incident with %d events on the web view; got %+v\n%s", wantEvidence, heap, tail(logs.String(), 3000))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// noOverflow is a script measuring horizontal overflow at the viewport's
// width: the document's scroll width, every element whose right edge
// passes the viewport, and every element whose content is wider than its
// box (text running out of a card, a section that would scroll), except
// the timeline, which scrolls on its own on purpose.
const noOverflow = `(() => {
  const w = document.documentElement.clientWidth;
  const out = [];
  const name = el => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (typeof el.className === "string" && el.className ? "." + el.className.replace(/ /g, ".") : "");
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest("figure.timeline") || el.closest("svg")) continue;
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > w + 1) out.push(name(el) + " right=" + Math.round(r.right));
    else if (r.width > 0 && el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0 && getComputedStyle(el).display !== "inline") out.push(name(el) + " content=" + el.scrollWidth + ">" + el.clientWidth);
  }
  return JSON.stringify({scroll: document.documentElement.scrollWidth, width: w, over: out.slice(0, 12)});
})()`

// TestBrowserActing drives the web view in headless chromium through the
// DevTools protocol against the real pipeline (a token on the endpoint):
// the status badge says firing, the timeline draws only the sources that
// have evidence, the held-back incident is listed as inhibited, the
// incident page silences the node with a comment and the token (and the
// list shows it silenced after the page's own refresh), the history finds
// the incident by node, the rules page shows sequences and absences as
// such; and at 420 px wide (a phone) no page overflows horizontally.
// Screenshots are checked; with KLAXON_UPDATE_SCREENSHOT=1 the phone view
// of the incident replaces docs/incident-phone.png.
func TestBrowserActing(t *testing.T) {
	bin := chromium(t)
	srv, heap := runPipeline(t, "s3cret")
	c := startCDP(t, bin)
	c.viewport(1280, 900, false)
	shots := t.TempDir()

	// The incident page: firing, lanes with evidence only.
	c.navigate(srv + "/incidents/" + heap.ID)
	if got := c.evalString(`document.querySelector("#status .status").textContent`); got != "firing" {
		t.Errorf("status badge %q, want firing", got)
	}
	lanes := c.evalString(`[...document.querySelectorAll("#timeline .lane-label")].map(e => e.textContent).join("|")`)
	if lanes != "Nomad agent log|Windows Event Log" {
		t.Errorf("timeline lanes %q, want the log and the Event Log only", lanes)
	}

	// The held-back rule is listed as inhibited on /.
	c.navigate(srv + "/")
	c.waitTrue("the inhibited group listed", `!document.getElementById("inhibited-section").hidden && document.querySelector("#inhibited tr[data-id] .badge.inhibited") !== null`, 20*time.Second)
	if got := c.evalString(`document.querySelector("#inhibited tr td:nth-child(4)").textContent`); !strings.Contains(got, desktopHeap) {
		t.Errorf("held back by %q", got)
	}

	// Silence the node from the incident page: the form needs the token.
	c.navigate(srv + "/incidents/" + heap.ID)
	fill := func(token string) {
		c.eval(`(() => {
  document.querySelector("details.silence-form").open = true;
  const f = document.getElementById("silence-form");
  f.querySelector('input[name=scope][value=node]').checked = true;
  f.querySelector('select[name=duration]').value = "1h";
  f.querySelector('input[name=comment]').value = "rebooting win-client-7 to raise the desktop heap";
  f.querySelector('input[name=author]').value = "alice";
  f.querySelector('input[name=token]').value = ` + strconv.Quote(token) + `;
  return true; })()`)
		c.submit(`document.querySelector('#silence-form button[type=submit]').click()`)
	}
	fill("wrong")
	if got := c.evalString(`(document.getElementById("silence-error") || {}).textContent || ""`); !strings.Contains(got, "token") {
		t.Errorf("wrong token: error %q", got)
	}
	fill("s3cret")
	if !c.evalBool(`location.search.startsWith("?silenced=") && document.getElementById("silenced") !== null`) {
		t.Fatalf("not silenced: %s", c.evalString(`document.body.innerText.slice(0, 1500)`))
	}
	if got := c.evalString(`document.getElementById("silenced").innerText`); !strings.Contains(got, "alice") || !strings.Contains(got, "node=win-client-7") {
		t.Errorf("silence notice %q", got)
	}
	c.screenshot(filepath.Join(shots, "silenced.png"))
	checkScreenshot(t, filepath.Join(shots, "silenced.png"), 1280, 900)

	// The list shows it silenced once the page's script refreshed it.
	c.navigate(srv + "/")
	c.waitTrue("the live list refreshed", `document.body.dataset.live === "ok"`, 15*time.Second)
	if !c.evalBool(`document.querySelector('#open tr[data-id="` + heap.ID + `"] .badge.silenced') !== null`) {
		t.Errorf("the open incident is not marked silenced on /")
	}
	if got := c.evalString(`[...document.querySelectorAll("#open .status")].map(e => e.textContent).join(",")`); strings.Contains(got, "updated") {
		t.Errorf("status badges on / %q", got)
	}

	// The history finds it by node, through its form.
	c.navigate(srv + "/history")
	c.eval(`document.querySelector('#history-form input[name=node]').value = "win-client-7"`)
	c.submit(`document.querySelector('#history-form button[type=submit]').click()`)
	if !c.evalBool(`document.querySelector('#history tr[data-id="` + heap.ID + `"]') !== null`) {
		t.Errorf("history search by node did not list the incident: %s", c.evalString(`document.body.innerText.slice(0, 1500)`))
	}
	c.submit(`document.querySelector('#history tr[data-id="` + heap.ID + `"] td.title a').click()`)
	if got := c.evalString(`document.querySelector("h1").textContent`); !strings.Contains(got, "Desktop heap exhaustion") {
		t.Errorf("history link led to %q", got)
	}
	if !c.evalBool(`document.querySelectorAll("#changes tbody tr").length >= 1`) {
		t.Errorf("no change log on the incident page")
	}

	// The rules page says what a sequence and an absence are.
	c.navigate(srv + "/rules")
	for _, w := range [][2]string{{"nomad.client.reconnect_churn", "sequence"}, {"nomad.node.disconnected", "absence"}} {
		if got := c.evalString(`(document.getElementById(` + strconv.Quote(w[0]) + `).querySelector(".kind") || {}).textContent || ""`); got != w[1] {
			t.Errorf("%s shown as %q, want %s", w[0], got, w[1])
		}
	}

	// A phone: 420 px wide, nothing overflows on any page.
	c.viewport(420, 900, true)
	for _, p := range []string{"/", "/incidents/" + heap.ID, "/rules", "/history?node=win-client-7", "/silences", "/playground"} {
		c.navigate(srv + p)
		time.Sleep(300 * time.Millisecond)
		got := c.evalString(noOverflow)
		var m struct {
			Scroll, Width int
			Over          []string
		}
		if err := json.Unmarshal([]byte(got), &m); err != nil || m.Width != 420 || m.Scroll > m.Width || len(m.Over) > 0 {
			t.Errorf("%s at 420 px overflows: %s", p, got)
		} else {
			t.Logf("%s at 420 px: %s", p, got)
		}
		name := filepath.Join(shots, "phone"+strings.NewReplacer("/", "_", "?", "_", "=", "_").Replace(p)+".png")
		c.screenshot(name)
		checkScreenshot(t, name, 420, 900)
		if p == "/incidents/"+heap.ID && os.Getenv("KLAXON_UPDATE_SCREENSHOT") == "1" {
			b, _ := os.ReadFile(name)
			if err := os.WriteFile("../../../docs/incident-phone.png", b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if dir := os.Getenv("KLAXON_KEEP_SCREENSHOTS"); dir != "" {
		ents, _ := os.ReadDir(shots)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(shots, e.Name()))
			_ = os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644)
		}
	}
}
