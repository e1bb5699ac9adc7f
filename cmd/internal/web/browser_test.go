package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/app"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest/winevt/evtxwriter"
	"github.com/klaxon-dev/klaxon/internal/testkit"
	"github.com/klaxon-dev/klaxon/internal/winetest"
)

// chromium finds Debian's chromium; the test is skipped without it unless
// KLAXON_REQUIRE_EXTERNAL=1.
func chromium(t *testing.T) string {
	t.Helper()
	if os.Getenv("KLAXON_CHROMIUM") == "" {
		winetest.SkipLinuxProgram(t, "chromium", "chromium")
	}
	for _, name := range []string{os.Getenv("KLAXON_CHROMIUM"), "chromium", "/usr/bin/chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("KLAXON_REQUIRE_EXTERNAL") == "1" {
		t.Fatal("chromium required (KLAXON_REQUIRE_EXTERNAL=1): not found")
	}
	t.Skip("chromium not installed (apt-get install chromium)")
	return ""
}

// runChromium runs headless chromium with the flags of a machine without
// network or display, and returns its stdout.
func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, tail(stderr.String(), 2000))
	}
	t.Logf("chromium %s: %s", args[len(args)-1], time.Since(start).Round(time.Millisecond))
	return stdout.Bytes()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// syncBuffer is a log destination shared by goroutines.
type syncBuffer = testkit.SyncBuffer

