// Package webhook sends incident changes to any HTTP endpoint: a templated
// body (the Incident JSON by default), custom headers, and an optional
// HMAC-SHA256 signature of the body.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/template"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/sinks"
)

// Sink posts to one endpoint.
type Sink struct {
	name    string
	cfg     Config
	tmpl    *template.Template
	client  *http.Client
	secrets []string
}

// New returns a webhook sink. cfg must be resolved (Config.Resolve).
func New(name string, cfg Config) (*Sink, error) {
	cfg.SetDefaults()
	if err := cfg.Validate("sink " + name); err != nil {
		return nil, err
	}
	s := &Sink{name: name, cfg: cfg, client: &http.Client{Timeout: cfg.Timeout}}
	if cfg.Body != "" {
		t, err := parseBody(cfg.Body)
		if err != nil {
			return nil, fmt.Errorf("webhook sink %q: body: %w", name, err)
		}
		s.tmpl = t
		if _, err := s.render(correlate.Incident{ID: "x", Group: map[string]string{}, Labels: map[string]string{}}); err != nil {
			return nil, fmt.Errorf("webhook sink %q: body: %w", name, err)
		}
	}
	s.secrets = append(s.secrets, cfg.URL, cfg.SigningKey.Reveal())
	s.secrets = append(s.secrets, urlSecrets(cfg.URL)...)
	for _, v := range cfg.Headers {
		s.secrets = append(s.secrets, v.Reveal())
	}
	return s, nil
}

// Name implements sinks.Sink.
func (s *Sink) Name() string { return s.name }

// Close implements sinks.Sink.
func (s *Sink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

func (s *Sink) render(in correlate.Incident) ([]byte, error) {
	if s.tmpl == nil {
		return json.Marshal(in)
	}
	var b bytes.Buffer
	if err := s.tmpl.Execute(&b, in); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Sign returns the signature header value of body: "sha256=<hex HMAC>".
func Sign(key, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Send implements sinks.Sink. The change id goes in Idempotency-Key, so a
// receiver can drop a redelivery. Network errors, timeouts, 5xx and 429
// are retryable; other answers and template errors are not.
func (s *Sink) Send(ctx context.Context, in correlate.Incident) (bool, error) {
	body, err := s.render(in)
	if err != nil {
		return false, fmt.Errorf("webhook sink %q: body: %s", s.name, sinks.Scrub(err.Error(), s.secrets...))
	}
	h := http.Header{}
	for k, v := range s.cfg.Headers {
		h.Set(k, v.Reveal())
	}
	h.Set("Content-Type", s.cfg.ContentType)
	h.Set("Idempotency-Key", in.ChangeID())
	h.Set("X-Klaxon-Incident", in.ID)
	h.Set("X-Klaxon-Status", in.Status)
	if s.cfg.SigningKey.IsSet() {
		h.Set(s.cfg.SignatureHeader, Sign([]byte(s.cfg.SigningKey.Reveal()), body))
	}
	_, retryable, err := sinks.DoHTTP(ctx, s.client, sinks.HTTPRequest{
		Method: s.cfg.Method, URL: s.cfg.URL, Header: h, Body: body, Secrets: s.secrets,
	})
	if err != nil {
		return retryable, fmt.Errorf("webhook sink %q: incident %s: %w", s.name, in.ID, err)
	}
	return false, nil
}

// urlSecrets are the parts of the URL that may hold a token and that a
// server may echo in an error: the path, its longer segments, the query
// and its values.
func urlSecrets(raw string) []string {
	u, err := url.Parse(raw)
	if err != nil {
		return nil
	}
	var out []string
	if len(u.Path) > 1 {
		out = append(out, u.Path, u.EscapedPath())
		for _, seg := range strings.Split(u.Path, "/") {
			if len(seg) >= 8 {
				out = append(out, seg)
			}
		}
	}
	if u.RawQuery != "" {
		out = append(out, u.RawQuery)
		for _, vs := range u.Query() {
			out = append(out, vs...)
		}
	}
	return out
}

var _ sinks.Sink = (*Sink)(nil)
