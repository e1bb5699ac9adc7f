package durable

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/correlate/checkpoint"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/backoff"
	"github.com/klaxon-dev/klaxon/internal/jspull"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/rules"
)

const (
	correlatorConsumer = "correlator"
	snapshotKey        = "correlator"
	snapshotEvery      = 20000 // messages
	// maxAckPending bounds the events delivered and not yet covered by a
	// stored checkpoint (only a checkpoint acks): the events a checkpoint
	// may cover. While one is written the correlator goes on up to this
	// many; so a checkpoint that takes d caps the rate at maxAckPending/d
	// (at 80,000, a 60 s checkpoint of a whole fleet's changed groups on a
	// busy cluster held the soak to 1,300 events/s).
	maxAckPending = 500_000
	// tidyBudget bounds the removals of superseded records started after
	// each checkpoint (Store.Tidy); the next checkpoint waits for them.
	tidyBudget = time.Second
	// ackWait is how long the server waits for an ack before delivering
	// again: longer than a slow checkpoint, or the correlator is sent
	// what it holds once more while it writes.
	ackWait = 5 * time.Minute

	// maxCheckpointBackoff bounds the wait between two failed checkpoints.
	maxCheckpointBackoff = 30 * time.Second
)

// correlatorRole consumes KLAXON_EVENTS with a durable consumer, runs the
// correlator and publishes incident changes to KLAXON_INCIDENTS. It acks
// (AckAll) only after a checkpoint covering the acked sequence is stored
// (correlate/checkpoint: the groups and clocks that changed, then the meta
// record with the sequence), so a crash loses no window and re-fires no
// incident: it restores the checkpoint and skips what it covers;
// re-published changes carry the same Nats-Msg-Id and are dropped by
// JetStream, and sinks skip change ids they already delivered.
type correlatorRole struct {
	js       jetstream.JetStream
	store    *checkpoint.Store
	corr     *correlate.Correlator
	log      *slog.Logger
	cfg      Config
	now      func() time.Time
	setRules chan *rules.Set

	snapSeq uint64 // covered by the stored checkpoint
	lastSeq uint64 // last processed
	lastMsg jetstream.Msg
	since   int  // messages since the last checkpoint
	dirty   bool // incident changes since the last checkpoint
	met     *Metrics

	scope partitionScope
	// fenced is set once another correlator took this partition over
	// (the checkpoint's meta record moved on): this one stops without
	// writing.
	fenced atomic.Bool
	// ckFails counts the failed checkpoints of the current failure
	// episode, since when; ckRetry is when the next may be tried, after
	// ckBackoff.
	ckFails   int
	ckSince   time.Time
	ckRetry   time.Time
	ckBackoff time.Duration
	// ckBegan is when the checkpoint being written began; ckPaced is
	// when the next may begin (see pace).
	ckBegan, ckPaced time.Time
	// gauges receives the counters for /metrics (default: met.corr).
	gauges func(*Gauges)
	// consSeq is the consumer sequence of the last delivery; gap is set
	// when one was skipped.
	consSeq uint64
	gap     bool
	// processed counts the events handed to the correlator (the
	// Correlators' count; nil: not counted).
	processed *atomic.Uint64
	// saving is the checkpoint its goroutine is writing (nil: none) while
	// the correlator goes on; saved receives the outcome. After a stored
	// one the goroutine tidies the bucket (Store.Tidy) and then sends on
	// tidied; storeBusy is set until then (the store is used by one
	// goroutine at a time).
	saving    *savingCheckpoint
	saved     chan error
	tidied    chan struct{}
	storeBusy bool
	// tidy, in tests, replaces the store's Tidy.
	tidy func(ctx context.Context)
	// incidents publishes incident changes; a checkpoint waits for those
	// published before it was cut.
	incidents incidentPublisher
}

// savingCheckpoint is a checkpoint being written: what it covers and the
// message to ack once it is stored.
type savingCheckpoint struct {
	p   *checkpoint.Pending
	msg jetstream.Msg
	ctx context.Context
	// unstored are incident changes the write could not store (set by
	// the writing goroutine before it reports; saveDone requeues them).
	unstored []incidentPub
}

