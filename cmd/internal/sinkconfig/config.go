// Package sinkconfig is the sinks block of the configuration file: one
// YAML mapping per sink with the keys every sink has and those of its
// type's package, defaults, validation (secrets included), and the
// building of the sink and its dispatcher's configuration.
package sinkconfig

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/klaxon-dev/klaxon/sinks"
	"github.com/klaxon-dev/klaxon/sinks/alertmanager"
	"github.com/klaxon-dev/klaxon/sinks/natsink"
	"github.com/klaxon-dev/klaxon/sinks/pagerduty"
	"github.com/klaxon-dev/klaxon/sinks/slack"
	"github.com/klaxon-dev/klaxon/sinks/webhook"
)

// Sink types of the config file.
const (
	TypeStdout       = "stdout"
	TypeFile         = "file"
	TypePagerDuty    = "pagerduty"
	TypeAlertmanager = "alertmanager"
	TypeSlack        = "slack"
	TypeWebhook      = "webhook"
	TypeNATS         = "nats"
)

var sinkTypes = []string{TypeStdout, TypeFile, TypePagerDuty, TypeAlertmanager, TypeSlack, TypeWebhook, TypeNATS}

// Sink is one sink: in one YAML mapping, the keys every sink has
// (type, name, routing, throttling, delivery) and the keys of its type,
// which are those of the sink package's own Config (pagerduty.Config, …).
// Unknown keys are errors with their line.
type Sink struct {
	// Type is stdout, file, pagerduty, alertmanager, slack, webhook or nats.
	Type string `yaml:"type"`
	// Name identifies the sink (durable consumer, dead-letter subject,
	// metrics, logs); default: the type.
	Name string `yaml:"name"`
	// Route selects the incidents the sink receives: min_severity, match,
	// match_re.
	Route sinks.RouteConfig `yaml:",inline"`
	// Throttle turns grouping and throttling on or off. Default: on for
	// pagerduty and slack (people are paged) and whenever one of its keys
	// is set; off otherwise (every change is delivered).
	Throttle *bool `yaml:"throttle"`
	// Grouping: group_wait, group_interval, repeat_interval, resolve_delay.
	Grouping sinks.ThrottleConfig `yaml:",inline"`
	// SendTimeout bounds one delivery attempt (default 10s, or the sink's
	// own timeout when that is longer); a sink that hangs is abandoned
	// after it and the change retried.
	SendTimeout time.Duration `yaml:"send_timeout"`
	// MaxAttempts is the number of delivery attempts of a retryable
	// failure before the change goes to the dead-letter subject (default 8).
	MaxAttempts int `yaml:"max_attempts"`
	// MinBackoff and MaxBackoff bound the jittered exponential back-off
	// between attempts (default 1s and 5m); a longer Retry-After wins.
	MinBackoff time.Duration `yaml:"min_backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`

	// Format is the stdout sink's format: text (default) or json.
	Format string `yaml:"-"`
	// Path is the file sink's JSON Lines file.
	Path string `yaml:"-"`
	// The settings of the other types; the one of Type is set.
	PagerDuty    *pagerduty.Config    `yaml:"-"`
	Alertmanager *alertmanager.Config `yaml:"-"`
	Slack        *slack.Config        `yaml:"-"`
	Webhook      *webhook.Config      `yaml:"-"`
	NATS         *natsink.Config      `yaml:"-"`
}

// sinkCommon decodes the common keys (no methods: no recursion).
type sinkCommon Sink

type stdoutSinkConfig struct {
	Format string `yaml:"format"`
}

type fileSinkConfig struct {
	Path string `yaml:"path"`
}

// specific returns a pointer to the settings of the sink's type (allocated
// when missing), or nil for an unknown type.
func (c *Sink) specific() any {
	switch c.Type {
	case TypeStdout:
		return &stdoutSinkConfig{Format: c.Format}
	case TypeFile:
		return &fileSinkConfig{Path: c.Path}
	case TypePagerDuty:
		if c.PagerDuty == nil {
			c.PagerDuty = &pagerduty.Config{}
		}
		return c.PagerDuty
	case TypeAlertmanager:
		if c.Alertmanager == nil {
			c.Alertmanager = &alertmanager.Config{}
		}
		return c.Alertmanager
	case TypeSlack:
		if c.Slack == nil {
			c.Slack = &slack.Config{}
		}
		return c.Slack
	case TypeWebhook:
		if c.Webhook == nil {
			c.Webhook = &webhook.Config{}
		}
		return c.Webhook
	case TypeNATS:
		if c.NATS == nil {
			c.NATS = &natsink.Config{}
		}
		return c.NATS
	}
	return nil
}

