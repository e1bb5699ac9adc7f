// Package pagerduty pages through the PagerDuty Events API v2: a trigger
// for a firing or updated incident and a resolve for a resolved one, with
// the incident id as dedup_key, so that one incident is one page.
package pagerduty

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/sinks"
)

// MaxSummary is the longest summary PagerDuty accepts (characters).
const MaxSummary = 1024

// Sink sends events to PagerDuty.
type Sink struct {
	name   string
	cfg    Config
	key    ingest.Secret
	client *http.Client
}

// New returns a PagerDuty sink. cfg must be resolved (Config.Resolve):
// New fails without a routing key.
func New(name string, cfg Config) (*Sink, error) {
	cfg.SetDefaults()
	if !cfg.RoutingKey.IsSet() {
		return nil, fmt.Errorf("pagerduty sink %q: routing_key: not set (resolve routing_key_file or routing_key_env first)", name)
	}
	if err := sinks.CheckURL("url", cfg.URL); err != nil {
		return nil, fmt.Errorf("pagerduty sink %q: %w", name, err)
	}
	return &Sink{name: name, cfg: cfg, key: cfg.RoutingKey, client: &http.Client{Timeout: cfg.Timeout}}, nil
}

// Name implements sinks.Sink.
func (s *Sink) Name() string { return s.name }

// Close implements sinks.Sink.
func (s *Sink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

// Event is an Events API v2 request body.
type Event struct {
	RoutingKey  string   `json:"routing_key"`
	EventAction string   `json:"event_action"`
	DedupKey    string   `json:"dedup_key,omitempty"`
	Payload     *Payload `json:"payload,omitempty"`
	Links       []Link   `json:"links,omitempty"`
	Client      string   `json:"client,omitempty"`
	ClientURL   string   `json:"client_url,omitempty"`
}

// Payload is the payload of a trigger event.
type Payload struct {
	Summary       string         `json:"summary"`
	Source        string         `json:"source"`
	Severity      string         `json:"severity"`
	Timestamp     string         `json:"timestamp,omitempty"`
	Component     string         `json:"component,omitempty"`
	Group         string         `json:"group,omitempty"`
	Class         string         `json:"class,omitempty"`
	CustomDetails map[string]any `json:"custom_details,omitempty"`
}

// Link is a link shown with the alert.
type Link struct {
	Href string `json:"href"`
	Text string `json:"text,omitempty"`
}

// Severity maps a klaxon severity to PagerDuty's (critical, error,
// warning, info); an unknown one becomes error.
func Severity(s string) string {
	switch strings.ToLower(s) {
	case "critical":
		return "critical"
	case "warning", "warn":
		return "warning"
	case "info":
		return "info"
	}
	return "error"
}

// BuildEvent returns the event for one incident change (routing key
// included).
func (s *Sink) BuildEvent(in correlate.Incident) Event {
	ev := Event{RoutingKey: s.key.Reveal(), DedupKey: in.ID, Client: s.cfg.Client, ClientURL: s.cfg.ClientURL}
	if in.Status == correlate.StatusResolved {
		ev.EventAction = "resolve"
		return ev
	}
	ev.EventAction = "trigger"
	title := in.Title
	if title == "" {
		title = in.Rule
	}
	summary := title
	if in.Node != "" && !strings.Contains(title, in.Node) {
		summary = title + " on " + in.Node
	}
	source := in.Node
	if source == "" {
		source = "klaxon"
	}
	evidence := make([]map[string]any, 0, len(in.Evidence))
	for _, e := range in.Evidence {
		evidence = append(evidence, map[string]any{"time": e.Time.UTC().Format(time.RFC3339Nano), "kind": e.Kind, "msg": e.Msg})
	}
	details := map[string]any{
		"summary":     in.Summary,
		"count":       in.Count,
		"group":       in.Group,
		"labels":      in.Labels,
		"evidence":    evidence,
		"rule":        in.Rule,
		"status":      in.Status,
		"incident_id": in.ID,
	}
	if in.Runbook != "" {
		details["runbook"] = in.Runbook
	}
	if !in.StartedAt.IsZero() {
		details["started_at"] = in.StartedAt.UTC().Format(time.RFC3339)
	}
	ev.Payload = &Payload{
		Summary:       sinks.Truncate(strings.Join(strings.Fields(summary), " "), MaxSummary),
		Source:        source,
		Severity:      Severity(in.Severity),
		Component:     in.Labels["component"],
		Group:         in.Rule,
		Class:         in.Rule,
		CustomDetails: details,
	}
	if !in.UpdatedAt.IsZero() {
		ev.Payload.Timestamp = in.UpdatedAt.UTC().Format(time.RFC3339Nano)
	}
	if u := in.Labels["runbook_url"]; u != "" {
		if p, err := url.Parse(u); err == nil && (p.Scheme == "http" || p.Scheme == "https") {
			ev.Links = append(ev.Links, Link{Href: u, Text: "Runbook"})
		}
	}
	for _, k := range in.LinkNames() {
		if p, err := url.Parse(in.Links[k]); err == nil && (p.Scheme == "http" || p.Scheme == "https") {
			ev.Links = append(ev.Links, Link{Href: in.Links[k], Text: "Nomad " + k})
		}
	}
	return ev
}

// Send implements sinks.Sink. Network errors, timeouts, 5xx and 429 are
// retryable (429 carries Retry-After when PagerDuty sends one); other
// answers are not.
func (s *Sink) Send(ctx context.Context, in correlate.Incident) (bool, error) {
	body, err := json.Marshal(s.BuildEvent(in))
	if err != nil {
		return false, fmt.Errorf("pagerduty sink %q: %w", s.name, err)
	}
	_, retryable, err := sinks.DoHTTP(ctx, s.client, sinks.HTTPRequest{
		Method:  http.MethodPost,
		URL:     s.cfg.URL,
		Header:  http.Header{"Content-Type": {"application/json"}},
		Body:    body,
		Secrets: []string{s.key.Reveal()},
	})
	if err != nil {
		return retryable, fmt.Errorf("pagerduty sink %q: %s %s: %w", s.name, actionOf(in), in.ID, err)
	}
	return false, nil
}

func actionOf(in correlate.Incident) string {
	if in.Status == correlate.StatusResolved {
		return "resolve"
	}
	return "trigger"
}

var _ sinks.Sink = (*Sink)(nil)