// desktopHeapInputs writes an agent log and an EVTX file of one Windows
// node whose desktop heap runs out, with event times in the last minutes
// (so the incident fires and stays open), and returns how many of their
// events the desktop-heap rule matches.
func desktopHeapInputs(t *testing.T, dir string, base time.Time) int {
	t.Helper()
	ts := func(sec int) string {
		return base.Add(time.Duration(sec) * time.Second).UTC().Format("2006-01-02T15:04:05.000Z")
	}
	lines := []string{
		ts(0) + ` [INFO]  client.alloc_runner.task_runner: Task event: alloc_id=6f1d2c1e-2f0a-4b7e-9a51-3c0d8e8f7a11 task=iis-worker type=Received msg="Task received by client" failed=false`,
		ts(5) + ` [INFO]  agent: Starting Nomad agent...`,
		ts(12) + ` [WARN]  client.driver_mgr: failed to reattach to plugin, starting new instance: driver=app_pool error="Reattachment process not found"`,
		ts(13) + ` [ERROR] client.driver_mgr.raw_exec: failed to reattach to executor: driver=raw_exec error="error creating rpc client for executor plugin: Reattachment process not found" task_id=6f1d2c1e/iis-worker/8c1b2a3d`,
		ts(14) + ` [ERROR] client.alloc_runner.task_runner: error recovering task; cleaning up: alloc_id=6f1d2c1e-2f0a-4b7e-9a51-3c0d8e8f7a11 task=iis-worker error="failed to reattach to executor: Reattachment process not found"`,
		ts(75) + ` [ERROR] client.driver_mgr: dispensing initial plugin failed: driver=app_pool error="failed to start plugin: failed to launch plugin: pipe: Insufficient system resources exist to complete the requested service."`,
		ts(80) + ` [INFO]  client.alloc_runner.task_runner: Task event: alloc_id=9a7e0b52-1c4d-4f1e-8d3b-0e6c2f9a4b22 task=iis-worker type="Task hook failed" msg="logmon: Unrecognized remote plugin message: This usually means that the plugin is either invalid or simply needs to be recompiled to support the latest protocol." failed=true`,
		ts(150) + ` [WARN]  client.driver_mgr: failed to reattach to plugin, starting new instance: driver=app_pool error="Reattachment process not found"`,
		ts(200) + ` [ERROR] client.driver_mgr: dispensing initial plugin failed: driver=app_pool error="failed to start plugin: failed to launch plugin: pipe: Insufficient system resources exist to complete the requested service."`,
		ts(205) + ` [INFO]  client.alloc_runner.task_runner: Task event: alloc_id=3c4d5e6f-1c4d-4f1e-8d3b-0e6c2f9a4b22 task=iis-worker type="Task hook failed" msg="logmon: Unrecognized remote plugin message: This usually means that the plugin is either invalid or simply needs to be recompiled to support the latest protocol." failed=true`,
	}
	if err := os.WriteFile(filepath.Join(dir, "nomad.log"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	at := func(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }
	scm := func(id uint64, sec int) evtxwriter.Record {
		return evtxwriter.Record{ID: id, Time: at(sec), Provider: "Service Control Manager", EventID: 7000, Qualifiers: 49152, Level: 2,
			Channel: "System", Computer: "WIN-CLIENT-7.corp.example",
			Data: []evtxwriter.NamedData{evtxwriter.D("param1", "Nomad"), evtxwriter.D("param2", "%%1450")}}
	}
	w := evtxwriter.New()
	w.MustAdd(scm(1, 70), scm(2, 120), scm(3, 195))
	if err := w.WriteFile(filepath.Join(dir, "System.evtx")); err != nil {
		t.Fatal(err)
	}
	return 8 + 3 // log lines 3..10, SCM 7000 ×3
}

// TestBrowser runs the real pipeline (embedded NATS, a log tailer and an
// EVTX follower on files of a node whose desktop heap runs out, the
// correlator, the web view on the HTTP endpoint) and checks in headless
// chromium that the incident appears on / once the page's script has
// refreshed it, and that the incident page renders its timeline: the
// screenshot is a 1280×900 PNG that is not blank. With
// KLAXON_UPDATE_SCREENSHOT=1 the screenshot replaces docs/incident-timeline.png.
func TestBrowser(t *testing.T) {
	bin := chromium(t)
	dir := t.TempDir()
	base := time.Now().Add(-4 * time.Minute).Truncate(time.Second)
	wantEvidence := desktopHeapInputs(t, dir, base)
	rulesDir, _ := filepath.Abs("../../../rules.d")
	cfg, err := app.ParseConfig(filepath.Join(dir, "klaxon.yaml"), []byte(fmt.Sprintf(`
node: win-client-7
data_dir: %s
rules_dir: %s
http: {listen: "127.0.0.1:0"}
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
`, filepath.Join(dir, "data"), rulesDir, filepath.Join(dir, "nomad.log"), filepath.Join(dir, "System.evtx"), filepath.Join(dir, "incidents.jsonl"))))
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
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}()
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

	// Wait for the incident with all its evidence from both sources, and
	// for its last change (the same one on two polls in a row).
	var heap, prev correlate.Incident
	deadline := time.Now().Add(25 * time.Second)
	for {
		heap = findIncident(t, srv, desktopHeap)
		if heap.ID != "" && len(heap.Evidence) == wantEvidence && heap.Seq == prev.Seq && heap.Count == prev.Count {
			break
		}
		prev = heap
		if time.Now().After(deadline) {
			t.Fatalf("no desktop-heap incident with %d events on the web view; got %+v\n%s", wantEvidence, heap, tail(logs.String(), 3000))
		}
		time.Sleep(300 * time.Millisecond)
	}
	sources := map[string]int{}
	for _, e := range heap.Evidence {
		sources[e.Source]++
	}
	if sources["nomad.log"] != 8 || sources["winevt"] != 3 {
		t.Errorf("evidence by source %v, want 8 nomad.log and 3 winevt", sources)
	}

	// The live list, after the page's script ran.
	dom := string(runChromium(t, bin, "--virtual-time-budget=5000", "--dump-dom", srv+"/"))
	for _, w := range []string{`data-live="ok"`, `href="/incidents/` + heap.ID + `"`, "Desktop heap exhaustion on win-client-7", `id="live-state">updated `} {
		if !strings.Contains(dom, w) {
			t.Errorf("DOM of / lacks %q:\n%s", w, tail(dom, 3000))
		}
	}

	// The incident page with its timeline, as a picture.
	shot := filepath.Join(t.TempDir(), "incident.png")
	runChromium(t, bin, "--screenshot="+shot, "--window-size=1280,900", srv+"/incidents/"+heap.ID)
	checkScreenshot(t, shot, 1280, 900)
	if os.Getenv("KLAXON_UPDATE_SCREENSHOT") == "1" {
		b, _ := os.ReadFile(shot)
		if err := os.WriteFile("../../../docs/incident-timeline.png", b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// findIncident returns the open incident of a rule with its evidence, or
// a zero Incident.
func findIncident(t *testing.T, srv, rule string) correlate.Incident {
	t.Helper()
	var list struct{ Open []correlate.Incident }
	if err := getJSON(srv+"/api/incidents", &list); err != nil {
		return correlate.Incident{}
	}
	for _, in := range list.Open {
		if in.Rule == rule {
			var full correlate.Incident
			if err := getJSON(srv+"/api/incidents/"+in.ID, &full); err == nil {
				return full
			}
		}
	}
	return correlate.Incident{}
}

func getJSON(u string, v any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// checkScreenshot asserts a valid PNG of the size asked for, with enough
// variation to show a page (a blank or failed render is one colour).
func checkScreenshot(t *testing.T, path string, w, h int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h {
		t.Errorf("screenshot %dx%d, want %dx%d", b.Dx(), b.Dy(), w, h)
	}
	mean, variance, colours := pixelStats(img)
	t.Logf("screenshot: mean luma %.1f, variance %.1f, %d colours", mean, variance, colours)
	if variance < 100 || colours < 50 {
		t.Errorf("screenshot looks blank: luma variance %.1f, %d colours", variance, colours)
	}
	// The page's own colours rendered (the stylesheet loaded): the
	// critical badge and the error marks are #c62828.
	if !hasColour(img, 0xc6, 0x28, 0x28, 12) {
		t.Errorf("no critical red in the screenshot: the stylesheet did not apply")
	}
}

func pixelStats(img image.Image) (mean, variance float64, colours int) {
	b := img.Bounds()
	seen := map[uint32]bool{}
	var sum, sq float64
	n := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			l := (0.299*float64(r) + 0.587*float64(g) + 0.114*float64(bl)) / 257
			sum += l
			sq += l * l
			n++
			seen[(r>>8)<<16|(g>>8)<<8|bl>>8] = true
		}
	}
	mean = sum / float64(n)
	return mean, sq/float64(n) - mean*mean, len(seen)
}

func hasColour(img image.Image, r0, g0, b0 uint8, tol int) bool {
	b := img.Bounds()
	near := func(a uint32, c uint8) bool { d := int(a>>8) - int(c); return d >= -tol && d <= tol }
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if near(r, r0) && near(g, g0) && near(bl, b0) {
				return true
			}
		}
	}
	return false
}
