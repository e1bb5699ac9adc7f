package pagerduty

import (
	"cmp"
	"errors"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/defaults"
	"github.com/klaxon-dev/klaxon/sinks"
)

// DefaultURL is the PagerDuty Events API v2 endpoint.
const DefaultURL = "https://events.pagerduty.com/v2/enqueue"

// Config is a PagerDuty sink in the config file. The routing key (an Events
// API v2 integration key) is given as routing_key, routing_key_file or
// routing_key_env; Resolve loads it.
type Config struct {
	// URL is the Events API v2 enqueue endpoint (default DefaultURL).
	URL string `yaml:"url"`
	// RoutingKey is the integration key itself.
	RoutingKey ingest.Secret `yaml:"routing_key"`
	// RoutingKeyFile is a file holding the key.
	RoutingKeyFile string `yaml:"routing_key_file"`
	// RoutingKeyEnv is an environment variable holding the key.
	RoutingKeyEnv string `yaml:"routing_key_env"`
	// Client and ClientURL name the monitoring client in PagerDuty
	// (default "klaxon", no URL).
	Client    string `yaml:"client"`
	ClientURL string `yaml:"client_url"`
	// Timeout bounds one request (default 10s).
	Timeout time.Duration `yaml:"timeout"`
}

// SetDefaults fills in URL, Client and Timeout.
func (c *Config) SetDefaults() {
	c.URL = cmp.Or(c.URL, DefaultURL)
	c.Client = cmp.Or(c.Client, "klaxon")
	c.Timeout = defaults.Positive(c.Timeout, sinks.DefaultRequestTimeout)
}

// Validate checks the config without reading secrets; prefix names the
// sink ("sinks[2]").
func (c *Config) Validate(prefix string) error {
	var errs []error
	if err := sinks.CheckURL(prefix+".url", c.URL); err != nil {
		errs = append(errs, err)
	}
	if c.ClientURL != "" {
		if err := sinks.CheckURL(prefix+".client_url", c.ClientURL); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.routingKey().Check(prefix, "routing_key", true); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Resolve loads the routing key from its file or environment variable into
// RoutingKey. Errors name the key, never the value.
func (c *Config) Resolve(prefix string) error {
	k, err := c.routingKey().Resolve(prefix + ".routing_key")
	if err != nil {
		return err
	}
	c.RoutingKey, c.RoutingKeyFile, c.RoutingKeyEnv = k, "", ""
	return nil
}

func (c *Config) routingKey() ingest.SecretRef {
	return ingest.SecretRef{Value: c.RoutingKey, File: c.RoutingKeyFile, Env: c.RoutingKeyEnv}
}
