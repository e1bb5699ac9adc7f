package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/backoff"
	"github.com/klaxon-dev/klaxon/internal/defaults"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
)

// Publisher defaults.
const (
	DefaultMaxPending     = 4096
	DefaultPublishTimeout = 10 * time.Second
	defaultRetryInitial   = 100 * time.Millisecond
	defaultRetryMax       = 5 * time.Second
)

// PublisherOptions tunes a Publisher.
type PublisherOptions struct {
	// MaxPending bounds the asynchronous publishes in flight (default 4096).
	MaxPending int
	// Timeout is how long a publish waits for its PubAck before it is
	// retried (default 10s).
	Timeout time.Duration
	// RetryInitial and RetryMax bound the exponential back-off between
	// retries of a failed publish (defaults 100ms and 5s).
	RetryInitial time.Duration
	RetryMax     time.Duration
	// Keep, when set, says which events to publish (the edge filter of
	// cmd/internal/rulesync): the others are not sent, and are committed in
	// their turn, after every event emitted before them is stored, so that
	// a source's position never passes an event still in flight.
	Keep func(*ingest.Event) bool
}

// PublisherStats counts a Publisher's work.
type PublisherStats struct {
	// Published is the number of events JetStream acknowledged as newly stored.
	Published uint64
	// Duplicates is the number of events JetStream acknowledged as already
	// stored (same Nats-Msg-Id within the duplicate window).
	Duplicates uint64
	// Retries is the number of publishes sent again after a failure.
	Retries uint64
	// Errors is the number of failed publish attempts (errors, timeouts).
	Errors uint64
	// Filtered is the number of events Keep left out.
	Filtered uint64
}

// Publisher publishes events into KLAXON_EVENTS and commits them in order
// once they are stored.
type Publisher struct {
	js   jetstream.JetStream
	jerr error
	nc   *nats.Conn
	log  *slog.Logger
	opts PublisherOptions

	published, duplicates, retries, errs, filtered atomic.Uint64
}

// NewPublisher returns a Publisher on the bus's connection, with its own
// JetStream context so that its in-flight limit is its own.
func (b *Bus) NewPublisher(log *slog.Logger, opts PublisherOptions) *Publisher {
	if log == nil {
		log = b.log
	}
	opts.MaxPending = defaults.Positive(opts.MaxPending, DefaultMaxPending)
	opts.Timeout = defaults.Positive(opts.Timeout, DefaultPublishTimeout)
	opts.RetryInitial = defaults.Positive(opts.RetryInitial, defaultRetryInitial)
	if opts.RetryMax < opts.RetryInitial {
		opts.RetryMax = max(defaultRetryMax, opts.RetryInitial)
	}
	js, err := jetstream.New(b.NC,
		jetstream.WithPublishAsyncMaxPending(opts.MaxPending),
		jetstream.WithPublishAsyncTimeout(opts.Timeout))
	return &Publisher{js: js, jerr: err, nc: b.NC, log: log, opts: opts}
}

// Stats returns the counters so far; safe to call while Run runs.
func (p *Publisher) Stats() PublisherStats {
	return PublisherStats{
		Published:  p.published.Load(),
		Duplicates: p.duplicates.Load(),
		Retries:    p.retries.Load(),
		Errors:     p.errs.Load(),
		Filtered:   p.filtered.Load(),
	}
}

// pending is one event in flight, in emission order.
type pending struct {
	ev     ingest.Event
	data   []byte
	paf    jetstream.PubAckFuture // nil when the last publish call failed
	ack    *jetstream.PubAck      // set once acknowledged
	failed error                  // set when the last attempt failed
	kept   bool                   // false: left out by Keep, never sent
}

