package pagerduty

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/sinks"
	"github.com/klaxon-dev/klaxon/sinks/internal/sinktest"
)

const testKey = "R0UT1NGKEY0123456789abcdefSECRET"

// pdServer validates requests strictly against the Events API v2 schema
// and answers like PagerDuty: 202 with status/message/dedup_key, or 400
// with errors.
type pdServer struct {
	srv    *httptest.Server
	mu     sync.Mutex
	events []map[string]any
	fail   func() (int, string)
}

func newPD(t *testing.T) *pdServer {
	p := &pdServer{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		fail := p.fail
		p.mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		if fail != nil {
			if code, msg := fail(); code != 0 {
				w.WriteHeader(code)
				io.WriteString(w, msg+string(body)) // echo, as a hostile server might
				return
			}
		}
		if err := checkEvent(r, body); err != nil {
			t.Errorf("invalid event: %v\n%s", err, body)
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"status":"invalid event","message":"Event object is invalid","errors":[%q]}`, err.Error())
			return
		}
		var ev map[string]any
		_ = json.Unmarshal(body, &ev)
		p.mu.Lock()
		p.events = append(p.events, ev)
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(202)
		fmt.Fprintf(w, `{"status":"success","message":"Event processed","dedup_key":%q}`, ev["dedup_key"])
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func checkEvent(r *http.Request, body []byte) error {
	if r.Method != "POST" || r.URL.Path != "/v2/enqueue" {
		return fmt.Errorf("%s %s", r.Method, r.URL.Path)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("content type %q", ct)
	}
	var ev map[string]any
	if err := json.Unmarshal(body, &ev); err != nil {
		return err
	}
	allowed := map[string]bool{"routing_key": true, "event_action": true, "dedup_key": true, "payload": true, "images": true, "links": true, "client": true, "client_url": true}
	for k := range ev {
		if !allowed[k] {
			return fmt.Errorf("unknown field %q", k)
		}
	}
	if k, _ := ev["routing_key"].(string); k != testKey {
		return fmt.Errorf("routing_key %q", k)
	}
	dk, _ := ev["dedup_key"].(string)
	if dk == "" || len(dk) > 255 {
		return fmt.Errorf("dedup_key %q", dk)
	}
	switch ev["event_action"] {
	case "resolve", "acknowledge":
		return nil
	case "trigger":
	default:
		return fmt.Errorf("event_action %v", ev["event_action"])
	}
	p, ok := ev["payload"].(map[string]any)
	if !ok {
		return fmt.Errorf("trigger without payload")
	}
	pAllowed := map[string]bool{"summary": true, "source": true, "severity": true, "timestamp": true, "component": true, "group": true, "class": true, "custom_details": true}
	for k := range p {
		if !pAllowed[k] {
			return fmt.Errorf("unknown payload field %q", k)
		}
	}
	s, _ := p["summary"].(string)
	if s == "" || utf8.RuneCountInString(s) > 1024 {
		return fmt.Errorf("summary length %d", utf8.RuneCountInString(s))
	}
	if src, _ := p["source"].(string); src == "" {
		return fmt.Errorf("no source")
	}
	switch p["severity"] {
	case "critical", "error", "warning", "info":
	default:
		return fmt.Errorf("severity %v", p["severity"])
	}
	if ts, ok := p["timestamp"]; ok {
		if s, _ := ts.(string); s == "" {
			return fmt.Errorf("timestamp %v", ts)
		} else if _, err := time.Parse(time.RFC3339, s); err != nil {
			return fmt.Errorf("timestamp: %v", err)
		}
	}
	for _, k := range []string{"component", "group", "class"} {
		if v, ok := p[k]; ok {
			if _, isStr := v.(string); !isStr {
				return fmt.Errorf("%s not a string", k)
			}
		}
	}
	if cd, ok := p["custom_details"]; ok {
		if _, isObj := cd.(map[string]any); !isObj {
			return fmt.Errorf("custom_details not an object")
		}
	}
	if links, ok := ev["links"]; ok {
		arr, _ := links.([]any)
		for _, l := range arr {
			m, _ := l.(map[string]any)
			if h, _ := m["href"].(string); h == "" {
				return fmt.Errorf("link without href")
			}
		}
	}
	return nil
}

func (p *pdServer) got() []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]map[string]any(nil), p.events...)
}

func TestEventShape(t *testing.T) {
	s, err := New("pd", Config{RoutingKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	in := sinktest.Lifecycle("abc", "win-7", 0)[0]
	in.Title = strings.Repeat("x", 2000)
	in.Severity = "warning"
	ev := s.BuildEvent(in)
	if ev.EventAction != "trigger" || ev.DedupKey != "abc" || ev.Payload.Severity != "warning" || ev.Payload.Source != "win-7" ||
		utf8.RuneCountInString(ev.Payload.Summary) != 1024 || ev.Payload.Component != "windows" || ev.Payload.Group != in.Rule ||
		ev.Payload.Class != in.Rule || len(ev.Links) != 1 || ev.Links[0].Href != "https://runbooks.example/heap" || ev.Client != "klaxon" {
		t.Errorf("event %+v payload %+v", ev, ev.Payload)
	}
	cd := ev.Payload.CustomDetails
	if cd["runbook"] != in.Runbook || cd["count"] != 10 || cd["summary"] != in.Summary || len(cd["evidence"].([]map[string]any)) != 1 {
		t.Errorf("custom_details %v", cd)
	}
	// The Nomad UI links follow the runbook, job first; a link that is
	// not http(s) is left out.
	in.Links = map[string]string{"node": "https://nomad.example/ui/clients/n1", "job": "https://nomad.example/ui/jobs/web@default", "bad": "javascript:alert(1)"}
	ev = s.BuildEvent(in)
	if len(ev.Links) != 3 || ev.Links[1] != (Link{Href: in.Links["job"], Text: "Nomad job"}) || ev.Links[2] != (Link{Href: in.Links["node"], Text: "Nomad node"}) {
		t.Errorf("links %+v", ev.Links)
	}
	for sev, want := range map[string]string{"critical": "critical", "error": "error", "warning": "warning", "info": "info", "odd": "error"} {
		if Severity(sev) != want {
			t.Errorf("Severity(%q) = %q", sev, Severity(sev))
		}
	}
}

// Fed firing, updated, updated, resolved per incident through the
// dispatcher (group_interval folds the updates): one trigger and one
// resolve per incident, with the same dedup_key.
func TestOneTriggerOneResolvePerIncident(t *testing.T) {
	_, js := sinktest.StartJetStream(t)
	pd := newPD(t)
	s, err := New("pd", Config{URL: pd.srv.URL + "/v2/enqueue", RoutingKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"inc-a", "inc-b"}
	sinktest.PublishLifecycles(t, js, ids, 2)
	d := sinks.NewDispatcher(js, s, sinks.DispatcherConfig{
		Throttle: sinks.NewThrottle(sinks.ThrottleConfig{GroupInterval: 500 * time.Millisecond}, time.Now),
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer sinktest.Run(t, d)()
	sinktest.WaitFor(t, "both updates of both incidents folded", 15*time.Second, func() bool { return d.Stats().Folded >= 4 })
	evs := pd.got()
	actions := map[string][]string{}
	for _, ev := range evs {
		dk := ev["dedup_key"].(string)
		actions[dk] = append(actions[dk], ev["event_action"].(string))
	}
	for _, id := range ids {
		if got := strings.Join(actions[id], ","); got != "trigger,resolve" {
			t.Errorf("incident %s: events %s, want trigger,resolve", id, got)
		}
	}
	if len(evs) != 4 {
		t.Errorf("%d events, want 4", len(evs))
	}
}

// A secret in the config never reaches an error, a log line or a dead
// letter, even when the server echoes it.
func TestRoutingKeyNeverLeaks(t *testing.T) {
	nc, js := sinktest.StartJetStream(t)
	_ = nc
	pd := newPD(t)
	pd.fail = func() (int, string) { return 400, "bad request, you sent: " }
	s, err := New("pd", Config{URL: pd.srv.URL + "/v2/enqueue", RoutingKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	in := sinktest.Lifecycle("leak", "n", 0)[0]
	retryable, err := s.Send(context.Background(), in)
	if err == nil || retryable {
		t.Fatalf("400: retryable=%v err=%v", retryable, err)
	}
	if strings.Contains(err.Error(), testKey) || !strings.Contains(err.Error(), "<secret>") {
		t.Errorf("error leaks or lost the echo: %v", err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := Config{URL: pd.srv.URL + "/v2/enqueue", RoutingKey: testKey}
	log.Info("config", "pagerduty", cfg, "key", cfg.RoutingKey)
	sinktest.Publish(t, js, in)
	d := sinks.NewDispatcher(js, s, sinks.DispatcherConfig{}, log)
	stop := sinktest.Run(t, d)
	sinktest.WaitFor(t, "dead letter", 10*time.Second, func() bool { return d.Stats().DeadLettered == 1 })
	stop()
	if strings.Contains(logs.String(), testKey) {
		t.Errorf("log leaks the routing key:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "HTTP 400") {
		t.Errorf("log lacks the failure:\n%s", logs.String())
	}
	list, err := sinks.ListDLQ(context.Background(), js, "pd", 0)
	if err != nil || len(list) != 1 {
		t.Fatalf("dlq %v %v", list, err)
	}
	if strings.Contains(list[0].Error, testKey) {
		t.Errorf("dead letter leaks: %s", list[0].Error)
	}
	// Network errors too.
	pd.srv.Close()
	_, err = s.Send(context.Background(), in)
	if err == nil || strings.Contains(err.Error(), testKey) {
		t.Errorf("network error: %v", err)
	}
}

func TestRetryClassification(t *testing.T) {
	for _, tc := range []struct {
		code      int
		retryable bool
		wait      time.Duration
	}{{429, true, 3 * time.Second}, {500, true, 0}, {503, true, 3 * time.Second}, {400, false, 0}, {403, false, 0}, {404, false, 0}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(tc.code)
		}))
		s, _ := New("pd", Config{URL: srv.URL, RoutingKey: testKey})
		r, err := s.Send(context.Background(), sinktest.Lifecycle("x", "n", 0)[0])
		srv.Close()
		var ra sinks.RetryAfter
		var w time.Duration
		if errorsAs(err, &ra) {
			w = ra.RetryAfter()
		}
		if err == nil || r != tc.retryable || w != tc.wait {
			t.Errorf("HTTP %d: retryable=%v wait=%s err=%v", tc.code, r, w, err)
		}
	}
	// A timeout is retryable.
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer srv.Close()
	defer close(stop)
	s, _ := New("pd", Config{URL: srv.URL, RoutingKey: testKey, Timeout: 100 * time.Millisecond})
	if r, err := s.Send(context.Background(), sinktest.Lifecycle("x", "n", 0)[0]); err == nil || !r {
		t.Errorf("timeout: retryable=%v err=%v", r, err)
	}
}

func TestConfig(t *testing.T) {
	var c Config
	c.SetDefaults()
	err := c.Validate("sinks[2]")
	if err == nil || !strings.Contains(err.Error(), "sinks[2].routing_key") {
		t.Fatalf("missing key: %v", err)
	}
	if err := c.Resolve("sinks[2]"); err == nil || !strings.Contains(err.Error(), "sinks[2].routing_key") {
		t.Fatalf("resolve without key: %v", err)
	}
	f := filepath.Join(t.TempDir(), "key")
	os.WriteFile(f, []byte(testKey+"\n"), 0o600)
	c = Config{RoutingKeyFile: f}
	c.SetDefaults()
	if err := c.Validate("sinks[0]"); err != nil {
		t.Fatal(err)
	}
	if err := c.Resolve("sinks[0]"); err != nil || c.RoutingKey != ingest.Secret(testKey) {
		t.Fatalf("file: %v", err)
	}
	t.Setenv("KLAXON_TEST_PD_KEY", testKey)
	c = Config{RoutingKeyEnv: "KLAXON_TEST_PD_KEY"}
	if err := c.Resolve("sinks[0]"); err != nil || c.RoutingKey.Reveal() != testKey {
		t.Fatalf("env: %v", err)
	}
	c = Config{RoutingKeyEnv: "KLAXON_TEST_UNSET_VAR"}
	if err := c.Resolve("sinks[1]"); err == nil || !strings.Contains(err.Error(), "sinks[1].routing_key_env") {
		t.Fatalf("unset env: %v", err)
	}
	c = Config{RoutingKey: testKey, RoutingKeyEnv: "X", URL: "ftp://x"}
	err = c.Validate("sinks[3]")
	if err == nil || !strings.Contains(err.Error(), "sinks[3].url") || !strings.Contains(err.Error(), "only one") || strings.Contains(err.Error(), testKey) {
		t.Fatalf("validate: %v", err)
	}
	if _, err := New("pd", Config{}); err == nil {
		t.Fatal("New without a key")
	}
	_ = correlate.StatusFiring
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