// write stores the incident changes published before the checkpoint was
// cut (pubs), then the checkpoint.
func (r *correlatorRole) write(sv *savingCheckpoint, pubs []incidentPub) error {
	unstored, err := r.incidents.await(sv.ctx, pubs)
	if err != nil {
		sv.unstored = unstored
		return err
	}
	_, err = sv.p.Write(sv.ctx)
	return err
}

// partitionScope names what one correlator consumes and where it keeps its
// state: the whole stream, or one partition of it.
type partitionScope struct {
	consumer string // durable consumer name
	key      string // checkpoint key (and key prefix) in KLAXON_STATE
	filter   string // subject filter
}

// wholeStream is the scope of an unpartitioned correlator (the names of
// klaxon before partitions, so that existing state is kept).
var wholeStream = partitionScope{consumer: correlatorConsumer, key: snapshotKey, filter: natslayout.EventsSubjects}

// scopeOf is the scope of partition p of n.
func scopeOf(p, n int) partitionScope {
	if n < 2 {
		return wholeStream
	}
	name := fmt.Sprintf("%s-p%d", correlatorConsumer, p)
	return partitionScope{consumer: name, key: name, filter: natslayout.PartitionSubjects(p, n)}
}

// errGap stops a correlator that missed a delivery: it is started again
// from its snapshot (see handle).
var errGap = errors.New("correlator: a delivery was lost in transit")

// errFenced stops a correlator whose partition another one took over.
var errFenced = errors.New("correlator: another correlator took this partition over")

// newScopedCorrelator makes the correlator of one scope, restores its
// checkpoint and claims it (a correlator that held it before can store
// nothing more).
func newScopedCorrelator(ctx context.Context, js, incidentJS jetstream.JetStream, set *rules.Set, cfg Config, scope partitionScope, now func() time.Time, log *slog.Logger, met *Metrics) (*correlatorRole, error) {
	kv, err := js.KeyValue(ctx, natslayout.StateBucket)
	if err != nil {
		return nil, fmt.Errorf("correlator: state bucket: %w", err)
	}
	r := &correlatorRole{
		js: js,
		corr: correlate.New(set, correlate.Options{
			MaxEvidence: cfg.MaxEvidence, UpdateInterval: cfg.UpdateInterval,
			Lateness: cfg.Lateness, Idle: cfg.Idle, Logger: log.With("role", "correlator"),
			Links: correlate.NomadUILinks(cfg.NomadUI),
		}),
		log: log.With("role", "correlator"),
		cfg: cfg, now: now,
		setRules: make(chan *rules.Set, 1),
		saved:    make(chan error, 1),
		tidied:   make(chan struct{}, 1),
		met:      met,
		scope:    scope,
	}
	if scope != wholeStream {
		r.log = r.log.With("consumer", scope.consumer)
	}
	r.incidents = incidentPublisher{js: incidentJS, log: r.log, fenced: &r.fenced}
	if r.store, err = checkpoint.New(js, kv, scope.key, checkpoint.Options{Logger: r.log}); err != nil {
		return nil, fmt.Errorf("correlator: state: %w", err)
	}
	start := time.Now()
	seq, err := r.store.Load(ctx, r.corr)
	if err != nil {
		r.store.Close()
		return nil, fmt.Errorf("correlator: restore %s: %w", scope.key, err)
	}
	r.snapSeq, r.lastSeq = seq, seq
	groups := 0
	for _, n := range r.corr.ActiveGroups() {
		groups += n
	}
	r.log.Info("state restored", "seq", seq, "groups", groups, "open_incidents", sumCounts(r.corr.OpenCounts()), "took", time.Since(start).Round(time.Millisecond))
	met.ckpt.hold(scope.key, time.Now())
	return r, nil
}

// SetRules hands a reloaded rule set to the running correlator.
func (r *correlatorRole) SetRules(set *rules.Set) {
	select {
	case <-r.setRules:
	default:
	}
	r.setRules <- set
}

// pullBatch is how many events one pull request of the correlator asks for.
const pullBatch = 512

// consumerAttempts bounds the tries to make the consumer anew before the
// partition's correlator gives up (and is started again, restoring its
// state once more).
const consumerAttempts = 6

