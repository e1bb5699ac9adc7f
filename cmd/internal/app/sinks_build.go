package app

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

// sinkEnv is what building a sink takes from the running process.
type sinkEnv struct {
	stdout io.Writer
	nc     *nats.Conn
	log    *slog.Logger
}

// buildSink makes sink i of the config and the configuration of its
// dispatcher. Secrets are resolved here, into copies.
func buildSink(i int, sc SinkConfig, env sinkEnv) (sinks.Sink, sinks.DispatcherConfig, error) {
	s, err := newSink(i, sc, env)
	if err != nil {
		return nil, sinks.DispatcherConfig{}, err
	}
	dc, err := sc.dispatcherConfig()
	if err != nil {
		_ = s.Close()
		return nil, sinks.DispatcherConfig{}, fmt.Errorf("sinks[%d]: %w", i, err)
	}
	return s, dc, nil
}

func newSink(i int, sc SinkConfig, env sinkEnv) (sinks.Sink, error) {
	p := fmt.Sprintf("sinks[%d]", i)
	sc.specific() // a config made in code may lack its type's settings
	switch sc.Type {
	case SinkStdout:
		return stdout.New(sc.Name, env.stdout, sc.Format)
	case SinkFile:
		return file.New(sc.Name, sc.Path)
	case SinkPagerDuty:
		c := *sc.PagerDuty
		if err := c.Resolve(p); err != nil {
			return nil, err
		}
		return pagerduty.New(sc.Name, c)
	case SinkAlertmanager:
		c := *sc.Alertmanager
		c.URLs = slices.Clone(c.URLs)
		if err := c.Resolve(p); err != nil {
			return nil, err
		}
		return alertmanager.New(sc.Name, c, env.log)
	case SinkSlack:
		c := *sc.Slack
		if err := c.Resolve(p); err != nil {
			return nil, err
		}
		return slack.New(sc.Name, c)
	case SinkWebhook:
		c := *sc.Webhook
		if err := c.Resolve(p); err != nil {
			return nil, err
		}
		return webhook.New(sc.Name, c)
	case SinkNATS:
		return natsink.New(sc.Name, env.nc, *sc.NATS)
	}
	return nil, fmt.Errorf("%s.type: unknown sink type %q", p, sc.Type)
}

// dispatcherConfig is the delivery of the sink: routing, throttling,
// timeout, attempts and back-off.
func (sc *SinkConfig) dispatcherConfig() (sinks.DispatcherConfig, error) {
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
