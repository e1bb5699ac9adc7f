// Package alertmanager sends incidents to Prometheus Alertmanager through
// its API v2 (POST /api/v2/alerts) and keeps them alive: Alertmanager
// resolves an alert that is not re-sent within resolve_timeout, so the
// sink re-posts the alerts it knows to be open every ResendInterval.
package alertmanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/sinks"
)

// Alert is one postable alert of the API v2.
type Alert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     string            `json:"startsAt,omitempty"`
	EndsAt       string            `json:"endsAt,omitempty"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// Sink posts alerts to one or more Alertmanagers.
type Sink struct {
	name   string
	cfg    Config
	client *http.Client
	log    *slog.Logger
	now    func() time.Time

	// postMu serialises posts, so a re-send of a firing alert can never
	// overtake the resolve of the same alert.
	postMu sync.Mutex
	mu     sync.Mutex
	open   map[string]Alert
}

// New returns an Alertmanager sink. cfg must be resolved (Config.Resolve).
func New(name string, cfg Config, log *slog.Logger) (*Sink, error) {
	cfg.SetDefaults()
	if err := cfg.Validate("sink " + name); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	for i, u := range cfg.URLs {
		cfg.URLs[i] = strings.TrimRight(u, "/")
	}
	return &Sink{
		name: name, cfg: cfg, client: &http.Client{Timeout: cfg.Timeout},
		log: log.With("sink", name), now: time.Now, open: map[string]Alert{},
	}, nil
}

// Name implements sinks.Sink.
func (s *Sink) Name() string { return s.name }

// Close implements sinks.Sink.
func (s *Sink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

// LabelName makes s a valid Alertmanager label name: characters outside
// [a-zA-Z0-9_] become '_', and a leading digit gets a '_' before it.
func LabelName(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
			b.WriteRune(r)
		case r >= '0' && r <= '9':
			if i == 0 {
				b.WriteByte('_')
			}
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}

// BuildAlert returns the alert of one incident change: labels alertname
// (the rule id), node, severity, incident_id, the rule's labels and the
// group values (keys with "." as "_"); annotations title, summary, runbook,
// count and <name>_url for each of the incident's links (job_url,
// allocation_url, node_url: the Nomad UI); startsAt the incident start;
// endsAt only when resolved.
func (s *Sink) BuildAlert(in correlate.Incident) Alert {
	labels := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(in.Labels)) {
		labels[LabelName(k)] = in.Labels[k]
	}
	for _, k := range slices.Sorted(maps.Keys(in.Group)) {
		labels[LabelName(k)] = in.Group[k]
	}
	labels["alertname"] = in.Rule
	labels["node"] = in.Node
	labels["severity"] = in.Severity
	labels["incident_id"] = in.ID
	for k, v := range labels {
		if v == "" {
			delete(labels, k) // Alertmanager drops empty labels anyway
		}
	}
	ann := map[string]string{"count": strconv.Itoa(in.Count)}
	for k, v := range map[string]string{"title": in.Title, "summary": in.Summary, "runbook": in.Runbook} {
		if v != "" {
			ann[k] = v
		}
	}
	for k, u := range in.Links {
		if u != "" {
			ann[LabelName(k)+"_url"] = u
		}
	}
	a := Alert{Labels: labels, Annotations: ann}
	if !in.StartedAt.IsZero() {
		a.StartsAt = in.StartedAt.UTC().Format(time.RFC3339Nano)
	}
	if s.cfg.GeneratorURL != "" {
		a.GeneratorURL = s.cfg.GeneratorURL + in.ID
	}
	if in.Status == correlate.StatusResolved {
		end := s.now()
		if in.ResolvedAt != nil && !in.ResolvedAt.IsZero() {
			end = *in.ResolvedAt
		}
		if !in.StartedAt.IsZero() && !end.After(in.StartedAt) {
			end = in.StartedAt.Add(time.Millisecond)
		}
		if end.After(s.now()) {
			end = s.now()
		}
		a.EndsAt = end.UTC().Format(time.RFC3339Nano)
	}
	return a
}

// Send implements sinks.Sink: post the alert to every Alertmanager. It
// succeeds if any of them took it; otherwise the failure is retryable if
// any of them failed in a retryable way.
func (s *Sink) Send(ctx context.Context, in correlate.Incident) (bool, error) {
	a := s.BuildAlert(in)
	s.postMu.Lock()
	defer s.postMu.Unlock()
	retryable, err := s.post(ctx, []Alert{a})
	if err != nil {
		return retryable, fmt.Errorf("alertmanager sink %q: incident %s: %w", s.name, in.ID, err)
	}
	s.mu.Lock()
	if in.Status == correlate.StatusResolved {
		delete(s.open, in.ID)
	} else {
		s.open[in.ID] = a
	}
	s.mu.Unlock()
	return false, nil
}

// post sends alerts to all URLs in parallel.
func (s *Sink) post(ctx context.Context, alerts []Alert) (bool, error) {
	body, err := json.Marshal(alerts)
	if err != nil {
		return false, err
	}
	h := http.Header{"Content-Type": {"application/json"}}
	var secrets []string
	if s.cfg.BearerToken.IsSet() {
		h.Set("Authorization", "Bearer "+s.cfg.BearerToken.Reveal())
		secrets = append(secrets, s.cfg.BearerToken.Reveal())
	}
	type result struct {
		retryable bool
		err       error
	}
	results := make([]result, len(s.cfg.URLs))
	var wg sync.WaitGroup
	for i, u := range s.cfg.URLs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, r, err := sinks.DoHTTP(ctx, s.client, sinks.HTTPRequest{
				Method: http.MethodPost, URL: u + "/api/v2/alerts", Header: h, Body: body, Secrets: append(secrets, u),
			})
			results[i] = result{r, err}
		}()
	}
	wg.Wait()
	var errs []error
	retryable := false
	for _, r := range results {
		if r.err == nil {
			return false, nil
		}
		errs = append(errs, r.err)
		retryable = retryable || r.retryable
	}
	return retryable, errors.Join(errs...)
}

// Restore implements sinks.Restorer: an open incident found in the stream
// at start joins the re-send set.
func (s *Sink) Restore(in correlate.Incident) {
	if in.Status == correlate.StatusResolved {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.open[in.ID]; !ok {
		s.open[in.ID] = s.BuildAlert(in)
	}
}

// Open returns the number of alerts in the re-send set.
func (s *Sink) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// Run implements sinks.Runner: re-post the open alerts every
// ResendInterval until ctx is done. The Dispatcher of the sink runs it.
func (s *Sink) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.ResendInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		s.Resend(ctx)
	}
}

// Resend re-posts the open alerts once.
func (s *Sink) Resend(ctx context.Context) {
	s.postMu.Lock()
	defer s.postMu.Unlock()
	s.mu.Lock()
	alerts := make([]Alert, 0, len(s.open))
	for _, a := range s.open {
		alerts = append(alerts, a)
	}
	s.mu.Unlock()
	if len(alerts) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if _, err := s.post(rctx, alerts); err != nil && ctx.Err() == nil {
		s.log.Warn("re-sending open alerts failed; will try again", "alerts", len(alerts), "err", err)
	}
}

var (
	_ sinks.Sink     = (*Sink)(nil)
	_ sinks.Runner   = (*Sink)(nil)
	_ sinks.Restorer = (*Sink)(nil)
)