// resetConsumer deletes the consumer and makes it anew with cc, trying
// again with back-off: while a NATS node rejoins a cluster, a request
// times out, and a consumer just deleted may still be "in use" for the
// next create (seen in the soak, each costing a restore of 10,000 nodes'
// state).
func (r *correlatorRole) resetConsumer(ctx context.Context, cc jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	bo := backoff.New(500*time.Millisecond, 5*time.Second)
	for attempt := 1; ; attempt++ {
		err := r.js.DeleteConsumer(ctx, natslayout.EventsStream, r.scope.consumer)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			err = fmt.Errorf("correlator: reset consumer: %w", err)
		} else {
			var cons jetstream.Consumer
			if cons, err = r.js.CreateOrUpdateConsumer(ctx, natslayout.EventsStream, cc); err == nil {
				return cons, nil
			}
			err = fmt.Errorf("correlator: consumer: %w", err)
		}
		if attempt == consumerAttempts || ctx.Err() != nil {
			return nil, err
		}
		d := bo.Next()
		r.log.Warn("correlator: making the consumer failed; trying again", "attempt", attempt, "in", d, "err", err)
		if !backoff.Sleep(ctx, d) {
			return nil, err
		}
	}
}

// run consumes until ctx is done, then snapshots.
func (r *correlatorRole) run(ctx context.Context) error {
	defer func() {
		r.waitStore() // the store is not used after Close
		r.store.Close()
	}()
	// The snapshot, not the consumer's ack floor, says where to resume:
	// messages delivered to a crashed process but not covered by its last
	// snapshot would otherwise wait for their ack wait to expire. So the
	// consumer is made anew at the first sequence the snapshot does not cover.
	cc := jetstream.ConsumerConfig{
		Durable:       r.scope.consumer,
		FilterSubject: r.scope.filter,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       ackWait,
		MaxAckPending: maxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if r.snapSeq > 0 {
		cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cc.OptStartSeq = r.snapSeq + 1
	}
	cons, err := r.resetConsumer(ctx, cc)
	if err != nil {
		return err
	}
	// One pull request at a time (internal/jspull: nats.go's iterator
	// stalled 5 s under load).
	msgs := make(chan jetstream.Msg, pullBatch)
	// Ended by stopPull only, not with ctx: the loop below takes ctx's end
	// first (draining, a final checkpoint); msgs closed by ctx's end would
	// race it and end the run with ctx's error.
	pullCtx, stopPull := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPull()
	go jspull.Pull(pullCtx, cons, pullBatch, msgs, r.log)
	// The backlog since the snapshot (or the stream's beginning) is
	// processed on this run's clock, not on its events' times.
	r.corr.Resume(r.now().Add(-r.cfg.Lateness))
	tick := time.NewTicker(r.cfg.SnapshotInterval)
	defer tick.Stop()
	for {
		if r.fenced.Load() {
			return errFenced
		}
		select {
		case <-ctx.Done():
			stopPull()
			r.drain(msgs)
			r.snapshot(context.Background(), true)
			return nil
		case err := <-r.saved:
			r.saveDone(err)
		case <-r.tidied:
			if r.saving != nil {
				// The outcome is sent before the tidying ends, and select
				// picks either when both are ready: taken here, or a
				// checkpoint begun next would take this one's outcome
				// (acking its events before they were stored).
				r.saveDone(<-r.saved)
			}
			r.storeBusy = false
		case set := <-r.setRules:
			r.corr.SetRules(set)
			r.log.Info("rules reloaded", "rules", len(set.Rules))
		case m, ok := <-msgs:
			if !ok {
				r.snapshot(context.Background(), true)
				return ctx.Err()
			}
			r.handle(ctx, m)
			if r.gap {
				stopPull()
				r.snapshot(ctx, true)
				return errGap
			}
			if r.since >= snapshotEvery {
				r.snapshot(ctx, false)
			}
		case <-tick.C:
			r.corr.Advance(r.now().Add(-r.cfg.Lateness), r.publishFunc(ctx))
			r.snapshot(ctx, false)
			r.publishGauges()
		}
	}
}

// drain processes what was already delivered before a shutdown.
func (r *correlatorRole) drain(msgs <-chan jetstream.Msg) {
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return
			}
			r.handle(context.Background(), m)
		default:
			return
		}
	}
}

