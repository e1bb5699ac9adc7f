package sinkconfig

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/klaxon-dev/klaxon/internal/backoff"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/sinks"
	"github.com/klaxon-dev/klaxon/sinks/alertmanager"
	"github.com/klaxon-dev/klaxon/sinks/file"
	"github.com/klaxon-dev/klaxon/sinks/natsink"
	"github.com/klaxon-dev/klaxon/sinks/pagerduty"
	"github.com/klaxon-dev/klaxon/sinks/slack"
	"github.com/klaxon-dev/klaxon/sinks/stdout"
	"github.com/klaxon-dev/klaxon/sinks/webhook"
)

// Env is what building a sink takes from the running process.
type Env struct {
	// Stdout receives the stdout sink's lines.
	Stdout io.Writer
	// NC is the connection the nats sink publishes on.
	NC *nats.Conn
	// Log receives the sinks' diagnostics.
	Log *slog.Logger
}

// Build makes sink i of the config and the configuration of its
// dispatcher. Secrets are resolved here, into copies.
func Build(i int, sc Sink, env Env) (sinks.Sink, sinks.DispatcherConfig, error) {
	s, err := newSink(i, sc, env)
	if err != nil {
		return nil, sinks.DispatcherConfig{}, err
	}
	dc, err := sc.DispatcherConfig()
	if err != nil {
		_ = s.Close()
		return nil, sinks.DispatcherConfig{}, fmt.Errorf("sinks[%d]: %w", i, err)
	}
	return s, dc, nil
}

func newSink(i int, sc Sink, env Env) (sinks.Sink, error) {
	p := fmt.Sprintf("sinks[%d]", i)
	sc.specific() // a config made in code may lack its type's settings
	switch sc.Type {
	case TypeStdout:
		return stdout.New(sc.Name, env.Stdout, sc.Format)
	case TypeFile:
		return file.New(sc.Name, sc.Path)
	case TypePagerDuty:
		c := *sc.PagerDuty
		if err := c.Resolve(p); err != nil {
			return nil, err
		}
		return pagerduty.New(sc.Name, c)
	case TypeAlertmanager:
		c := *sc.Alertmanager
		c.URLs = slices.Clone(c.URLs)
		if err := c.Resolve(p); err != nil {
			return nil, err
		}
		return alertmanager.New(sc.Name, c, env.Log)
	case TypeSlack:
		c := *sc.Slack
		if err := c.Resolve(p); err != nil {
			return nil, err
		}
		return slack.New(sc.Name, c)
	case TypeWebhook:
		c := *sc.Webhook
		if err := c.Resolve(p); err != nil {
			return nil, err
		}
		return webhook.New(sc.Name, c)
	case TypeNATS:
		return natsink.New(sc.Name, env.NC, *sc.NATS)
	}
	return nil, fmt.Errorf("%s.type: unknown sink type %q", p, sc.Type)
}

// DispatcherConfig is the delivery of the sink: routing, throttling,
// timeout, attempts and back-off.
func (sc *Sink) DispatcherConfig() (sinks.DispatcherConfig, error) {
	dc := sinks.DispatcherConfig{
		Stream:      natslayout.IncidentsStream,
		SendTimeout: sc.SendTimeout,
		MaxAttempts: sc.MaxAttempts,
	}
	if sc.MinBackoff > 0 || sc.MaxBackoff > 0 {
		dc.Backoff = backoff.Exponential(sc.MinBackoff, sc.MaxBackoff)
	}
	route, err := sinks.NewRoute(sc.Route)
	if err != nil {
		return dc, err
	}
	dc.Route = route
	if sc.Throttle != nil && *sc.Throttle {
		dc.Throttle = sinks.NewThrottle(sc.Grouping, time.Now)
	}
	return dc, nil
}
