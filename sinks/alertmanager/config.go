package alertmanager

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/defaults"
	"github.com/klaxon-dev/klaxon/sinks"
)

// Config is an Alertmanager sink in the config file.
type Config struct {
	// URLs are the base URLs of the Alertmanagers ("http://am1:9093").
	// Each alert goes to all of them (an HA pair gossips, but sending to
	// every member is what Prometheus does); a delivery succeeds if any
	// of them took it.
	URLs []string `yaml:"urls"`
	// GeneratorURL, when set, is the base of each alert's generatorURL:
	// the incident id is appended ("https://klaxon.example/incidents/").
	GeneratorURL string `yaml:"generator_url"`
	// ResendInterval re-posts the open alerts (default 1m). It must stay
	// below Alertmanager's resolve_timeout (default 5m), after which an
	// alert that is not re-sent resolves by itself.
	ResendInterval time.Duration `yaml:"resend_interval"`
	// BearerToken, BearerTokenFile or BearerTokenEnv give an optional
	// token for an Authorization: Bearer header (a reverse proxy in front
	// of Alertmanager).
	BearerToken     ingest.Secret `yaml:"bearer_token"`
	BearerTokenFile string        `yaml:"bearer_token_file"`
	BearerTokenEnv  string        `yaml:"bearer_token_env"`
	// Timeout bounds one request (default 10s).
	Timeout time.Duration `yaml:"timeout"`
}

// SetDefaults fills in ResendInterval and Timeout.
func (c *Config) SetDefaults() {
	c.ResendInterval = defaults.Positive(c.ResendInterval, time.Minute)
	c.Timeout = defaults.Positive(c.Timeout, sinks.DefaultRequestTimeout)
}

// Validate checks the config without reading secrets; prefix names the
// sink ("sinks[2]").
func (c *Config) Validate(prefix string) error {
	var errs []error
	if len(c.URLs) == 0 {
		errs = append(errs, fmt.Errorf("%s.urls: at least one Alertmanager URL is required", prefix))
	}
	for i, u := range c.URLs {
		if err := sinks.CheckURL(fmt.Sprintf("%s.urls[%d]", prefix, i), u); err != nil {
			errs = append(errs, err)
		}
	}
	if c.GeneratorURL != "" {
		if _, err := url.Parse(c.GeneratorURL); err != nil {
			errs = append(errs, fmt.Errorf("%s.generator_url: not a valid URL", prefix))
		}
	}
	if c.ResendInterval >= 5*time.Minute {
		errs = append(errs, fmt.Errorf("%s.resend_interval: %s is not below Alertmanager's default resolve_timeout (5m): open alerts would resolve between re-sends", prefix, c.ResendInterval))
	}
	if err := c.bearerToken().Check(prefix, "bearer_token", false); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Resolve loads the bearer token from its file or environment variable,
// if one is configured.
func (c *Config) Resolve(prefix string) error {
	ref := c.bearerToken()
	if !ref.Given() {
		return nil
	}
	t, err := ref.Resolve(prefix + ".bearer_token")
	if err != nil {
		return err
	}
	c.BearerToken, c.BearerTokenFile, c.BearerTokenEnv = t, "", ""
	return nil
}

func (c *Config) bearerToken() ingest.SecretRef {
	return ingest.SecretRef{Value: c.BearerToken, File: c.BearerTokenFile, Env: c.BearerTokenEnv}
}
