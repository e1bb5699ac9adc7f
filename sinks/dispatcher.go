package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
	// Only the silence stage reads it: a test may freeze or step it.
	Now func() time.Time
	// Clock is the dispatcher's own clock: retry and hold-back deadlines,
	// waits after a restart, dead-letter times, the repeat and
	// silence-check tickers, the fetch back-off (default RealClock).
	Clock Clock
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
	if c.Clock == nil {
		c.Clock = RealClock{}
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
	cfg   DispatcherConfig
	js    jetstream.JetStream
	sink  Sink
	log   *slog.Logger
	clock Clock

	order    *orderQueue      // per-incident order (ordering.go)
	retry    retryPolicy      // deliver stage
	attempts attemptCounter   // deliver stage
	newest   *newestDelivered // supersede stage

	mu    sync.Mutex
	muted map[string]Held // by incident id: changes held by a silence

	delivered, retried, dead, undecodable                atomic.Uint64
	filtered, skipped, folded, deferred, heldN, repeated atomic.Uint64
	silenced, unsilenced, superseded, fetchErrors        atomic.Uint64
}

// NewDispatcher returns a dispatcher for sink.
func NewDispatcher(js jetstream.JetStream, sink Sink, cfg DispatcherConfig, log *slog.Logger) *Dispatcher {
	cfg.setDefaults()
	if log == nil {
		log = slog.Default()
	}
	return &Dispatcher{
		cfg: cfg, js: js, sink: sink, log: log.With("sink", sink.Name()), clock: cfg.Clock,
		order:  newOrderQueue(cfg.Parallelism, cfg.SendTimeout+time.Minute),
		retry:  retryPolicy{maxAttempts: cfg.MaxAttempts, backoff: cfg.Backoff},
		newest: newNewestDelivered(newestKeep),
		muted:  map[string]Held{},
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
		sleep(ctx, d.clock, fetchBackoff(fetchFailures))
	}
	for ctx.Err() == nil {
		free := d.order.waitSlots(ctx)
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
	// No background loop starts a delivery after this.
	d.order.stop()
	bg.Wait()
	return nil
}

// accept takes one fetched message through the route stage and hands it
// to the ordering queue.
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
	switch routeStage(d.sink.Name(), d.cfg.Route, msg.Headers().Get(HeaderOnlySink), in) {
	case routeSkip:
		d.skipped.Add(1)
		d.ack(msg)
		return
	case routeFilter:
		d.filtered.Add(1)
		d.ack(msg)
		return
	}
	it := &item{msg: msg, in: in, seq: seq}
	adm, delay, q := d.order.admit(it, d.clock.Now())
	switch adm {
	case admitHold:
		d.heldN.Add(1)
		_ = msg.NakWithDelay(delay)
	case admitQueued:
		_ = msg.InProgress()
	case admitStart:
		go d.work(ctx, in.ID, q, it)
	}
}

// work delivers it and then the changes queued behind it, in order.
func (d *Dispatcher) work(ctx context.Context, id string, q *incQueue, it *item) {
	defer d.order.wg.Done()
	for it != nil {
		d.handle(ctx, q, it)
		var rest []*item
		it, rest = d.order.next(id, q, it)
		for _, r := range rest {
			_ = r.msg.InProgress()
		}
	}
}

// handle takes one change through the stages after the route: order,
// silence, throttle or supersede, deliver with retry, dead letter.
func (d *Dispatcher) handle(ctx context.Context, q *incQueue, it *item) {
	switch {
	case it.repeat:
		d.repeat(ctx, it.in)
		return
	case it.unmute:
		d.sendMuted(ctx, it.in)
		return
	case ctx.Err() != nil:
		_ = it.msg.Nak()
		return
	}
	if delay, hold := d.order.recheck(q, it.seq, d.clock.Now()); hold {
		d.heldN.Add(1)
		_ = it.msg.NakWithDelay(delay)
		return
	}
	in := it.in
	log := d.log.With("incident", in.ID, "rule", in.Rule, "status", in.Status, "seq", in.Seq)
	if d.mute(ctx, q, it, log) {
		return
	}
	send, ok := d.throttleOrSupersede(it, log)
	if !ok {
		return
	}
	d.deliver(ctx, q, it, send, log)
}