// setSpecific stores the stdout and file settings decoded into v.
func (c *Sink) setSpecific(v any) {
	switch v := v.(type) {
	case *stdoutSinkConfig:
		c.Format = v.Format
	case *fileSinkConfig:
		c.Path = v.Path
	}
}

// UnmarshalYAML implements yaml.Unmarshaler: the common keys, then the
// keys of the type into the sink package's Config. yaml.v3 does not pass
// KnownFields on to custom unmarshalers, so unknown keys are checked here,
// with their line.
func (c *Sink) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: a sink is a mapping (type: ..., name: ..., ...)", n.Line)}}
	}
	common := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
	own := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
	known := yamlKeys(reflect.TypeFor[sinkCommon]())
	for i := 0; i+1 < len(n.Content); i += 2 {
		dst := own
		if known[n.Content[i].Value] {
			dst = common
		}
		dst.Content = append(dst.Content, n.Content[i], n.Content[i+1])
	}
	var errs []string
	addErr := func(err error) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			errs = append(errs, te.Errors...)
		} else if err != nil {
			errs = append(errs, err.Error())
		}
	}
	addErr(common.Decode((*sinkCommon)(c)))
	if v := c.specific(); v != nil {
		for _, e := range unknownKeys(own, reflect.TypeOf(v).Elem(), "a "+c.Type+" sink") {
			errs = append(errs, e)
		}
		addErr(own.Decode(v))
		c.setSpecific(v)
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

// MarshalYAML implements yaml.Marshaler: one mapping with the common keys
// and those of the type (`klaxon config show`). Secrets print as <secret>.
func (c Sink) MarshalYAML() (any, error) {
	var out yaml.Node
	if err := out.Encode((*sinkCommon)(&c)); err != nil {
		return nil, err
	}
	if v := c.specific(); v != nil {
		var own yaml.Node
		if err := own.Encode(v); err != nil {
			return nil, err
		}
		out.Content = append(out.Content, own.Content...)
	}
	return &out, nil
}

// yamlKeys returns the YAML keys of a struct type, inline fields included.
func yamlKeys(t reflect.Type) map[string]bool {
	keys := map[string]bool{}
	for f := range t.Fields() {
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if strings.Contains(opts, "inline") {
			for k := range yamlKeys(f.Type) {
				keys[k] = true
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		keys[name] = true
	}
	return keys
}

// unknownKeys lists the keys of mapping n that struct type t does not
// have, with their line, descending into nested structs.
func unknownKeys(n *yaml.Node, t reflect.Type, what string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n == nil || n.Kind != yaml.MappingNode || t.Kind() != reflect.Struct {
		return nil
	}
	keys := yamlKeys(t)
	var errs []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !keys[k.Value] {
			known := make([]string, 0, len(keys))
			for k := range keys {
				known = append(known, k)
			}
			slices.Sort(known)
			errs = append(errs, fmt.Sprintf("line %d: unknown key %q (%s takes %s, and the keys of every sink)", k.Line, k.Value, what, strings.Join(known, ", ")))
			continue
		}
		if f, ok := fieldByKey(t, k.Value); ok {
			errs = append(errs, unknownKeys(n.Content[i+1], f.Type, what)...)
		}
	}
	return errs
}

func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for f := range t.Fields() {
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if strings.Contains(opts, "inline") {
			if g, ok := fieldByKey(f.Type, key); ok {
				return g, true
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// SetDefaults fills in the name, the type's defaults, the throttle switch
// and its defaults; rel makes a path relative to the config file.
func (c *Sink) SetDefaults(rel func(string) string) {
	if c.Name == "" {
		c.Name = c.Type
	}
	c.Route.SetDefaults()
	switch c.Type {
	case TypeStdout:
		if c.Format == "" {
			c.Format = "text"
		}
	case TypeFile:
		c.Path = rel(c.Path)
	case TypePagerDuty:
		c.specific()
		c.PagerDuty.SetDefaults()
		c.PagerDuty.RoutingKeyFile = rel(c.PagerDuty.RoutingKeyFile)
	case TypeAlertmanager:
		c.specific()
		c.Alertmanager.SetDefaults()
		c.Alertmanager.BearerTokenFile = rel(c.Alertmanager.BearerTokenFile)
	case TypeSlack:
		c.specific()
		c.Slack.SetDefaults()
		c.Slack.WebhookURLFile = rel(c.Slack.WebhookURLFile)
	case TypeWebhook:
		c.specific()
		c.Webhook.SetDefaults()
		c.Webhook.SigningKeyFile = rel(c.Webhook.SigningKeyFile)
	case TypeNATS:
		c.specific()
		c.NATS.SetDefaults()
	}
	if c.Throttle == nil {
		g := c.Grouping
		on := c.Type == TypePagerDuty || c.Type == TypeSlack ||
			g.GroupWait != 0 || g.GroupInterval != 0 || g.RepeatInterval != 0 || g.ResolveDelay != 0
		c.Throttle = &on
	}
	if *c.Throttle {
		c.Grouping.SetDefaults()
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = max(10*time.Second, c.ownTimeout())
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 8
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 5 * time.Minute
	}
}

// ownTimeout is the request timeout of an HTTP sink (0 for the others).
func (c *Sink) ownTimeout() time.Duration {
	switch {
	case c.Type == TypePagerDuty && c.PagerDuty != nil:
		return c.PagerDuty.Timeout
	case c.Type == TypeAlertmanager && c.Alertmanager != nil:
		return c.Alertmanager.Timeout
	case c.Type == TypeSlack && c.Slack != nil:
		return c.Slack.Timeout
	case c.Type == TypeWebhook && c.Webhook != nil:
		return c.Webhook.Timeout
	}
	return 0
}

var sinkNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Validate checks sink i after SetDefaults. With secrets, those given as
// a file or an environment variable are loaded (into a copy) so that a
// missing one is reported now, naming its key; errors never hold a
// secret's value.
func (c *Sink) Validate(i int, secrets bool) error {
	p := fmt.Sprintf("sinks[%d]", i)
	var errs []error
	switch {
	case c.Type == "":
		errs = append(errs, fmt.Errorf("%s.type: required: one of %s", p, strings.Join(sinkTypes, ", ")))
	case !slices.Contains(sinkTypes, c.Type):
		errs = append(errs, fmt.Errorf("%s.type: %q: want one of %s", p, c.Type, strings.Join(sinkTypes, ", ")))
	}
	if c.Name != "" && !sinkNameRE.MatchString(c.Name) {
		errs = append(errs, fmt.Errorf("%s.name: %q: use letters, digits, '-' and '_' (it names a NATS consumer and subject)", p, c.Name))
	}
	switch c.Type {
	case TypeStdout:
		if c.Format != "text" && c.Format != "json" {
			errs = append(errs, fmt.Errorf("%s.format: %q: want text or json", p, c.Format))
		}
	case TypeFile:
		if c.Path == "" {
			errs = append(errs, fmt.Errorf("%s.path: required for a file sink", p))
		}
	case TypePagerDuty:
		errs = append(errs, checkSecrets(c.PagerDuty, p, secrets))
	case TypeAlertmanager:
		errs = append(errs, checkSecrets(c.Alertmanager, p, secrets))
	case TypeSlack:
		errs = append(errs, checkSecrets(c.Slack, p, secrets))
	case TypeWebhook:
		errs = append(errs, checkSecrets(c.Webhook, p, secrets))
	case TypeNATS:
		errs = append(errs, c.NATS.Validate(p))
	}
	errs = append(errs, c.Route.Validate(p))
	if c.Throttle != nil && *c.Throttle {
		errs = append(errs, c.Grouping.Validate(p))
	} else {
		g := c.Grouping
		if g.GroupWait != 0 || g.GroupInterval != 0 || g.RepeatInterval != 0 || g.ResolveDelay != 0 {
			errs = append(errs, fmt.Errorf("%s.throttle: false, but group_wait, group_interval, repeat_interval or resolve_delay is set", p))
		}
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("%s.max_attempts: must be at least 1, got %d", p, c.MaxAttempts))
	}
	if c.MinBackoff < 0 {
		errs = append(errs, fmt.Errorf("%s.min_backoff: must not be negative", p))
	}
	if c.MaxBackoff < c.MinBackoff {
		errs = append(errs, fmt.Errorf("%s.max_backoff: %s is below min_backoff (%s)", p, c.MaxBackoff, c.MinBackoff))
	}
	return errors.Join(errs...)
}

// secretConfig is a sink package's Config: Validate checks it without
// reading secrets, Resolve loads them from their file or variable.
type secretConfig[T any] interface {
	*T
	Validate(prefix string) error
	Resolve(prefix string) error
}

// checkSecrets validates cfg and then resolves its secrets on a copy, so
// that a missing file or variable is an error naming its key now, while
// cfg keeps the file and variable names (for `klaxon config show`).
func checkSecrets[T any, P secretConfig[T]](cfg *T, prefix string, resolve bool) error {
	if err := P(cfg).Validate(prefix); err != nil || !resolve {
		return err
	}
	cp := *cfg
	return P(&cp).Resolve(prefix)
}
