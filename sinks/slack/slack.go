// Package slack posts incident changes to a Slack incoming webhook as Block
// Kit messages: a header with a status emoji and the title, the summary,
// node/severity/count/rule fields, and the incident id. The header and the
// summary section can be Go templates over the Incident (Config.Title,
// Config.Text), as the webhook sink's body.
package slack

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/sinks"
)

// Block Kit limits.
const (
	maxHeader  = 150
	maxSection = 3000
	maxField   = 2000
)

// Sink posts to one incoming webhook.
type Sink struct {
	name    string
	url     ingest.Secret
	secrets []string // the URL and its path (the token)
	client  *http.Client
	tmpl    *templates
}

// New returns a Slack sink. cfg must be resolved (Config.Resolve).
func New(name string, cfg Config) (*Sink, error) {
	cfg.SetDefaults()
	if !cfg.WebhookURL.IsSet() {
		return nil, fmt.Errorf("slack sink %q: webhook_url: not set (resolve webhook_url_file or webhook_url_env first)", name)
	}
	if err := sinks.CheckURL("webhook_url", cfg.WebhookURL.Reveal()); err != nil {
		return nil, fmt.Errorf("slack sink %q: %w", name, err)
	}
	secrets := []string{cfg.WebhookURL.Reveal()}
	if u, err := url.Parse(cfg.WebhookURL.Reveal()); err == nil && len(u.Path) > 1 {
		secrets = append(secrets, u.Path, u.RawQuery)
	}
	tmpl, err := parseTemplates(cfg.Title, cfg.Text)
	if err != nil {
		return nil, fmt.Errorf("slack sink %q: %w", name, err)
	}
	return &Sink{name: name, url: cfg.WebhookURL, secrets: secrets, client: &http.Client{Timeout: cfg.Timeout}, tmpl: tmpl}, nil
}

// Name implements sinks.Sink.
func (s *Sink) Name() string { return s.name }

// Close implements sinks.Sink.
func (s *Sink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

// Message is an incoming-webhook message.
type Message struct {
	// Text is the fallback shown in notifications.
	Text   string  `json:"text"`
	Blocks []Block `json:"blocks"`
}

// Block is a Block Kit layout block (header, section or context).
type Block struct {
	Type     string  `json:"type"`
	Text     *Text   `json:"text,omitempty"`
	Fields   []*Text `json:"fields,omitempty"`
	Elements []*Text `json:"elements,omitempty"`
}

// Text is a Block Kit text object.
type Text struct {
	Type  string `json:"type"` // plain_text or mrkdwn
	Text  string `json:"text"`
	Emoji bool   `json:"emoji,omitempty"`
}

func statusWord(in correlate.Incident) (emoji, word string) {
	switch in.Status {
	case correlate.StatusResolved:
		return "✅", "Resolved"
	case correlate.StatusUpdated:
		return "🟠", "Updated"
	}
	if strings.EqualFold(in.Severity, "critical") {
		return "🚨", "Firing"
	}
	return "🔴", "Firing"
}

// escape makes text safe for mrkdwn.
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// BuildMessage renders one incident change.
func BuildMessage(in correlate.Incident) Message {
	emoji, word := statusWord(in)
	title := in.Title
	if title == "" {
		title = in.Rule
	}
	title = strings.Join(strings.Fields(title), " ")
	m := Message{Text: fmt.Sprintf("%s %s: %s", emoji, word, title)}
	m.Blocks = append(m.Blocks, Block{Type: "header", Text: &Text{Type: "plain_text", Text: sinks.Truncate(emoji+" "+word+": "+title, maxHeader), Emoji: true}})
	summary := in.Summary
	if in.Status == correlate.StatusResolved {
		summary = "Resolved. " + summary
	}
	if strings.TrimSpace(summary) != "" {
		m.Blocks = append(m.Blocks, Block{Type: "section", Text: &Text{Type: "mrkdwn", Text: sinks.Truncate(escape(summary), maxSection)}})
	}
	field := func(k, v string) *Text {
		if v == "" {
			v = "-"
		}
		return &Text{Type: "mrkdwn", Text: sinks.Truncate("*"+k+"*\n"+escape(v), maxField)}
	}
	m.Blocks = append(m.Blocks, Block{Type: "section", Fields: []*Text{
		field("Node", in.Node), field("Severity", in.Severity), field("Count", strconv.Itoa(in.Count)), field("Rule", in.Rule),
	}})
	ctx := "incident `" + escape(in.ID) + "`"
	if !in.StartedAt.IsZero() {
		ctx += " · started " + in.StartedAt.UTC().Format("2006-01-02 15:04:05Z")
	}
	if in.ResolvedAt != nil {
		ctx += " · resolved " + in.ResolvedAt.UTC().Format("2006-01-02 15:04:05Z")
	}
	m.Blocks = append(m.Blocks, Block{Type: "context", Elements: []*Text{{Type: "mrkdwn", Text: ctx}}})
	return m
}

// Send implements sinks.Sink. Network errors, timeouts, 5xx and 429
// (with Retry-After) are retryable; Slack's other errors (invalid_payload,
// channel_not_found, …) are not.
func (s *Sink) Send(ctx context.Context, in correlate.Incident) (bool, error) {
	msg, err := s.tmpl.render(BuildMessage(in), in)
	if err != nil {
		return false, fmt.Errorf("slack sink %q: incident %s: %s", s.name, in.ID, sinks.Scrub(err.Error(), s.secrets...))
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return false, fmt.Errorf("slack sink %q: %w", s.name, err)
	}
	_, retryable, err := sinks.DoHTTP(ctx, s.client, sinks.HTTPRequest{
		Method:  http.MethodPost,
		URL:     s.url.Reveal(),
		Header:  http.Header{"Content-Type": {"application/json; charset=utf-8"}},
		Body:    body,
		Secrets: s.secrets,
	})
	if err != nil {
		return retryable, fmt.Errorf("slack sink %q: incident %s: %w", s.name, in.ID, err)
	}
	return false, nil
}

var _ sinks.Sink = (*Sink)(nil)
