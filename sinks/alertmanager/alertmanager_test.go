package alertmanager

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/externaltest"
	"github.com/klaxon-dev/klaxon/sinks"
	"github.com/klaxon-dev/klaxon/sinks/internal/sinktest"
)

// startAlertmanager runs Debian's prometheus-alertmanager on a free port.
func startAlertmanager(t *testing.T, resolveTimeout string) string {
	return externaltest.StartAlertmanager(t, resolveTimeout)
}

func findAlert(t *testing.T, base, id string) *externaltest.Alert {
	for _, a := range externaltest.Alerts(t, base) {
		if a.Labels["incident_id"] == id && a.Active() {
			return &a
		}
	}
	return nil
}

func TestAgainstAlertmanager(t *testing.T) {
	base := startAlertmanager(t, "5m")
	t.Logf("running against %s", externaltest.AlertmanagerVersion())
	s, err := New("am", Config{URLs: []string{base}, GeneratorURL: "https://klaxon.example/incidents/"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch := sinktest.Lifecycle("inc123", "win-7", 0)
	ch[0].Links = map[string]string{
		"job":  "https://nomad.example:4646/ui/jobs/web@default",
		"node": "https://nomad.example:4646/ui/clients/f3b8d6a2-0c1e-4d4f-9a57-2b1c8e7d6a10",
	}
	ctx := context.Background()
	if _, err := s.Send(ctx, ch[0]); err != nil {
		t.Fatal(err)
	}
	var a *externaltest.Alert
	sinktest.WaitFor(t, "the alert in Alertmanager", 10*time.Second, func() bool { a = findAlert(t, base, "inc123"); return a != nil })
	want := map[string]string{
		"alertname": ch[0].Rule, "node": "win-7", "severity": "critical", "incident_id": "inc123",
		"component": "windows", "runbook_url": "https://runbooks.example/heap", "fields_task": "web",
	}
	for k, v := range want {
		if a.Labels[k] != v {
			t.Errorf("label %s = %q, want %q (labels %v)", k, a.Labels[k], v, a.Labels)
		}
	}
	if a.Annotations["title"] != ch[0].Title || a.Annotations["summary"] != ch[0].Summary || a.Annotations["runbook"] != ch[0].Runbook {
		t.Errorf("annotations %v", a.Annotations)
	}
	// The Nomad UI links, as annotations a notification template can show.
	if a.Annotations["job_url"] != ch[0].Links["job"] || a.Annotations["node_url"] != ch[0].Links["node"] || a.Annotations["allocation_url"] != "" {
		t.Errorf("link annotations %v", a.Annotations)
	}
	if !a.StartsAt.Equal(ch[0].StartedAt) || a.GeneratorURL != "https://klaxon.example/incidents/inc123" {
		t.Errorf("startsAt %s generatorURL %q", a.StartsAt, a.GeneratorURL)
	}
	if s.Open() != 1 {
		t.Errorf("open set %d", s.Open())
	}
	if _, err := s.Send(ctx, ch[1]); err != nil {
		t.Fatal(err)
	}
	sinktest.WaitFor(t, "the alert resolved", 10*time.Second, func() bool { return findAlert(t, base, "inc123") == nil })
	if s.Open() != 0 {
		t.Errorf("open set %d after resolve", s.Open())
	}
}

// Alertmanager resolves an alert not re-sent within resolve_timeout; the
// sink's re-send keeps it active, and once the re-sending stops, it
// resolves by itself.
func TestResendKeepsAlertActive(t *testing.T) {
	base := startAlertmanager(t, "2s")
	s, err := New("am", Config{URLs: []string{base}, ResendInterval: 300 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	in := sinktest.Lifecycle("keep", "n1", 0)[0]
	if _, err := s.Send(ctx, in); err != nil {
		t.Fatal(err)
	}
	sinktest.WaitFor(t, "the alert", 10*time.Second, func() bool { return findAlert(t, base, "keep") != nil })
	// Past three resolve_timeouts, polled: active all along.
	until := time.Now().Add(6 * time.Second)
	for time.Now().Before(until) {
		if findAlert(t, base, "keep") == nil {
			t.Fatal("alert resolved although it was re-sent")
		}
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	<-done
	sinktest.WaitFor(t, "the alert to expire without re-sends", 10*time.Second, func() bool { return findAlert(t, base, "keep") == nil })
}

// Through the dispatcher with a real NATS: the restart of a dispatcher
// restores the open set from the stream, so the re-send goes on.
func TestRestoreAfterRestart(t *testing.T) {
	base := startAlertmanager(t, "4s")
	_, js := sinktest.StartJetStream(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	in := sinktest.Lifecycle("restored", "n2", 0)[0]
	sinktest.Publish(t, js, in)
	run := func(s *Sink) (*sinks.Dispatcher, func()) {
		d := sinks.NewDispatcher(js, s, sinks.DispatcherConfig{}, log)
		return d, sinktest.Run(t, d)
	}
	s1, _ := New("am", Config{URLs: []string{base}, ResendInterval: 300 * time.Millisecond}, log)
	d1, stop1 := run(s1)
	sinktest.WaitFor(t, "delivery", 10*time.Second, func() bool { return d1.Stats().Delivered == 1 })
	stop1()
	s2, _ := New("am", Config{URLs: []string{base}, ResendInterval: 300 * time.Millisecond}, log)
	_, stop2 := run(s2)
	defer stop2()
	sinktest.WaitFor(t, "restored open set", 10*time.Second, func() bool { return s2.Open() == 1 })
	until := time.Now().Add(6 * time.Second)
	for time.Now().Before(until) {
		if findAlert(t, base, "restored") == nil {
			t.Fatalf("alert expired after the restart: %+v (now %s)", externaltest.Alerts(t, base), time.Now())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Two Alertmanagers (an HA pair): every alert goes to both; one down is
// still a success; both down is a retryable failure.
func TestHAPair(t *testing.T) {
	var mu sync.Mutex
	got := map[string]int{}
	up := map[string]bool{"a": true, "b": true}
	mk := func(name string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			if !up[name] {
				w.WriteHeader(503)
				return
			}
			var alerts []Alert
			if r.URL.Path != "/api/v2/alerts" || json.NewDecoder(r.Body).Decode(&alerts) != nil || len(alerts) == 0 {
				w.WriteHeader(400)
				return
			}
			got[name]++
		}))
	}
	a, b := mk("a"), mk("b")
	defer a.Close()
	defer b.Close()
	s, err := New("am", Config{URLs: []string{a.URL, b.URL + "/"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := sinktest.Lifecycle("ha", "n", 0)[0]
	if _, err := s.Send(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	up["a"] = false
	mu.Unlock()
	if _, err := s.Send(context.Background(), in); err != nil {
		t.Fatalf("one down: %v", err)
	}
	mu.Lock()
	up["b"] = false
	mu.Unlock()
	if r, err := s.Send(context.Background(), in); err == nil || !r {
		t.Fatalf("both down: retryable=%v err=%v", r, err)
	}
	if got["a"] != 1 || got["b"] != 2 {
		t.Errorf("posts %v", got)
	}
}

func TestBuildAlertAndConfig(t *testing.T) {
	s, _ := New("am", Config{URLs: []string{"http://x"}}, nil)
	in := correlate.Incident{ID: "i", Rule: "r.x", Node: "n", Severity: "info", Status: "resolved",
		Group: map[string]string{"fields.alloc-id": "1"}, Labels: map[string]string{"9lives": "y", "node": "spoof"},
		StartedAt: time.Now().Add(-time.Hour)}
	a := s.BuildAlert(in)
	if a.Labels["fields_alloc_id"] != "1" || a.Labels["_9lives"] != "y" || a.Labels["node"] != "n" || a.Labels["alertname"] != "r.x" || a.EndsAt == "" {
		t.Errorf("alert %+v", a)
	}
	c := Config{URLs: []string{"nope"}, ResendInterval: 10 * time.Minute}
	err := c.Validate("sinks[4]")
	if err == nil || !strings.Contains(err.Error(), "sinks[4].urls[0]") || !strings.Contains(err.Error(), "sinks[4].resend_interval") {
		t.Errorf("validate: %v", err)
	}
}
