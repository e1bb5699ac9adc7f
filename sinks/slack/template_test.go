package slack

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/sinks/internal/sinktest"
)

// TestTemplates: the title and text templates shape the message a real
// receiver checks (Block Kit limits), with the incident's labels (e.g. the
// job's owner) and the escape function; bad templates are load errors.
func TestTemplates(t *testing.T) {
	sl := newSlack(t)
	cfg := Config{
		WebhookURL: ingest.Secret(sl.srv.URL + hookPath),
		Title:      `{{ if eq .Status "resolved" }}OK{{ else }}PAGE{{ end }} {{ .Labels.team }}: {{ .Title }}`,
		Text:       "<@{{ .Labels.pager }}> {{ escape .Summary }} ({{ .Count }} events, job {{ index .Labels \"job\" }})",
	}
	s, err := New("slack", cfg)
	if err != nil {
		t.Fatal(err)
	}
	in := sinktest.Lifecycle("x", "vm", 0)[0]
	in.Summary = "a <b> & c"
	in.Labels = map[string]string{"team": "payments", "pager": "U024BE7LH", "job": "pay"}
	if _, err := s.Send(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if len(sl.msgs) != 1 {
		t.Fatalf("%d messages", len(sl.msgs))
	}
	b, _ := json.Marshal(sl.msgs[0])
	got := string(b)
	for _, want := range []string{
		`"text":"PAGE payments: ` + in.Title + `"`,
		`"text":"\u003c@U024BE7LH\u003e a \u0026lt;b\u0026gt; \u0026amp; c (10 events, job pay)"`,
		`*Node*\nvm`, "incident `x`",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("message lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, `"text":"a \u0026lt;b`) {
		t.Errorf("the default summary section is still there:\n%s", got)
	}

	for _, bad := range []struct{ title, text, want string }{
		{`{{ .Nope }}`, "", "title"},
		{"", `{{ .Labels.team `, "text"},
		{"", `{{ truncate "x" .Title }}`, "text"},
	} {
		c := Config{WebhookURL: "https://hooks.slack.com/services/T/B/X", Title: bad.title, Text: bad.text}
		if err := c.Validate("sinks[0]"); err == nil || !strings.Contains(err.Error(), "sinks[0]."+bad.want) {
			t.Errorf("Validate(%q, %q) = %v, want an error about sinks[0].%s", bad.title, bad.text, err, bad.want)
		}
		if _, err := New("s", c); err == nil {
			t.Errorf("New(%q, %q) accepted", bad.title, bad.text)
		}
	}
	// A label the incident lacks is empty.
	in.Labels = map[string]string{}
	s2, err := New("slack", Config{WebhookURL: ingest.Secret(sl.srv.URL + hookPath), Text: `team {{ .Labels.team }}.`})
	if err != nil {
		t.Fatal(err)
	}
	sl.mu.Unlock()
	_, err = s2.Send(context.Background(), in)
	sl.mu.Lock()
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(sl.msgs[len(sl.msgs)-1]); !strings.Contains(string(b), `"text":"team ."`) {
		t.Errorf("missing label: %s", b)
	}
}
