package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/sinks"
	"github.com/klaxon-dev/klaxon/sinks/internal/sinktest"
)

const hookPath = "/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXSECRET"

// checkMessage validates an incoming-webhook Block Kit message.
func checkMessage(b []byte) (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if s, _ := m["text"].(string); s == "" {
		return nil, fmt.Errorf("no fallback text")
	}
	blocks, ok := m["blocks"].([]any)
	if !ok || len(blocks) == 0 || len(blocks) > 50 {
		return nil, fmt.Errorf("blocks: %v", m["blocks"])
	}
	text := func(v any, types ...string) (string, error) {
		o, _ := v.(map[string]any)
		ty, _ := o["type"].(string)
		s, _ := o["text"].(string)
		ok := false
		for _, t := range types {
			ok = ok || ty == t
		}
		if !ok || s == "" {
			return "", fmt.Errorf("text object %v", v)
		}
		return s, nil
	}
	for _, bl := range blocks {
		o := bl.(map[string]any)
		switch o["type"] {
		case "header":
			s, err := text(o["text"], "plain_text")
			if err != nil || utf8.RuneCountInString(s) > 150 {
				return nil, fmt.Errorf("header %v %v", s, err)
			}
		case "section":
			if t, ok := o["text"]; ok {
				s, err := text(t, "mrkdwn", "plain_text")
				if err != nil || utf8.RuneCountInString(s) > 3000 {
					return nil, fmt.Errorf("section text: %v", err)
				}
			}
			if f, ok := o["fields"]; ok {
				fs, _ := f.([]any)
				if len(fs) == 0 || len(fs) > 10 {
					return nil, fmt.Errorf("fields %d", len(fs))
				}
				for _, x := range fs {
					s, err := text(x, "mrkdwn", "plain_text")
					if err != nil || utf8.RuneCountInString(s) > 2000 {
						return nil, fmt.Errorf("field: %v", err)
					}
				}
			}
			if o["text"] == nil && o["fields"] == nil {
				return nil, fmt.Errorf("empty section")
			}
		case "context":
			els, _ := o["elements"].([]any)
			if len(els) == 0 || len(els) > 10 {
				return nil, fmt.Errorf("context elements %d", len(els))
			}
			for _, e := range els {
				if _, err := text(e, "mrkdwn", "plain_text"); err != nil {
					return nil, err
				}
			}
		default:
			return nil, fmt.Errorf("block type %v", o["type"])
		}
	}
	return m, nil
}

type slackServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	msgs []map[string]any
}

func newSlack(t *testing.T) *slackServer {
	s := &slackServer{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != "POST" || r.URL.Path != hookPath || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			w.WriteHeader(404)
			io.WriteString(w, "no_service")
			return
		}
		m, err := checkMessage(b)
		if err != nil {
			t.Errorf("invalid payload: %v\n%s", err, b)
			w.WriteHeader(400)
			io.WriteString(w, "invalid_payload")
			return
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, m)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok")
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func TestFiringUpdatesResolvedIsTwoMessages(t *testing.T) {
	_, js := sinktest.StartJetStream(t)
	sl := newSlack(t)
	s, err := New("slack", Config{WebhookURL: ingest.Secret(sl.srv.URL + hookPath)})
	if err != nil {
		t.Fatal(err)
	}
	sinktest.PublishLifecycles(t, js, []string{"a", "b"}, 2)
	d := sinks.NewDispatcher(js, s, sinks.DispatcherConfig{
		Throttle: sinks.NewThrottle(sinks.ThrottleConfig{GroupInterval: 300 * time.Millisecond}, time.Now),
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer sinktest.Run(t, d)()
	sinktest.WaitFor(t, "updates folded", 15*time.Second, func() bool { return d.Stats().Folded >= 4 })
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if len(sl.msgs) != 4 {
		t.Fatalf("%d messages, want 4", len(sl.msgs))
	}
	per := map[string][]string{}
	for _, m := range sl.msgs {
		b, _ := json.Marshal(m)
		id := "a"
		if strings.Contains(string(b), "incident `b`") {
			id = "b"
		}
		header := m["blocks"].([]any)[0].(map[string]any)["text"].(map[string]any)["text"].(string)
		per[id] = append(per[id], header)
	}
	for id, hs := range per {
		if len(hs) != 2 || !strings.Contains(hs[0], "Firing") || !strings.Contains(hs[1], "Resolved") || !strings.HasPrefix(hs[1], "✅") {
			t.Errorf("incident %s headers %q", id, hs)
		}
	}
}

func TestBuildMessage(t *testing.T) {
	in := sinktest.Lifecycle("x", "win-7", 0)[0]
	in.Summary = "a <b> & c"
	m := BuildMessage(in)
	b, _ := json.Marshal(m)
	if _, err := checkMessage(b); err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{"*Node*\\nwin-7", "*Severity*\\ncritical", "*Count*\\n10", "*Rule*\\nnomad.windows", "incident `x`", "a \\u0026lt;b\\u0026gt; \\u0026amp; c"} {
		if !strings.Contains(s, want) {
			t.Errorf("message lacks %s: %s", want, s)
		}
	}
	in.Title = strings.Repeat("é", 400)
	b, _ = json.Marshal(BuildMessage(in))
	if _, err := checkMessage(b); err != nil {
		t.Fatal(err)
	}
}

func TestErrorsAndSecrets(t *testing.T) {
	var code int
	var retryAfter string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(code)
		io.WriteString(w, "channel_not_found "+r.URL.Path)
	}))
	url := srv.URL + hookPath
	s, _ := New("slack", Config{WebhookURL: ingest.Secret(url)})
	in := sinktest.Lifecycle("x", "n", 0)[0]
	code = 404
	r, err := s.Send(context.Background(), in)
	if err == nil || r || strings.Contains(err.Error(), "XXXXSECRET") || !strings.Contains(err.Error(), "channel_not_found") {
		t.Errorf("404: %v %v", r, err)
	}
	code, retryAfter = 429, "7"
	r, err = s.Send(context.Background(), in)
	var ra sinks.RetryAfter
	if err == nil || !r || !errorsAs(err, &ra) || ra.RetryAfter() != 7*time.Second {
		t.Errorf("429: %v %v", r, err)
	}
	srv.Close()
	r, err = s.Send(context.Background(), in)
	if err == nil || !r || strings.Contains(err.Error(), "XXXXSECRET") || strings.Contains(err.Error(), hookPath) {
		t.Errorf("network: %v %v", r, err)
	}
	var c Config
	if err := c.Validate("sinks[1]"); err == nil || !strings.Contains(err.Error(), "sinks[1].webhook_url") {
		t.Errorf("validate: %v", err)
	}
	c = Config{WebhookURLEnv: "KLAXON_TEST_SLACK_URL"}
	t.Setenv("KLAXON_TEST_SLACK_URL", url)
	if err := c.Resolve("sinks[1]"); err != nil || c.WebhookURL.Reveal() != url {
		t.Errorf("resolve: %v", err)
	}
	if fmt.Sprint(c) == "" || strings.Contains(fmt.Sprintf("%v %+v", c, c), "SECRET") {
		t.Errorf("config prints the URL: %+v", c)
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