// throttleOrSupersede runs the throttle stage, or without a throttle the
// supersede stage (a throttle folds superseded changes itself); it
// returns the change to send, or false when the change was folded,
// deferred or superseded (and acknowledged or NAKed).
func (d *Dispatcher) throttleOrSupersede(it *item, log *slog.Logger) (correlate.Incident, bool) {
	in := it.in
	if d.cfg.Throttle == nil {
		if it.msg.Headers().Get(HeaderOnlySink) == "" && d.newest.superseded(in) {
			// An operator's DLQ replay (HeaderOnlySink) is sent regardless.
			d.superseded.Add(1)
			log.Info("change not sent: a newer change of the incident was already delivered")
			d.ack(it.msg)
			return in, false
		}
		return in, true
	}
	dec := throttleStage(d.cfg.Throttle, in)
	switch dec.Action {
	case Fold:
		d.folded.Add(1)
		log.Debug("change folded", "reason", dec.Reason)
		d.ack(it.msg)
		return in, false
	case Defer:
		d.deferred.Add(1)
		wait := deferWait(dec.Until, d.clock.Now())
		log.Debug("change deferred", "reason", dec.Reason, "for", wait)
		_ = it.msg.NakWithDelay(wait)
		return in, false
	}
	return dec.Incident, true
}

// deliver sends send (it, as the throttle presents it) and acknowledges
// it, NAKs it for a retry or dead-letters it.
func (d *Dispatcher) deliver(ctx context.Context, q *incQueue, it *item, send correlate.Incident, log *slog.Logger) {
	in := it.in
	attempt := d.attempts.add(it.seq)
	retryable, err := d.send(ctx, send)
	if err != nil && ctx.Err() != nil {
		// Shutting down: leave it for the next run.
		_ = it.msg.Nak()
		return
	}
	switch out, delay := d.retry.decide(attempt, retryable, err); out {
	case outDelivered:
		d.delivered.Add(1)
		d.newest.delivered(in, d.clock.Now())
		if t := d.cfg.Throttle; t != nil {
			t.Delivered(send)
		}
		d.attempts.forget(it.seq)
		d.ack(it.msg)
		log.Debug("delivered", "attempt", attempt)
	case outRetry:
		d.retried.Add(1)
		d.setAway(q, it.seq, delay)
		log.Warn("delivery failed; will retry", "attempt", attempt, "retry_in", delay.Round(time.Millisecond), "err", err)
		_ = it.msg.NakWithDelay(delay)
	default:
		log.Error("delivery failed; sent to dead letters", "attempt", attempt, "retryable", retryable, "err", err)
		if d.deadLetter(ctx, it, err.Error(), attempt) {
			d.attempts.forget(it.seq)
			if t := d.cfg.Throttle; t != nil {
				t.Forget(in)
			}
		} else {
			d.setAway(q, it.seq, 5*time.Second)
		}
	}
}

func (d *Dispatcher) setAway(q *incQueue, seq uint64, delay time.Duration) {
	d.order.setAway(q, seq, d.clock.Now().Add(delay))
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

// repeatLoop re-sends open incidents whose repeat_interval passed.
func (d *Dispatcher) repeatLoop(ctx context.Context) {
	cfg := d.cfg.Throttle.Config()
	if cfg.RepeatInterval <= 0 {
		return
	}
	tick := d.clock.NewTicker(min(max(cfg.RepeatInterval/4, 10*time.Millisecond), 15*time.Second))
	defer tick.Stop()
	lastPrune := d.clock.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C():
		}
		if now := d.clock.Now(); now.Sub(lastPrune) > time.Hour {
			d.cfg.Throttle.Prune(24 * time.Hour)
			lastPrune = now
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
			var in correlate.Incident
			if json.Unmarshal(msg.Data(), &in) == nil && in.ID != "" &&
				routeStage(d.sink.Name(), d.cfg.Route, msg.Headers().Get(HeaderOnlySink), in) == routeTake {
				fn(seq, md.Timestamp, in)
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

// startIdle delivers it (a repeat or a change held by a silence, not from
// the consumer) on its incident's queue when the incident has nothing
// queued or in flight and a slot is free; it reports whether it started.
func (d *Dispatcher) startIdle(ctx context.Context, it *item) bool {
	q, ok := d.order.startIdle(it.in.ID)
	if ok {
		go d.work(ctx, it.in.ID, q, it)
	}
	return ok
}