func (r *correlatorRole) handle(ctx context.Context, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		r.log.Error("message without metadata", "err", err)
		return
	}
	if r.gap {
		return
	}
	if md.Sequence.Consumer != r.consSeq+1 {
		// A delivery was lost in transit (a NATS server or the consumer's
		// leader went away): processing on would ack it with the later
		// ones (AckAll). Stop here; run resumes from the snapshot.
		r.log.Warn("deliveries lost in transit; resuming from the snapshot", "after_seq", r.lastSeq, "consumer_seq", md.Sequence.Consumer, "want", r.consSeq+1)
		r.gap = true
		return
	}
	r.consSeq = md.Sequence.Consumer
	seq := md.Sequence.Stream
	r.lastMsg = m
	if seq <= r.lastSeq {
		return // covered by the restored snapshot, or a redelivery of what this process already counted
	}
	r.lastSeq = seq
	r.since++
	var ev ingest.Event
	if err := json.Unmarshal(m.Data(), &ev); err != nil {
		r.log.Error("undecodable event skipped", "subject", m.Subject(), "seq", seq, "err", err)
		return
	}
	start := time.Now()
	r.corr.Process(&ev, r.publishFunc(ctx))
	r.met.evalDur.Observe(time.Since(start).Seconds())
	if r.processed != nil {
		r.processed.Add(1)
	}
}

