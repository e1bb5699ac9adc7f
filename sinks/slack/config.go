package slack

import (
	"errors"
	"fmt"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/defaults"
	"github.com/klaxon-dev/klaxon/sinks"
)

// Config is a Slack sink in the config file. The incoming-webhook URL is a
// credential (whoever has it can post): give it as webhook_url,
// webhook_url_file or webhook_url_env; Resolve loads it.
type Config struct {
	// WebhookURL is the incoming webhook URL itself.
	WebhookURL ingest.Secret `yaml:"webhook_url"`
	// WebhookURLFile is a file holding the URL.
	WebhookURLFile string `yaml:"webhook_url_file"`
	// WebhookURLEnv is an environment variable holding the URL.
	WebhookURLEnv string `yaml:"webhook_url_env"`
	// Timeout bounds one request (default 10s).
	Timeout time.Duration `yaml:"timeout"`
	// Title is a Go text/template over the Incident giving the message's
	// header and notification text (plain text, cut to 150 characters);
	// empty: the status and the incident's title.
	Title string `yaml:"title"`
	// Text is a Go text/template over the Incident giving the message's
	// main section (mrkdwn: <@U123> mentions, *bold*, links); empty: the
	// summary. Functions: json, truncate, escape (mrkdwn-escapes a value).
	Text string `yaml:"text"`
}

// SetDefaults fills in Timeout.
func (c *Config) SetDefaults() {
	c.Timeout = defaults.Positive(c.Timeout, sinks.DefaultRequestTimeout)
}

// Validate checks the config without reading secrets; prefix names the
// sink ("sinks[2]").
func (c *Config) Validate(prefix string) error {
	var errs []error
	if err := c.webhookURL().Check(prefix, "webhook_url", true); err != nil {
		errs = append(errs, err)
	} else if c.WebhookURL.IsSet() {
		if err := sinks.CheckURL(prefix+".webhook_url", c.WebhookURL.Reveal()); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := parseTemplates(c.Title, c.Text); err != nil {
		errs = append(errs, fmt.Errorf("%s.%w", prefix, err))
	}
	return errors.Join(errs...)
}

// Resolve loads the webhook URL from its file or environment variable.
// Errors name the key, never the value.
func (c *Config) Resolve(prefix string) error {
	u, err := c.webhookURL().Resolve(prefix + ".webhook_url")
	if err != nil {
		return err
	}
	if err := sinks.CheckURL(prefix+".webhook_url", u.Reveal()); err != nil {
		return err
	}
	c.WebhookURL, c.WebhookURLFile, c.WebhookURLEnv = u, "", ""
	return nil
}

func (c *Config) webhookURL() ingest.SecretRef {
	return ingest.SecretRef{Value: c.WebhookURL, File: c.WebhookURLFile, Env: c.WebhookURLEnv}
}
