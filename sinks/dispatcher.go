package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/backoff"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
)

// Headers of dead letters and replays.
const (
	// HeaderSink names the sink that gave up on a dead letter.
	HeaderSink = "Klaxon-Sink"
	// HeaderError is the last error of a dead letter (secrets scrubbed by
	// the sink).
	HeaderError = "Klaxon-Error"
	// HeaderSubject is the incidents subject a dead letter came from.
	HeaderSubject = "Klaxon-Subject"
	// HeaderStreamSeq is the dead letter's sequence in the incidents stream.
	HeaderStreamSeq = "Klaxon-Stream-Seq"
	// HeaderAttempts is the number of delivery attempts of a dead letter.
	HeaderAttempts = "Klaxon-Attempts"
	// HeaderFailedAt is when the dispatcher gave up (RFC 3339).
	HeaderFailedAt = "Klaxon-Failed-At"
	// HeaderOnlySink, on an incident change, restricts delivery to the
	// named sink: every other dispatcher acknowledges it unseen. ReplayDLQ
	// sets it so that a replayed change reaches only the sink that failed.
	HeaderOnlySink = "Klaxon-Only-Sink"
)

// DispatcherConfig tunes delivery to one sink.
type DispatcherConfig struct {
	// Stream is the incidents stream (default KLAXON_INCIDENTS).
	Stream string
	// Subject filters the stream (default "klaxon.incidents.>").
	Subject string
	// DLQPrefix is the subject prefix for dead letters (default "klaxon.dlq").
	DLQPrefix string
	// SendTimeout bounds one Send (default 10s); a sink that hangs is
	// abandoned after it and the change retried.
	SendTimeout time.Duration
	// MaxAttempts is the number of delivery attempts before a change goes
	// to the dead-letter subject (default 8).
	MaxAttempts int
	// Backoff is the delay after the n-th failed attempt (n ≥ 1). Default:
	// 1s doubling, capped at 5m, with "equal jitter" (a random delay in
	// [d/2, d]). A longer RetryAfter hint of the error wins.
	Backoff func(attempt int) time.Duration
	// Parallelism is how many incidents are delivered at the same time
	// (default 4). Changes of one incident are always delivered one at a
	// time and in order.
	Parallelism int
	// MaxAckPending bounds the changes handed out and not yet acknowledged,
	// those held back by the throttle included (default 1000).
	MaxAckPending int
	// Route selects the changes this sink receives (nil: all). The others
	// are acknowledged and counted as filtered.
	Route *Route
	// Throttle groups and throttles notifications (nil: every change is
	// sent as it comes).
	Throttle *Throttle
	// NoRestore skips rebuilding the throttle's and the sink's state from
	// the stream at start.
	NoRestore bool
	// Silencer mutes changes that a silence matches (nil: none is muted).
	Silencer Silencer
	// SilenceCheck is how often held changes are checked against the
	// silences (default 1s; a change of the silences checks at once).
	SilenceCheck time.Duration
	// Now is the clock silences are checked against (default time.Now).
	Now func() time.Time
}

