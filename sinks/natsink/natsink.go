// Package natsink publishes incident changes as JSON to a NATS subject on
// klaxon's own connection, for consumers that integrate over NATS.
package natsink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/sinks"
)

// Config is a NATS sink in the config file.
type Config struct {
	// Subject receives the changes. It must not be a wildcard nor under
	// klaxon.incidents, klaxon.events or klaxon.dlq (that would loop).
	Subject string `yaml:"subject"`
	// JetStream publishes with a JetStream acknowledgement (the subject
	// must belong to a stream) and Nats-Msg-Id = the change id, so a
	// redelivery is dropped as a duplicate. Otherwise a core publish
	// followed by a flush.
	JetStream bool `yaml:"jetstream"`
}

// SetDefaults does nothing (present for symmetry with the other sinks).
func (c *Config) SetDefaults() {}

// Validate checks the config; prefix names the sink ("sinks[2]").
func (c *Config) Validate(prefix string) error {
	var errs []error
	s := c.Subject
	switch {
	case s == "":
		errs = append(errs, fmt.Errorf("%s.subject: required", prefix))
	case strings.ContainsAny(s, "*> \t\r\n") || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, ".."):
		errs = append(errs, fmt.Errorf("%s.subject: %q is not a literal subject", prefix, s))
	default:
		for _, p := range []string{natslayout.IncidentsPrefix, natslayout.EventsPrefix, natslayout.DLQPrefix} {
			if s == p || strings.HasPrefix(s, p+".") {
				errs = append(errs, fmt.Errorf("%s.subject: %q is inside klaxon's own %s subjects", prefix, s, p))
			}
		}
	}
	return errors.Join(errs...)
}

// Sink publishes to one subject.
type Sink struct {
	name string
	cfg  Config
	nc   *nats.Conn
	js   jetstream.JetStream
}

// New returns a NATS sink publishing on nc.
func New(name string, nc *nats.Conn, cfg Config) (*Sink, error) {
	if nc == nil {
		return nil, fmt.Errorf("nats sink %q: no connection", name)
	}
	if err := cfg.Validate("sink " + name); err != nil {
		return nil, err
	}
	s := &Sink{name: name, cfg: cfg, nc: nc}
	if cfg.JetStream {
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, fmt.Errorf("nats sink %q: %w", name, err)
		}
		s.js = js
	}
	return s, nil
}

// Name implements sinks.Sink.
func (s *Sink) Name() string { return s.name }

// Close implements sinks.Sink; the connection is klaxon's and stays open.
func (s *Sink) Close() error { return nil }

// Send implements sinks.Sink. Every failure is retryable.
func (s *Sink) Send(ctx context.Context, in correlate.Incident) (bool, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return false, fmt.Errorf("nats sink %q: %w", s.name, err)
	}
	msg := nats.NewMsg(s.cfg.Subject)
	msg.Data = b
	msg.Header.Set(nats.MsgIdHdr, in.ChangeID())
	msg.Header.Set("Klaxon-Incident", in.ID)
	msg.Header.Set("Klaxon-Status", in.Status)
	msg.Header.Set("Klaxon-Severity", in.Severity)
	if s.js != nil {
		if _, err := s.js.PublishMsg(ctx, msg); err != nil {
			return true, fmt.Errorf("nats sink %q: publish %s: %w", s.name, s.cfg.Subject, err)
		}
		return false, nil
	}
	if err := s.nc.PublishMsg(msg); err != nil {
		return true, fmt.Errorf("nats sink %q: publish %s: %w", s.name, s.cfg.Subject, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	if err := s.nc.FlushWithContext(ctx); err != nil {
		return true, fmt.Errorf("nats sink %q: flush: %w", s.name, err)
	}
	return false, nil
}

var _ sinks.Sink = (*Sink)(nil)
