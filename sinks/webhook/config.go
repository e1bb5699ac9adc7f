package webhook

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"text/template"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/defaults"
	"github.com/klaxon-dev/klaxon/sinks"
)

// DefaultSignatureHeader carries the HMAC-SHA256 of the body: "sha256=<hex>".
const DefaultSignatureHeader = "X-Klaxon-Signature"

// Config is a generic webhook sink in the config file.
type Config struct {
	// URL is the endpoint. Its path and query are never logged (they may
	// hold a token).
	URL string `yaml:"url"`
	// Method is POST (default), PUT or PATCH.
	Method string `yaml:"method"`
	// Headers are sent with every request. Values are treated as secrets
	// (never logged, scrubbed from errors).
	Headers map[string]ingest.Secret `yaml:"headers"`
	// ContentType is the Content-Type (default application/json).
	ContentType string `yaml:"content_type"`
	// Body is a Go text/template rendering the body from the Incident
	// (functions: json, truncate). Empty: the Incident as JSON.
	Body string `yaml:"body"`
	// SigningKey, SigningKeyFile or SigningKeyEnv give a key for an
	// HMAC-SHA256 signature of the body in SignatureHeader; none: no
	// signature.
	SigningKey     ingest.Secret `yaml:"signing_key"`
	SigningKeyFile string        `yaml:"signing_key_file"`
	SigningKeyEnv  string        `yaml:"signing_key_env"`
	// SignatureHeader names the signature header (default
	// X-Klaxon-Signature).
	SignatureHeader string `yaml:"signature_header"`
	// Timeout bounds one request (default 10s).
	Timeout time.Duration `yaml:"timeout"`
}

// SetDefaults fills in Method, ContentType, SignatureHeader and Timeout.
func (c *Config) SetDefaults() {
	c.Method = strings.ToUpper(cmp.Or(c.Method, http.MethodPost))
	c.ContentType = cmp.Or(c.ContentType, "application/json")
	c.SignatureHeader = cmp.Or(c.SignatureHeader, DefaultSignatureHeader)
	c.Timeout = defaults.Positive(c.Timeout, sinks.DefaultRequestTimeout)
}

// Validate checks the config without reading secrets; prefix names the
// sink ("sinks[2]").
func (c *Config) Validate(prefix string) error {
	var errs []error
	if err := sinks.CheckURL(prefix+".url", c.URL); err != nil {
		errs = append(errs, err)
	}
	switch c.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
	default:
		errs = append(errs, fmt.Errorf("%s.method: %q: want POST, PUT or PATCH", prefix, c.Method))
	}
	for k := range c.Headers {
		if k == "" || strings.ContainsAny(k, " :\r\n") {
			errs = append(errs, fmt.Errorf("%s.headers: %q is not a header name", prefix, k))
		}
	}
	if c.Body != "" {
		if _, err := parseBody(c.Body); err != nil {
			errs = append(errs, fmt.Errorf("%s.body: %w", prefix, err))
		}
	}
	if err := c.signingKey().Check(prefix, "signing_key", false); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Resolve loads the signing key from its file or environment variable, if
// one is configured.
func (c *Config) Resolve(prefix string) error {
	ref := c.signingKey()
	if !ref.Given() {
		return nil
	}
	k, err := ref.Resolve(prefix + ".signing_key")
	if err != nil {
		return err
	}
	c.SigningKey, c.SigningKeyFile, c.SigningKeyEnv = k, "", ""
	return nil
}

func parseBody(text string) (*template.Template, error) {
	return sinks.ParseTemplate("body", text, nil)
}

func (c *Config) signingKey() ingest.SecretRef {
	return ingest.SecretRef{Value: c.SigningKey, File: c.SigningKeyFile, Env: c.SigningKeyEnv}
}
