package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
)

// DispatcherConfig tunes delivery to one sink.
type DispatcherConfig struct {
	// Stream is the incidents stream (KLAXON_INCIDENTS).
	Stream string
	// Subject filters the stream (default "klaxon.incidents.>").
	Subject string
	// DLQPrefix is the subject prefix for dead letters (default "klaxon.dlq").
	DLQPrefix string
	// SendTimeout bounds one Send (default 10s); a sink that hangs is
	// cancelled and retried.
	SendTimeout time.Duration
	// MaxAttempts is the number of deliveries before a change goes to the
	// dead-letter subject (default 8).
	MaxAttempts int
	// Backoff is the delay before the n-th retry (default 1s doubling, capped at 5m).
	Backoff func(attempt int) time.Duration
}

func (c *DispatcherConfig) setDefaults() {
	if c.Subject == "" {
		c.Subject = "klaxon.incidents.>"
	}
	if c.DLQPrefix == "" {
		c.DLQPrefix = "klaxon.dlq"
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = 10 * time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 8
	}
	if c.Backoff == nil {
		c.Backoff = func(n int) time.Duration {
			d := time.Second << min(n, 9)
			return min(d, 5*time.Minute)
		}
	}
}

// DispatcherStats counts deliveries of one sink.
type DispatcherStats struct {
	Delivered, Retried, DeadLettered, Undecodable uint64
}

// Dispatcher feeds one sink from its durable consumer: ack after delivery,
// NAK with back-off on a retryable failure, and after the last attempt (or
// a permanent failure) publish to <DLQPrefix>.<sink> and ack.
type Dispatcher struct {
	cfg  DispatcherConfig
	js   jetstream.JetStream
	sink Sink
	log  *slog.Logger

	delivered, retried, dead, undecodable atomic.Uint64
}

// NewDispatcher returns a dispatcher for sink.
func NewDispatcher(js jetstream.JetStream, sink Sink, cfg DispatcherConfig, log *slog.Logger) *Dispatcher {
	cfg.setDefaults()
	return &Dispatcher{cfg: cfg, js: js, sink: sink, log: log.With("sink", sink.Name())}
}

// Stats returns the counters.
func (d *Dispatcher) Stats() DispatcherStats {
	return DispatcherStats{Delivered: d.delivered.Load(), Retried: d.retried.Load(), DeadLettered: d.dead.Load(), Undecodable: d.undecodable.Load()}
}

// ConsumerName returns the durable consumer name of a sink.
func ConsumerName(sink string) string {
	r := strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_")
	return "sink_" + r.Replace(sink)
}

// Run delivers until ctx is done. Deliveries are sequential per sink, in
// stream order (retries may reorder).
func (d *Dispatcher) Run(ctx context.Context) error {
	cons, err := d.js.CreateOrUpdateConsumer(ctx, d.cfg.Stream, jetstream.ConsumerConfig{
		Durable:       ConsumerName(d.sink.Name()),
		FilterSubject: d.cfg.Subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       d.cfg.SendTimeout + 30*time.Second,
		MaxDeliver:    -1, // attempts are counted here, so the DLQ step is ours
		MaxAckPending: 1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("sink %s: consumer: %w", d.sink.Name(), err)
	}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			d.log.Warn("fetch failed", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		for msg := range batch.Messages() {
			d.handle(ctx, msg)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			d.log.Debug("fetch", "err", err)
		}
	}
	return nil
}

func (d *Dispatcher) handle(ctx context.Context, msg jetstream.Msg) {
	var in correlate.Incident
	if err := json.Unmarshal(msg.Data(), &in); err != nil {
		d.undecodable.Add(1)
		d.log.Error("undecodable incident; sent to dead letters", "subject", msg.Subject(), "err", err)
		d.deadLetter(ctx, msg, err.Error())
		return
	}
	attempt := 1
	if md, err := msg.Metadata(); err == nil {
		attempt = int(md.NumDelivered)
	}
	sctx, cancel := context.WithTimeout(ctx, d.cfg.SendTimeout)
	retryable, err := d.sink.Send(sctx, in)
	if err == nil && sctx.Err() != nil && ctx.Err() == nil {
		err, retryable = sctx.Err(), true
	}
	cancel()
	switch {
	case err == nil:
		d.delivered.Add(1)
		if err := msg.Ack(); err != nil {
			d.log.Warn("ack failed", "incident", in.ID, "err", err)
		}
	case ctx.Err() != nil:
		// Shutting down: leave it for redelivery.
		_ = msg.Nak()
	case retryable && attempt < d.cfg.MaxAttempts:
		d.retried.Add(1)
		delay := d.cfg.Backoff(attempt - 1)
		d.log.Warn("delivery failed; will retry", "incident", in.ID, "rule", in.Rule, "attempt", attempt, "retry_in", delay, "err", err)
		_ = msg.NakWithDelay(delay)
	default:
		d.log.Error("delivery failed; sent to dead letters", "incident", in.ID, "rule", in.Rule, "attempt", attempt, "retryable", retryable, "err", err)
		d.deadLetter(ctx, msg, err.Error())
	}
}

func (d *Dispatcher) deadLetter(ctx context.Context, msg jetstream.Msg, reason string) {
	out := nats.NewMsg(d.cfg.DLQPrefix + "." + ConsumerName(d.sink.Name()))
	out.Data = msg.Data()
	out.Header.Set("Klaxon-Sink", d.sink.Name())
	out.Header.Set("Klaxon-Error", reason)
	out.Header.Set("Klaxon-Subject", msg.Subject())
	if _, err := d.js.PublishMsg(ctx, out); err != nil {
		d.log.Error("dead-letter publish failed; will retry", "err", err)
		_ = msg.NakWithDelay(5 * time.Second)
		return
	}
	d.dead.Add(1)
	_ = msg.Ack()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
