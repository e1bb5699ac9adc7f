package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/internal/externaltest"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
)

// promtoolBinary is where Debian's prometheus package installs promtool.
const promtoolBinary = "/usr/bin/promtool"

// scrape fetches url and returns the status and body.
func scrape(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// sampleValue returns the value of the series whose line starts with
// series (name and labels exactly as exposed), and whether it is there.
func sampleValue(body, series string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		return v, err == nil
	}
	return 0, false
}

// TestMetricsPromtool runs the whole pipeline (embedded NATS, a log tailer,
// the correlator, a file sink), puts a dead letter on klaxon.dlq.jsonl
// through the embedded server's loopback listener, and checks that the key
// series of issue 7 are there with the values the traffic implies and that
// `promtool check metrics` finds no problem in the exposition.
func TestMetricsPromtool(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "nomad.log")
	rulesDir, _ := filepath.Abs("../../../rules.d")
	httpAddr, natsAddr := freePort(t), freePort(t)
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000Z0700")
	var lines strings.Builder
	for i := 0; i < 3; i++ {
		lines.WriteString(now + ` [WARN]  client.gc: garbage collection skipped because no terminal allocations: reason="number of allocations (61) is over the limit (50)"` + "\n")
	}
	if err := os.WriteFile(logPath, []byte(lines.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(filepath.Join(dir, "k.yaml"), []byte(fmt.Sprintf(`
node: m1
rules_dir: %s
http: {listen: %q}
nats: {listen: %q}
sources:
  windows_facts: {enabled: false} # on by default on Windows: the counts are the log's events
  nomad_log:
    - paths: [%q]
      read_from: beginning
      poll_interval: 50ms
sinks: [{type: file, name: jsonl, path: %s}]
correlator: {snapshot_interval: 50ms}
`, rulesDir, httpAddr, natsAddr, logPath, filepath.Join(dir, "out.jsonl"))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, Options{Log: quiet(), Ready: ready}) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("not ready within 20s")
	}

	// One dead letter for the jsonl sink, as a dispatcher would leave it.
	nc, err := nats.Connect("nats://"+natsAddr, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	if _, err := js.Publish(pctx, natslayout.DLQSubject("jsonl"), []byte(`{"id":"x"}`)); err != nil {
		t.Fatal(err)
	}
	pcancel()

	const src = `klaxon_source_events_total{source=`
	type want struct {
		series string
		min    float64 // the value must be at least min
		max    float64 // and at most max (0: no bound)
	}
	gc := `rule="nomad.client.gc_pressure"`
	wants := []want{
		{`klaxon_events_published_total`, 3, 3},
		{`klaxon_correlator_events_total`, 3, 3},
		{`klaxon_rule_matches_total{` + gc + `}`, 3, 3},
		{`klaxon_rule_matches_total{rule="nomad.task.crash_loop"}`, 0, 0}, // every loaded rule has its series
		{`klaxon_rule_evaluations_total{` + gc + `}`, 3, 0},
		{`klaxon_rule_active_groups{` + gc + `}`, 1, 1},
		{`klaxon_rule_active_groups{rule="nomad.task.crash_loop"}`, 0, 0},
		{`klaxon_incidents_open{` + gc + `,severity="warning"}`, 1, 1},
		{`klaxon_incident_changes_total{status="firing"}`, 1, 1},
		{`klaxon_incident_changes_total{status="resolved"}`, 0, 0},
		{`klaxon_sink_deliveries_total{sink="jsonl"}`, 1, 0},
		{`klaxon_sink_failures_total{sink="jsonl"}`, 0, 0},
		{`klaxon_sink_retries_total{sink="jsonl"}`, 0, 0},
		{`klaxon_sink_dlq_messages{sink="jsonl"}`, 1, 1},
		{`klaxon_nats_connected`, 1, 1},
		{`klaxon_nats_reconnects_total`, 0, 0},
		{`klaxon_ready`, 1, 1},
		{`klaxon_correlator_event_duration_seconds_count`, 3, 3},
	}
	var body string
	deadline := time.Now().Add(20 * time.Second)
	for {
		var code int
		code, body = scrape(t, "http://"+httpAddr+"/metrics")
		missing := ""
		if code != http.StatusOK {
			missing = fmt.Sprintf("status %d", code)
		}
		for _, w := range wants {
			if missing != "" {
				break
			}
			v, ok := sampleValue(body, w.series)
			if !ok || v < w.min || (w.max > 0 && v > w.max) || (w.max == 0 && w.min == 0 && v != 0) {
				missing = fmt.Sprintf("%s = %v (present %v), want [%v, %v]", w.series, v, ok, w.min, w.max)
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics: %s\n%s", missing, body)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Per source: read, published, parse errors, lag, checkpoint age.
	re := regexp.MustCompile(regexp.QuoteMeta(src) + `"([^"]+)"} 3\n`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no source with 3 events read:\n%s", body)
	}
	name := `"` + m[1] + `"` // as the exposition escapes it (a Windows path's \ as \\)
	for _, series := range []string{
		`klaxon_source_events_published_total{source=` + name + `}`,
		`klaxon_source_parse_errors_total{source=` + name + `}`,
		`klaxon_source_lag_seconds{source=` + name + `}`,
		`klaxon_source_checkpoint_age_seconds{source=` + name + `}`,
		`klaxon_source_last_event_timestamp_seconds{source=` + name + `}`,
		`klaxon_rule_evaluation_seconds_total{` + gc + `}`,
	} {
		if _, ok := sampleValue(body, series); !ok {
			t.Errorf("no series %s", series)
		}
	}
	if v, _ := sampleValue(body, `klaxon_source_events_published_total{source=`+name+`}`); v != 3 {
		t.Errorf("source published %v, want 3 (every event read was acknowledged)", v)
	}
	if v, _ := sampleValue(body, `klaxon_source_checkpoint_age_seconds{source=`+name+`}`); v != 0 {
		t.Errorf("checkpoint age %v with nothing waiting for an acknowledgement, want 0", v)
	}
	for _, typ := range []string{
		"# TYPE klaxon_source_events_total counter",
		"# TYPE klaxon_source_lag_seconds gauge",
		"# TYPE klaxon_sink_dlq_messages gauge",
		"# TYPE klaxon_rule_evaluation_seconds_total counter",
		"# TYPE klaxon_correlator_event_duration_seconds histogram",
	} {
		if !strings.Contains(body, typ) {
			t.Errorf("exposition lacks %q", typ)
		}
	}

	if os.Getenv("KLAXON_DUMP_METRICS") != "" {
		t.Logf("exposition:\n%s", body)
	}
	if code, _ := scrape(t, "http://"+httpAddr+"/readyz"); code != http.StatusOK {
		t.Errorf("readyz %d", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop within 30s")
	}

	// promtool, on the exposition scraped above (the pipeline stopped: a
	// skip leaves nothing writing to the test's directory).
	// Parse errors exit non-zero; lint problems are printed.
	externaltest.Need(t, promtoolBinary, "prometheus")
	cmd := exec.Command(promtoolBinary, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || strings.TrimSpace(out.String()) != "" {
		t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
	}
	// The check can fail: a counter without _total is a lint problem.
	bad := exec.Command(promtoolBinary, "check", "metrics")
	bad.Stdin = strings.NewReader("# HELP klaxon_bad Bad.\n# TYPE klaxon_bad counter\nklaxon_bad 1\n")
	if o, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(o), "_total") {
		t.Errorf("promtool did not flag a counter without _total: %v %s", err, o)
	}
}