func sumCounts(m map[[2]string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// publishGauges hands the correlator's counters to the metrics endpoint
// (the correlator itself is not safe for concurrent use).
func (r *correlatorRole) publishGauges() {
	g := &Gauges{Stats: r.corr.Stats(), Groups: r.corr.ActiveGroups(), Open: r.corr.OpenCounts(), Rules: r.corr.Rules(), Inhibited: r.corr.Inhibited()}
	if r.gauges != nil {
		r.gauges(g)
		return
	}
	r.met.corr.Store(g)
}

// publishFunc publishes incident changes (incidents.go): an incident
// change is never dropped.
func (r *correlatorRole) publishFunc(ctx context.Context) func(correlate.Incident) {
	return func(in correlate.Incident) {
		if r.fenced.Load() {
			return // the correlator that took over derives it again
		}
		r.dirty = true
		r.met.changes.WithLabelValues(in.Status).Inc()
		b, err := json.Marshal(in)
		if err != nil {
			r.log.Error("incident not encodable", "incident", in.ID, "err", err)
			return
		}
		msg := nats.NewMsg(natslayout.IncidentSubject(in.Severity, in.Rule))
		msg.Data = b
		msg.Header.Set(nats.MsgIdHdr, in.ChangeID())
		r.incidents.publish(ctx, msg, in.ID)
	}
}

// snapshot stores a checkpoint of what changed and acks everything it
// covers. The checkpoint is encoded here, on the correlator's goroutine,
// and written by a goroutine of its own while events go on being
// processed (a write waits for the servers: the correlator does not); one
// is written at a time, and a final one (at shutdown or before a restart)
// waits for the one being written and is written before snapshot returns.
// After a failure the next attempt waits (a jittered exponential back-off
// up to maxCheckpointBackoff, unless final); the first failure of an
// episode is logged, the end of one too, and every failure counts in
// klaxon_state_checkpoint_failures_total.
func (r *correlatorRole) snapshot(ctx context.Context, final bool) {
	if r.fenced.Load() {
		return
	}
	if r.storeBusy {
		if !final {
			return // the run loop takes its outcome
		}
		r.waitStore()
		if r.fenced.Load() {
			return
		}
	}
	if r.lastSeq == r.snapSeq && r.since == 0 && !r.dirty {
		if r.lastMsg != nil {
			_ = r.lastMsg.Ack()
			r.lastMsg = nil
		}
		r.checkpointStored(time.Now())
		return
	}
	now := time.Now()
	if !final && (now.Before(r.ckRetry) || now.Before(r.ckPaced)) {
		return
	}
	if ctx.Err() != nil || final {
		ctx = context.Background()
	}
	// No deadline on the whole: each request is bounded by itself (the
	// JetStream default timeout, 15 s for an acknowledgement), so a
	// checkpoint of many items takes the time it needs while it
	// progresses; ctx ends it at shutdown or when fenced.
	p, err := r.store.Begin(ctx, r.corr, r.lastSeq)
	if err != nil {
		r.saving = &savingCheckpoint{ctx: ctx}
		r.saveDone(err)
		return
	}
	sv := &savingCheckpoint{p: p, msg: r.lastMsg, ctx: ctx}
	r.saving, r.ckBegan = sv, now
	r.since, r.dirty = 0, false
	pubs := r.incidents.take()
	if final {
		r.saveDone(r.write(sv, pubs))
		return
	}
	r.storeBusy = true
	go func() {
		err := r.write(sv, pubs)
		r.saved <- err // acked now, not after the tidying
		switch {
		case err != nil || sv.ctx.Err() != nil:
		case r.tidy != nil:
			r.tidy(sv.ctx)
		default:
			r.store.Tidy(sv.ctx, tidyBudget)
		}
		r.tidied <- struct{}{}
	}()
}

// pace returns when the checkpoint after one written from began to done
// may begin: as long after it as it took, so that writing checkpoints
// takes at most half of the time. A checkpoint costs what changed since
// the one before; when a whole fleet changes at once (a rollout, a
// backlog after a takeover), back-to-back checkpoints each wrote nearly
// every group, and their traffic took the servers' time from the events.
// Spaced so, each covers twice the events for about the same cost. A
// quick checkpoint (tens of milliseconds) is not held back beyond the
// snapshot interval.
func pace(began, done time.Time) time.Time { return done.Add(done.Sub(began)) }

// waitStore waits for the goroutine writing a checkpoint, if one runs: its
// outcome, then the end of its tidying.
func (r *correlatorRole) waitStore() {
	if !r.storeBusy {
		return
	}
	if r.saving != nil {
		r.saveDone(<-r.saved)
	}
	<-r.tidied
	r.storeBusy = false
}

// saveDone takes the outcome of the checkpoint being written: stored, the
// correlator is told and what it covers is acked; failed, what it held is
// written with the next one.
func (r *correlatorRole) saveDone(err error) {
	sv := r.saving
	r.saving = nil
	if errors.Is(err, checkpoint.ErrFenced) {
		r.fenced.Store(true)
		r.log.Warn("another correlator took this partition over; stopping without writing", "key", r.scope.key)
		return
	}
	if err != nil {
		r.dirty = true // Begin again: the correlator gives these items again
		r.incidents.requeue(sv.unstored)
		if sv.ctx.Err() != nil {
			return // stopping: the final checkpoint follows (or the partition was fenced)
		}
		r.checkpointFailed(time.Now(), err)
		return
	}
	r.corr.Committed()
	now := time.Now()
	r.checkpointStored(now)
	r.ckPaced = pace(r.ckBegan, now)
	r.snapSeq = sv.p.Seq()
	if sv.msg != nil {
		if err := sv.msg.Ack(); err != nil {
			r.log.Warn("ack failed", "seq", r.snapSeq, "err", err)
		}
		if r.lastMsg == sv.msg {
			r.lastMsg = nil
		}
	}
}

// checkpointFailed counts a failed checkpoint, logs the first of an
// episode and sets when the next may be tried.
func (r *correlatorRole) checkpointFailed(now time.Time, err error) {
	r.met.ckpt.failed()
	r.ckFails++
	if r.ckFails == 1 {
		r.ckSince = now
		r.ckBackoff = max(r.cfg.SnapshotInterval, 100*time.Millisecond)
		r.log.Error("checkpoint not stored; events stay unacked until one is (retried with back-off; logged again when it recovers)",
			"key", r.scope.key, "seq", r.lastSeq, "err", err)
	} else {
		r.ckBackoff = min(2*r.ckBackoff, maxCheckpointBackoff)
		r.log.Debug("checkpoint not stored", "key", r.scope.key, "attempt", r.ckFails, "err", err)
	}
	// ±20 % jitter, so that partitions failing together do not retry in step.
	r.ckRetry = now.Add(r.ckBackoff * time.Duration(80+rand.IntN(41)) / 100)
}

// checkpointStored records that the state is stored (a checkpoint, or
// nothing to store) and ends a failure episode.
func (r *correlatorRole) checkpointStored(now time.Time) {
	if r.ckFails > 0 {
		r.log.Info("checkpoint stored again", "key", r.scope.key, "failed_attempts", r.ckFails, "after", now.Sub(r.ckSince).Round(time.Millisecond))
		r.ckFails, r.ckRetry = 0, time.Time{}
	}
	r.met.ckpt.ok(r.scope.key, now)
}