func (c *DispatcherConfig) setDefaults() {
	if c.Stream == "" {
		c.Stream = natslayout.IncidentsStream
	}
	if c.Subject == "" {
		c.Subject = natslayout.IncidentsSubjects
	}
	if c.DLQPrefix == "" {
		c.DLQPrefix = natslayout.DLQPrefix
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = 10 * time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 8
	}
	if c.Backoff == nil {
		c.Backoff = DefaultBackoff
	}
	if c.Parallelism <= 0 {
		c.Parallelism = 4
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = 1000
	}
	if c.MaxAckPending < c.Parallelism {
		c.MaxAckPending = c.Parallelism
	}
	if c.SilenceCheck <= 0 {
		c.SilenceCheck = time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// DefaultBackoff is 1s doubling per attempt, capped at 5m, with equal
// jitter: a random delay in [d/2, d].
func DefaultBackoff(attempt int) time.Duration { return defaultDelay(attempt) }

var defaultDelay = backoff.Exponential(time.Second, 5*time.Minute)

// DispatcherStats counts what one dispatcher did.
type DispatcherStats struct {
	// Delivered changes (Send succeeded), Retried failures (NAKed with
	// back-off), DeadLettered changes, Undecodable messages.
	Delivered, Retried, DeadLettered, Undecodable uint64
	// Filtered: not for this sink (route). Skipped: a replay for another
	// sink. Folded: superseded or already delivered (throttle). Deferred:
	// held back by the throttle. Held: held back behind an earlier change
	// of the same incident that is being retried. Repeated: repeat_interval
	// notifications sent.
	Filtered, Skipped, Folded, Deferred, Held, Repeated uint64
	// Silenced: muted by a silence (acknowledged, held for later).
	// Unsilenced: held changes sent after their silence ended.
	Silenced, Unsilenced uint64
	// Superseded: changes not sent because a newer change of the same
	// incident was already delivered (a redelivery after a crash whose
	// acknowledgement was lost).
	Superseded uint64
	// FetchErrors: failed fetches from the sink's consumer (each followed
	// by a back-off).
	FetchErrors uint64
}

// fetchBackoff is the delay after the n-th consecutive failed fetch.
var fetchBackoff = backoff.Exponential(100*time.Millisecond, 10*time.Second)

// Dispatcher feeds one sink from its durable consumer.
//
// Delivery: a change is acknowledged after the sink took it; a retryable
// failure is NAKed with a jittered back-off (or the sink's Retry-After);
// a permanent failure, or the last attempt, goes to <DLQPrefix>.<sink> and
// is acknowledged.
//
// Ordering: changes of one incident are delivered one at a time in stream
// order, while up to Parallelism incidents are delivered concurrently: a
// change that arrives while an earlier change of its incident is being
// sent waits in a per-incident queue; one that arrives while an earlier
// change is waiting for its retry is NAKed until after that retry, so an
// incident that keeps failing holds up only itself.
//
// Attempts are counted in memory (JetStream's delivery count also counts
// the hold-backs), so a restart gives a failing change MaxAttempts more.
type Dispatcher struct {
	cfg  DispatcherConfig
	js   jetstream.JetStream
	sink Sink
	log  *slog.Logger

	mu       sync.Mutex
	incs     map[string]*incQueue
	attempts map[uint64]int
	held     map[uint64]bool
	muted    map[string]Held // by incident id: changes held by a silence
	// newest is the newest change delivered per incident, so that an older
	// change delivered again (its ack lost in a crash) is not sent after
	// it: a stale "firing" after a "resolved" would reopen a page.
	newest   map[string]deliveredKey
	newestGC time.Time
	stopping bool // Run is waiting for the deliveries to end
	active   int
	slotFree chan struct{}
	wg       sync.WaitGroup

	delivered, retried, dead, undecodable                atomic.Uint64
	filtered, skipped, folded, deferred, heldN, repeated atomic.Uint64
	silenced, unsilenced, superseded, fetchErrors        atomic.Uint64
}

type deliveredKey struct {
	key changeKey
	at  time.Time
}

// newestKeep is how long the newest delivered change of an incident is
// remembered: longer than any redelivery takes (ack wait and back-off).
const newestKeep = time.Hour

type incQueue struct {
	busy  bool
	queue []*item
	// away holds the changes of the incident that were NAKed for a retry
	// or held back, by stream sequence, with when they are due back. A
	// change goes ahead only when no earlier one is away.
	away map[uint64]time.Time
	// unsure holds, after a restart, the earlier changes of the incident
	// that were delivered to the previous run and may still be pending
	// (not acknowledged), with when to stop waiting for them: a later
	// change waits for them as for away ones.
	unsure map[uint64]time.Time
}

type item struct {
	msg    jetstream.Msg
	in     correlate.Incident
	seq    uint64
	repeat bool
	// unmute: send the change held for in.ID now that its silence ended.
	unmute bool
}

// NewDispatcher returns a dispatcher for sink.
func NewDispatcher(js jetstream.JetStream, sink Sink, cfg DispatcherConfig, log *slog.Logger) *Dispatcher {
	cfg.setDefaults()
	if log == nil {
		log = slog.Default()
	}
	return &Dispatcher{
		cfg: cfg, js: js, sink: sink, log: log.With("sink", sink.Name()),
		incs: map[string]*incQueue{}, attempts: map[uint64]int{}, held: map[uint64]bool{},
		muted: map[string]Held{}, newest: map[string]deliveredKey{}, slotFree: make(chan struct{}, 1),
	}
}

// Stats returns the counters.
func (d *Dispatcher) Stats() DispatcherStats {
	return DispatcherStats{
		Delivered: d.delivered.Load(), Retried: d.retried.Load(), DeadLettered: d.dead.Load(), Undecodable: d.undecodable.Load(),
		Filtered: d.filtered.Load(), Skipped: d.skipped.Load(), Folded: d.folded.Load(), Deferred: d.deferred.Load(),
		Held: d.heldN.Load(), Repeated: d.repeated.Load(),
		Silenced: d.silenced.Load(), Unsilenced: d.unsilenced.Load(), Superseded: d.superseded.Load(), FetchErrors: d.fetchErrors.Load(),
	}
}

// ConsumerName returns the durable consumer name of a sink.
func ConsumerName(sink string) string {
	r := strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_")
	return "sink_" + r.Replace(sink)
}

// Run delivers until ctx is done; the sends in flight are cancelled and
// their changes NAKed for the next run. A sink that implements Runner runs
// alongside.
func (d *Dispatcher) Run(ctx context.Context) error {
	cons, err := d.js.CreateOrUpdateConsumer(ctx, d.cfg.Stream, jetstream.ConsumerConfig{
		Durable:       ConsumerName(d.sink.Name()),
		Description:   "klaxon sink " + d.sink.Name(),
		FilterSubject: d.cfg.Subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       d.ackWait(),
		MaxDeliver:    -1, // attempts are counted here, so the DLQ step is ours
		MaxAckPending: d.cfg.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("sink %s: consumer: %w", d.sink.Name(), err)
	}
	if d.cfg.Silencer != nil {
		d.loadMuted(ctx)
	}
	if !d.cfg.NoRestore {
		ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
		info, err := cons.Info(ictx)
		cancel()
		if err != nil {
			d.log.Warn("state and order of pending changes not restored", "err", err)
		} else {
			d.restore(ctx, info)
			d.restoreOrder(ctx, info)
		}
	}
	var bg sync.WaitGroup
	if r, ok := d.sink.(Runner); ok {
		bg.Add(1)
		go func() {
			defer bg.Done()
			if err := r.Run(ctx); err != nil && ctx.Err() == nil {
				d.log.Error("sink background work stopped", "err", err)
			}
		}()
	}
	if d.cfg.Throttle != nil {
		bg.Add(1)
		go func() { defer bg.Done(); d.repeatLoop(ctx) }()
	}
	if d.cfg.Silencer != nil {
		bg.Add(1)
		go func() { defer bg.Done(); d.silenceLoop(ctx) }()
	}
	// Fetch failures (no responders while the cluster elects a leader, a
	// lost connection) are retried with a jittered back-off, said once per
	// episode at WARN and counted (DispatcherStats.FetchErrors).
	fetchFailures := 0
	fetchFailed := func(err error) {
		fetchFailures++
		d.fetchErrors.Add(1)
		if fetchFailures == 1 {
			d.log.Warn("fetch failed; retrying with back-off", "err", err)
		} else {
			d.log.Debug("fetch failed again", "err", err, "attempt", fetchFailures)
		}
		backoff.Sleep(ctx, fetchBackoff(fetchFailures))
	}
	for ctx.Err() == nil {
		free := d.waitSlots(ctx)
		if free == 0 {
			break
		}
		batch, err := cons.Fetch(free, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			fetchFailed(err)
			continue
		}
		for msg := range batch.Messages() {
			d.accept(ctx, msg)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			fetchFailed(err)
			continue
		}
		if fetchFailures > 0 {
			d.log.Info("fetching again", "failed_attempts", fetchFailures)
			fetchFailures = 0
		}
	}
	// No background loop starts a delivery after this (wg.Add before Wait).
	d.mu.Lock()
	d.stopping = true
	d.mu.Unlock()
	d.wg.Wait()
	bg.Wait()
	return nil
}

// waitSlots blocks until a worker slot is free and returns how many are.
func (d *Dispatcher) waitSlots(ctx context.Context) int {
	for {
		d.mu.Lock()
		free := d.cfg.Parallelism - d.active
		d.mu.Unlock()
		if free > 0 {
			return free
		}
		select {
		case <-ctx.Done():
			return 0
		case <-d.slotFree:
		}
	}
}

// accept routes one fetched message: decode, filter, then hand it to its
// incident's queue.
func (d *Dispatcher) accept(ctx context.Context, msg jetstream.Msg) {
	var seq uint64
	if md, err := msg.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	var in correlate.Incident
	if err := json.Unmarshal(msg.Data(), &in); err != nil || in.ID == "" {
		if err == nil {
			err = errors.New("incident without id")
		}
		d.undecodable.Add(1)
		d.log.Error("undecodable incident; sent to dead letters", "subject", msg.Subject(), "err", err)
		d.deadLetter(ctx, &item{msg: msg, seq: seq}, err.Error(), 0)
		return
	}
	if only := msg.Headers().Get(HeaderOnlySink); only != "" && only != d.sink.Name() {
		d.skipped.Add(1)
		d.ack(msg)
		return
	}
	if !d.cfg.Route.Match(in) {
		d.filtered.Add(1)
		d.ack(msg)
		return
	}
	it := &item{msg: msg, in: in, seq: seq}
	d.mu.Lock()
	if d.held[seq] {
		// A redelivery of a change already queued or in flight here.
		d.mu.Unlock()
		return
	}
	q := d.incs[in.ID]
	if q == nil {
		q = &incQueue{}
		d.incs[in.ID] = q
	}
	if delay, hold := d.holdBack(q, seq); hold {
		d.mu.Unlock()
		d.heldN.Add(1)
		_ = msg.NakWithDelay(delay)
		return
	}
	delete(q.away, seq)
	delete(q.unsure, seq)
	d.held[seq] = true
	if q.busy {
		q.queue = append(q.queue, it)
		d.mu.Unlock()
		_ = msg.InProgress()
		return
	}
	q.busy = true
	d.active++
	d.mu.Unlock()
	d.wg.Add(1)
	go d.work(ctx, in.ID, q, it)
}

// holdBack reports whether change seq must wait for an earlier change of
// its incident that is away (waiting for a retry or held back itself), and
// how long; a held-back change is recorded as away too. Call with d.mu.
func (d *Dispatcher) holdBack(q *incQueue, seq uint64) (time.Duration, bool) {
	now := time.Now()
	var first time.Time
	hold := false
	for s, until := range q.unsure {
		if now.After(until) {
			delete(q.unsure, s) // acknowledged before the restart after all
			continue
		}
		if s < seq {
			// Poll: it comes back as soon as its ack wait or delay ends.
			if due := now.Add(500 * time.Millisecond); !hold || due.Before(first) {
				first = due
			}
			hold = true
		}
	}
	for s, due := range q.away {
		if now.Sub(due) > d.cfg.SendTimeout+time.Minute {
			// It never came back (deleted from the stream?): stop waiting.
			delete(q.away, s)
			continue
		}
		if s < seq {
			if !hold || due.Before(first) {
				first = due
			}
			hold = true
		}
	}
	if !hold {
		return 0, false
	}
	delay := max(first.Sub(now), 0) + 50*time.Millisecond + rand.N(50*time.Millisecond)
	if q.away == nil {
		q.away = map[uint64]time.Time{}
	}
	q.away[seq] = now.Add(delay)
	return delay, true
}

func (q *incQueue) idle() bool {
	return !q.busy && len(q.queue) == 0 && len(q.away) == 0 && len(q.unsure) == 0
}

// work delivers it and then the changes queued behind it, in order.
func (d *Dispatcher) work(ctx context.Context, id string, q *incQueue, it *item) {
	defer d.wg.Done()
	for {
		d.handle(ctx, q, it)
		d.mu.Lock()
		if it.msg != nil {
			delete(d.held, it.seq)
		}
		if len(q.queue) == 0 {
			q.busy = false
			d.active--
			if q.idle() {
				delete(d.incs, id)
			}
			d.mu.Unlock()
			select {
			case d.slotFree <- struct{}{}:
			default:
			}
			return
		}
		it = q.queue[0]
		q.queue = q.queue[1:]
		rest := append([]*item(nil), q.queue...)
		d.mu.Unlock()
		for _, r := range rest {
			_ = r.msg.InProgress()
		}
	}
}

func (d *Dispatcher) handle(ctx context.Context, q *incQueue, it *item) {
	if it.repeat {
		d.repeat(ctx, it.in)
		return
	}
	if it.unmute {
		d.sendMuted(ctx, it.in)
		return
	}
	if ctx.Err() != nil {
		_ = it.msg.Nak()
		return
	}
	d.mu.Lock()
	if delay, hold := d.holdBack(q, it.seq); hold {
		d.mu.Unlock()
		d.heldN.Add(1)
		_ = it.msg.NakWithDelay(delay)
		return
	}
	delete(q.away, it.seq)
	delete(q.unsure, it.seq)
	d.mu.Unlock()
	in := it.in
	log := d.log.With("incident", in.ID, "rule", in.Rule, "status", in.Status, "seq", in.Seq)
	if d.mute(ctx, q, it, log) {
		return
	}
	if d.cfg.Throttle == nil && it.msg.Headers().Get(HeaderOnlySink) == "" && d.isSuperseded(in) {
		// A throttle folds superseded changes itself; an operator's DLQ
		// replay (HeaderOnlySink) is sent regardless.
		d.superseded.Add(1)
		log.Info("change not sent: a newer change of the incident was already delivered")
		d.ack(it.msg)
		return
	}
	send := in
	if t := d.cfg.Throttle; t != nil {
		dec := t.Offer(in)
		switch dec.Action {
		case Fold:
			d.folded.Add(1)
			log.Debug("change folded", "reason", dec.Reason)
			d.ack(it.msg)
			return
		case Defer:
			d.deferred.Add(1)
			wait := max(time.Until(dec.Until), 10*time.Millisecond)
			log.Debug("change deferred", "reason", dec.Reason, "for", wait)
			_ = it.msg.NakWithDelay(wait)
			return
		}
		send = dec.Incident
	}
	d.mu.Lock()
	d.attempts[it.seq]++
	attempt := d.attempts[it.seq]
	d.mu.Unlock()
	retryable, err := d.send(ctx, send)
	switch {
	case err == nil:
		d.delivered.Add(1)
		d.noteDelivered(in)
		if t := d.cfg.Throttle; t != nil {
			t.Delivered(send)
		}
		d.forgetAttempts(it.seq)
		d.ack(it.msg)
		log.Debug("delivered", "attempt", attempt)
	case ctx.Err() != nil:
		// Shutting down: leave it for the next run.
		_ = it.msg.Nak()
	case retryable && attempt < d.cfg.MaxAttempts:
		d.retried.Add(1)
		delay := d.cfg.Backoff(attempt)
		var ra RetryAfter
		if errors.As(err, &ra) && ra.RetryAfter() > delay {
			delay = ra.RetryAfter()
		}
		d.setAway(q, it.seq, delay)
		log.Warn("delivery failed; will retry", "attempt", attempt, "retry_in", delay.Round(time.Millisecond), "err", err)
		_ = it.msg.NakWithDelay(delay)
	default:
		log.Error("delivery failed; sent to dead letters", "attempt", attempt, "retryable", retryable, "err", err)
		if d.deadLetter(ctx, it, err.Error(), attempt) {
			d.forgetAttempts(it.seq)
			if t := d.cfg.Throttle; t != nil {
				t.Forget(in)
			}
		} else {
			d.setAway(q, it.seq, 5*time.Second)
		}
	}
}

func (d *Dispatcher) setAway(q *incQueue, seq uint64, delay time.Duration) {
	d.mu.Lock()
	if q.away == nil {
		q.away = map[uint64]time.Time{}
	}
	q.away[seq] = time.Now().Add(delay)
	d.mu.Unlock()
}

func (d *Dispatcher) forgetAttempts(seq uint64) {
	d.mu.Lock()
	delete(d.attempts, seq)
	d.mu.Unlock()
}

// send calls the sink under SendTimeout. A sink that ignores its context
// is abandoned when the timeout passes (its goroutine finishes on its own).
func (d *Dispatcher) send(ctx context.Context, in correlate.Incident) (bool, error) {
	sctx, cancel := context.WithTimeout(ctx, d.cfg.SendTimeout)
	defer cancel()
	type result struct {
		retryable bool
		err       error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := d.sink.Send(sctx, in)
		ch <- result{r, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil && sctx.Err() != nil && ctx.Err() == nil {
			return true, fmt.Errorf("send timed out after %s: %w", d.cfg.SendTimeout, r.err)
		}
		return r.retryable, r.err
	case <-sctx.Done():
		if ctx.Err() != nil {
			return true, ctx.Err()
		}
		return true, fmt.Errorf("send timed out after %s", d.cfg.SendTimeout)
	}
}

func (d *Dispatcher) ack(msg jetstream.Msg) {
	actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		d.log.Warn("ack failed; the change may be delivered again", "subject", msg.Subject(), "err", err)
	}
}

// deadLetter publishes the change to the sink's dead-letter subject and
// acknowledges it; false when the publish failed (the change is NAKed).
func (d *Dispatcher) deadLetter(ctx context.Context, it *item, reason string, attempts int) bool {
	msg := it.msg
	out := nats.NewMsg(d.cfg.DLQPrefix + "." + natslayout.Token(d.sink.Name()))
	out.Data = msg.Data()
	out.Header.Set(HeaderSink, d.sink.Name())
	out.Header.Set(HeaderError, Truncate(reason, 2000))
	out.Header.Set(HeaderSubject, msg.Subject())
	out.Header.Set(HeaderStreamSeq, strconv.FormatUint(it.seq, 10))
	out.Header.Set(HeaderAttempts, strconv.Itoa(attempts))
	out.Header.Set(HeaderFailedAt, time.Now().UTC().Format(time.RFC3339Nano))
	out.Header.Set(nats.MsgIdHdr, "dlq:"+d.sink.Name()+":"+strconv.FormatUint(it.seq, 10)+":"+msg.Headers().Get(HeaderOnlySink))
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := d.js.PublishMsg(pctx, out); err != nil {
		d.log.Error("dead-letter publish failed; will retry", "err", err)
		_ = msg.NakWithDelay(5 * time.Second)
		return false
	}
	d.dead.Add(1)
	d.ack(msg)
	return true
}

// repeatLoop re-sends open incidents whose repeat_interval passed.
func (d *Dispatcher) repeatLoop(ctx context.Context) {
	cfg := d.cfg.Throttle.Config()
	if cfg.RepeatInterval <= 0 {
		return
	}
	tick := time.NewTicker(min(max(cfg.RepeatInterval/4, 10*time.Millisecond), 15*time.Second))
	defer tick.Stop()
	lastPrune := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if time.Since(lastPrune) > time.Hour {
			d.cfg.Throttle.Prune(24 * time.Hour)
			lastPrune = time.Now()
		}
		for _, in := range d.cfg.Throttle.Due() {
			d.startIdle(ctx, &item{in: in, repeat: true})
		}
	}
}

func (d *Dispatcher) repeat(ctx context.Context, in correlate.Incident) {
	if ctx.Err() != nil {
		return
	}
	if _, err := d.send(ctx, in); err != nil {
		d.log.Warn("repeat notification failed; will try again", "incident", in.ID, "rule", in.Rule, "err", err)
		return
	}
	d.repeated.Add(1)
	d.cfg.Throttle.Delivered(in)
	d.log.Info("repeat notification sent", "incident", in.ID, "rule", in.Rule)
}

// restore rebuilds state from the stream at start: the throttle's from
// the latest change of every incident up to the consumer's ack floor
// (everything after it is delivered again anyway, and must not count as
// delivered), the sink's open set (Restorer) from the latest change of
// every incident in the stream (telling the sink early about a change it
// is about to receive is harmless).
func (d *Dispatcher) restore(ctx context.Context, info *jetstream.ConsumerInfo) {
	restorer, _ := d.sink.(Restorer)
	if d.cfg.Throttle == nil && restorer == nil {
		return
	}
	floor := info.AckFloor.Stream
	if floor == 0 && restorer == nil {
		return
	}
	type last struct {
		in correlate.Incident
		at time.Time
	}
	acked, all := map[string]last{}, map[string]last{}
	keep := func(m map[string]last, in correlate.Incident, at time.Time) {
		if l, ok := m[in.ID]; !ok || !keyOf(in).less(keyOf(l.in)) {
			m[in.ID] = last{in, at}
		}
	}
	until := uint64(0) // the sink's open set needs every incident
	if restorer == nil {
		until = floor // the throttle only what was acknowledged
	}
	err := d.scanChanges(ctx, 1, until, func(seq uint64, at time.Time, in correlate.Incident) {
		keep(all, in, at)
		if seq <= floor {
			keep(acked, in, at)
		}
	})
	if err != nil {
		d.log.Warn("state not fully restored", "err", err)
	}
	if t := d.cfg.Throttle; t != nil {
		for _, l := range acked {
			t.Restore(l.in, l.at)
		}
	}
	open := 0
	for _, l := range all {
		if l.in.Status != correlate.StatusResolved {
			open++
			if restorer != nil && !d.isMuted(l.in.ID) {
				restorer.Restore(l.in)
			}
		}
	}
	if len(all) > 0 {
		d.log.Info("state restored from the incidents stream", "incidents", len(all), "open", open)
	}
}

// scanChanges calls fn with every incident change of this sink in the
// stream from sequence start up to until (0: to the end), in order, with
// its stream sequence and store time; replays for other sinks and changes
// the route does not take are left out.
func (d *Dispatcher) scanChanges(ctx context.Context, start, until uint64, fn func(seq uint64, at time.Time, in correlate.Incident)) error {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if st, err := d.js.Stream(rctx, d.cfg.Stream); err == nil {
		if si, err := st.Info(rctx); err == nil && si.State.Msgs == 0 {
			return nil
		}
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{d.cfg.Subject}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if start > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	oc, err := d.js.OrderedConsumer(rctx, d.cfg.Stream, cfg)
	if err != nil {
		return err
	}
	for rctx.Err() == nil {
		batch, err := oc.FetchNoWait(256)
		if err != nil {
			return err
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			md, err := msg.Metadata()
			if err != nil {
				continue
			}
			seq := md.Sequence.Stream
			if until > 0 && seq > until {
				return nil
			}
			if only := msg.Headers().Get(HeaderOnlySink); only == "" || only == d.sink.Name() {
				var in correlate.Incident
				if json.Unmarshal(msg.Data(), &in) == nil && in.ID != "" && d.cfg.Route.Match(in) {
					fn(seq, md.Timestamp, in)
				}
			}
			if md.NumPending == 0 || seq == until {
				return nil
			}
		}
		if n == 0 {
			return nil
		}
	}
	return rctx.Err()
}

// isSuperseded reports whether a newer change of in's incident than in was
// delivered by this dispatcher.
func (d *Dispatcher) isSuperseded(in correlate.Incident) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.newest[in.ID]
	return ok && keyOf(in).less(n.key)
}

// noteDelivered records in as delivered and forgets what is older than
// newestKeep (at most once a minute).
func (d *Dispatcher) noteDelivered(in correlate.Incident) {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if n, ok := d.newest[in.ID]; !ok || !keyOf(in).less(n.key) {
		d.newest[in.ID] = deliveredKey{keyOf(in), now}
	}
	if now.Sub(d.newestGC) > time.Minute {
		d.newestGC = now
		for id, n := range d.newest {
			if now.Sub(n.at) > newestKeep {
				delete(d.newest, id)
			}
		}
	}
}

// startIdle delivers it (a repeat or a change held by a silence, not from
// the consumer) on its incident's queue when the incident has nothing
// queued or in flight and a slot is free; it reports whether it started.
func (d *Dispatcher) startIdle(ctx context.Context, it *item) bool {
	id := it.in.ID
	d.mu.Lock()
	q := d.incs[id]
	if (q != nil && !q.idle()) || d.active >= d.cfg.Parallelism || d.stopping {
		d.mu.Unlock()
		return false
	}
	if q == nil {
		q = &incQueue{}
		d.incs[id] = q
	}
	q.busy = true
	d.active++
	d.wg.Add(1) // under d.mu: Run sets stopping under it before it waits
	d.mu.Unlock()
	go d.work(ctx, id, q, it)
	return true
}

func (d *Dispatcher) isStopping() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stopping
}

// ackWait is the consumer's ack wait: a change a killed run had in flight
// comes back after it. Sends end within SendTimeout, and changes queued
// behind a send report progress, so a live run never sees a redelivery of
// what it holds.
func (d *Dispatcher) ackWait() time.Duration { return d.cfg.SendTimeout + 10*time.Second }

// unsureWait is how long after a restart a change waits for earlier
// changes of its incident that the previous run had not acknowledged.
// Those it had NAKed (retries, held-back changes, a shutdown) come back
// within it. One it had in flight when it was killed comes back only after
// the ack wait; if a newer change of its incident went out meanwhile, it is
// not sent (isSuperseded): the sink sees each incident's changes in order,
// ending with the newest. JetStream does not tell which changes above the
// ack floor were acknowledged, so an incident whose change was acknowledged
// there waits this long once.
const unsureWait = 5 * time.Second

// restoreOrder keeps the order of each incident's changes across a
// restart: every change between the ack floor and the last one delivered
// to the previous run is marked unsure, and a later change of its incident
// waits until it came back or unsureWait passed.
func (d *Dispatcher) restoreOrder(ctx context.Context, info *jetstream.ConsumerInfo) {
	floor, last := info.AckFloor.Stream, info.Delivered.Stream
	if info.NumAckPending == 0 || last <= floor {
		return
	}
	until := time.Now().Add(unsureWait)
	n := 0
	err := d.scanChanges(ctx, floor+1, last, func(seq uint64, _ time.Time, in correlate.Incident) {
		d.mu.Lock()
		q := d.incs[in.ID]
		if q == nil {
			q = &incQueue{}
			d.incs[in.ID] = q
		}
		if q.unsure == nil {
			q.unsure = map[uint64]time.Time{}
		}
		q.unsure[seq] = until
		d.mu.Unlock()
		n++
	})
	if err != nil {
		d.log.Warn("order of pending changes not fully restored", "err", err)
	}
	if n > 0 {
		d.log.Info("changes possibly pending from the previous run; later changes of their incidents wait for them", "changes", n)
	}
}
