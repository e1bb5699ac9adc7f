package app

import (
	"bytes"
	"net/url"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/klaxon-dev/klaxon/cmd/internal/sinkconfig"
	"github.com/klaxon-dev/klaxon/sinks"
)

// ShowYAML renders the effective configuration (defaults filled in) as
// YAML for `klaxon config show`. Every secret prints as "<secret>":
// tokens, passwords, routing keys, webhook URLs and signing keys, header
// values, the credentials in nats.url and the path and query of a webhook
// URL (they may hold a token). Files and environment variables holding
// secrets are shown by name.
func (c *Config) ShowYAML() ([]byte, error) {
	cp := *c
	cp.NATS.URL = redactURLCredentials(cp.NATS.URL)
	if cp.NATS.Replicas == 0 {
		cp.NATS.Replicas = c.BusConfig().Replicas
	}
	cp.Sinks = make([]sinkconfig.Sink, len(c.Sinks))
	for i, s := range c.Sinks {
		if s.Webhook != nil {
			w := *s.Webhook
			w.URL = redactURLPath(w.URL)
			s.Webhook = &w
		}
		cp.Sinks[i] = s
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&cp); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// redactURLCredentials hides the user info of comma-separated server URLs
// ("nats://user:pass@host", "nats://token@host").
func redactURLCredentials(urls string) string {
	if urls == "" {
		return ""
	}
	parts := strings.Split(urls, ",")
	for i, raw := range parts {
		raw = strings.TrimSpace(raw)
		if at := strings.LastIndex(raw, "@"); at >= 0 {
			scheme := ""
			if j := strings.Index(raw, "://"); j >= 0 && j < at {
				scheme = raw[:j+3]
			}
			raw = scheme + "<secret>@" + raw[at+1:]
		}
		parts[i] = raw
	}
	return strings.Join(parts, ",")
}

// redactURLPath keeps scheme://host of a URL whose path or query may hold
// a token, as the webhook sink does in its logs.
func redactURLPath(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "<secret>"
	}
	if (u.Path == "" || u.Path == "/") && u.RawQuery == "" && u.User == nil {
		return raw
	}
	return sinks.Endpoint(raw) + "/<secret>"
}