// Run reads events from in until in is closed or ctx is done. Each event is
// published asynchronously to EventSubject(ev.Source, ev.Node) with
// Nats-Msg-Id ev.ID; acknowledgements are taken in emission order and
// ev.Commit (when set) is called for each stored event in that order, never
// before it is stored. A failed or timed-out publish is sent again with the
// same Msg-Id (JetStream drops the copy if the first one was stored after
// all) with exponential back-off until it succeeds or ctx is done: no event
// is skipped. Run returns nil once in is closed and everything read is
// committed, or ctx.Err() when ctx ends first (events not yet acknowledged
// are then not committed, and their source re-sends them after a restart).
// Run must not be called concurrently on one Publisher.
func (p *Publisher) Run(ctx context.Context, in <-chan ingest.Event) error {
	if p.jerr != nil {
		return fmt.Errorf("publisher: %w", p.jerr)
	}
	bo := backoff.New(p.opts.RetryInitial, p.opts.RetryMax)
	var (
		q       []*pending
		inOpen  = true
		failing = 0 // consecutive failed rounds, for the log
	)
	for {
		if len(q) == 0 && !inOpen {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return p.stopped(err, len(q))
		}
		var head *pending
		if len(q) > 0 {
			head = q[0]
		}
		// The head is acknowledged: commit it.
		if head != nil && head.ack != nil {
			p.complete(head)
			q[0] = nil
			q = q[1:]
			if failing > 0 {
				p.log.Info("publisher: publishing again", "after_failed_rounds", failing)
				failing = 0
			}
			bo.Reset()
			continue
		}
		// The head failed: wait, then send it and every other failed one again.
		if head != nil && head.failed != nil {
			failing++
			d := bo.Next()
			lvl := slog.LevelDebug
			if failing == 1 || failing%10 == 0 {
				lvl = slog.LevelWarn
			}
			p.log.Log(ctx, lvl, "publisher: publish failed, retrying", "id", head.ev.ID,
				"err", head.failed, "in", d, "in_flight", len(q), "round", failing)
			if !backoff.Sleep(ctx, d) {
				return p.stopped(ctx.Err(), len(q))
			}
			for _, e := range q {
				p.poll(e)
				if e.failed != nil && e.ack == nil {
					p.retries.Add(1)
					p.send(e)
				}
			}
			continue
		}

		var (
			inCh  <-chan ingest.Event
			okCh  <-chan *jetstream.PubAck
			errCh <-chan error
		)
		if inOpen && len(q) < p.opts.MaxPending {
			inCh = in
		}
		if head != nil {
			okCh, errCh = head.paf.Ok(), head.paf.Err()
		}
		select {
		case <-ctx.Done():
			return p.stopped(ctx.Err(), len(q))
		case ev, ok := <-inCh:
			if !ok {
				inOpen = false
				continue
			}
			q = append(q, p.enqueue(ev))
		case ack := <-okCh:
			head.ack = ack
		case err := <-errCh:
			p.errs.Add(1)
			head.failed = err
			head.paf = nil
		}
	}
}

// enqueue makes the pending entry of ev: sent, or, when Keep leaves it
// out, already acknowledged (committed in its turn).
func (p *Publisher) enqueue(ev ingest.Event) *pending {
	if p.opts.Keep != nil && !p.opts.Keep(&ev) {
		return &pending{ev: ev, ack: &filteredAck}
	}
	e := &pending{ev: ev, kept: true}
	data, err := natslayout.EncodeEvent(&ev)
	if err != nil {
		// EncodeEvent only fails on values it cannot even print;
		// publish what identifies the event rather than lose it.
		p.log.Error("publisher: event not encodable, publishing it without fields", "id", ev.ID, "err", err)
		stripped := ev
		stripped.Fields = map[string]any{"klaxon_encode_error": err.Error()}
		data, _ = natslayout.EncodeEvent(&stripped)
	}
	e.data = p.fit(&ev, data)
	p.send(e)
	return e
}

// filteredAck stands for the acknowledgement of an event Keep left out:
// it is committed when its turn comes.
var filteredAck jetstream.PubAck

// fit shrinks an event that exceeds the server's max payload: its fields
// are dropped and its message cut, so that it can be stored at all.
func (p *Publisher) fit(ev *ingest.Event, data []byte) []byte {
	limit := p.nc.MaxPayload() - 1024 // headers
	if limit <= 0 || int64(len(data)) <= limit {
		return data
	}
	short := *ev
	short.Fields = map[string]any{"klaxon_truncated": true, "klaxon_original_bytes": len(data)}
	p.log.Warn("publisher: event larger than the server's max payload, dropping its fields",
		"id", ev.ID, "bytes", len(data), "max_payload", p.nc.MaxPayload())
	for n := int(limit / 2); ; n /= 2 {
		if len(short.Msg) > n {
			short.Msg = strings.ToValidUTF8(short.Msg[:n], "")
		}
		out, err := natslayout.EncodeEvent(&short)
		if err == nil && (int64(len(out)) <= limit || n == 0) {
			return out
		}
	}
}

// send publishes e (again); a failed call marks e failed.
func (p *Publisher) send(e *pending) {
	msg := &nats.Msg{Subject: natslayout.EventSubject(e.ev.Source, e.ev.Node), Data: e.data, Header: nats.Header{}}
	var opts []jetstream.PublishOpt
	if e.ev.ID != "" {
		opts = append(opts, jetstream.WithMsgID(e.ev.ID))
	}
	paf, err := p.js.PublishMsgAsync(msg, opts...)
	if err != nil {
		p.errs.Add(1)
		e.paf, e.failed = nil, err
		return
	}
	e.paf, e.failed = paf, nil
}

// poll takes e's outcome if it is already known, without waiting.
func (p *Publisher) poll(e *pending) {
	if e.paf == nil || e.ack != nil {
		return
	}
	select {
	case ack := <-e.paf.Ok():
		e.ack = ack
	case err := <-e.paf.Err():
		p.errs.Add(1)
		e.failed, e.paf = err, nil
	default:
	}
}

// complete counts and commits an acknowledged event.
func (p *Publisher) complete(e *pending) {
	if !e.kept {
		p.filtered.Add(1)
	} else if e.ack.Duplicate {
		p.duplicates.Add(1)
	} else {
		p.published.Add(1)
	}
	if e.ev.Commit != nil {
		e.ev.Commit()
	}
}

func (p *Publisher) stopped(err error, inFlight int) error {
	if inFlight > 0 {
		p.log.Info("publisher: stopped with events not yet acknowledged; their sources re-send them",
			"in_flight", inFlight)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("publisher: %w", err)
}
