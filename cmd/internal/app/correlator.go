package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

const (
	correlatorConsumer = "correlator"
	snapshotKey        = "correlator"
	snapshotEvery      = 1000 // messages
)

// stateRecord is what the correlator keeps in the state bucket: its
// windows and incidents, and the last stream sequence they cover.
type stateRecord struct {
	Seq   uint64          `json:"seq"`
	State json.RawMessage `json:"state"`
}

// correlatorRole consumes KLAXON_EVENTS with a durable consumer, runs the
// correlator and publishes incident changes to KLAXON_INCIDENTS. It acks
// (AckAll) only after a snapshot covering the acked sequence is stored, so
// a crash loses no window and re-fires no incident: it restores the
// snapshot and skips what it covers; re-published changes carry the same
// Nats-Msg-Id and are dropped by JetStream, and sinks skip change ids they
// already delivered.
type correlatorRole struct {
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	corr     *correlate.Correlator
	log      *slog.Logger
	cfg      CorrelatorConfig
	now      func() time.Time
	setRules chan *rules.Set

	snapSeq uint64 // covered by the stored snapshot
	lastSeq uint64 // last processed
	lastMsg jetstream.Msg
	since   int  // messages since the last snapshot
	dirty   bool // incident changes since the last snapshot
	met     *metrics

	scope   partitionScope
	snapRev uint64 // KV revision of the stored snapshot (0: none)
	// fenced is set once another correlator took this partition over
	// (its snapshot revision moved): this one stops without writing.
	fenced atomic.Bool
	// gauges receives the counters for /metrics (default: met.corr).
	gauges func(*corrGauges)
	// consSeq is the consumer sequence of the last delivery; gap is set
	// when one was skipped.
	consSeq uint64
	gap     bool
}

// partitionScope names what one correlator consumes and where it keeps its
// state: the whole stream, or one partition of it.
type partitionScope struct {
	consumer string // durable consumer name
	key      string // snapshot key in KLAXON_STATE
	filter   string // subject filter
}

// wholeStream is the scope of an unpartitioned correlator (the names of
// klaxon before partitions, so that existing state is kept).
var wholeStream = partitionScope{consumer: correlatorConsumer, key: snapshotKey, filter: bus.EventsSubjects}

// scopeOf is the scope of partition p of n.
func scopeOf(p, n int) partitionScope {
	if n < 2 {
		return wholeStream
	}
	name := fmt.Sprintf("%s-p%d", correlatorConsumer, p)
	return partitionScope{consumer: name, key: name, filter: bus.PartitionSubjects(p, n)}
}

// errGap stops a correlator that missed a delivery: it is started again
// from its snapshot (see handle).
var errGap = errors.New("correlator: a delivery was lost in transit")

// errFenced stops a correlator whose partition another one took over.
var errFenced = errors.New("correlator: another correlator took this partition over")

func newCorrelatorRole(ctx context.Context, b *bus.Bus, set *rules.Set, cfg CorrelatorConfig, now func() time.Time, log *slog.Logger, met *metrics) (*correlatorRole, error) {
	return newScopedCorrelator(ctx, b, set, cfg, wholeStream, now, log, met)
}

// newScopedCorrelator makes the correlator of one scope and restores its
// snapshot.
func newScopedCorrelator(ctx context.Context, b *bus.Bus, set *rules.Set, cfg CorrelatorConfig, scope partitionScope, now func() time.Time, log *slog.Logger, met *metrics) (*correlatorRole, error) {
	kv, err := b.JS.KeyValue(ctx, bus.StateBucket)
	if err != nil {
		return nil, fmt.Errorf("correlator: state bucket: %w", err)
	}
	r := &correlatorRole{
		js: b.JS,
		kv: kv,
		corr: correlate.New(set, correlate.Options{
			MaxEvidence: cfg.MaxEvidence, UpdateInterval: cfg.UpdateInterval,
			Lateness: cfg.Lateness, Idle: cfg.Idle, Logger: log.With("role", "correlator"),
		}),
		log: log.With("role", "correlator"),
		cfg: cfg, now: now,
		setRules: make(chan *rules.Set, 1),
		met:      met,
		scope:    scope,
	}
	if scope != wholeStream {
		r.log = r.log.With("consumer", scope.consumer)
	}
	entry, err := kv.Get(ctx, scope.key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return nil, fmt.Errorf("correlator: read snapshot: %w", err)
	default:
		r.snapRev = entry.Revision()
		var rec stateRecord
		if err := json.Unmarshal(entry.Value(), &rec); err != nil {
			r.log.Error("snapshot unreadable; starting with empty state", "err", err)
			break
		}
		if err := r.corr.Restore(rec.State); err != nil {
			r.log.Error("snapshot unreadable; starting with empty state", "err", err)
			break
		}
		r.snapSeq, r.lastSeq = rec.Seq, rec.Seq
		r.log.Info("state restored", "seq", rec.Seq, "open_incidents", len(r.corr.Open()))
	}
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

// pullExpiry bounds a pull request of the correlator's consumer.
const pullExpiry = 5 * time.Second

// run consumes until ctx is done, then snapshots.
func (r *correlatorRole) run(ctx context.Context) error {
	// The snapshot, not the consumer's ack floor, says where to resume:
	// messages delivered to a crashed process but not covered by its last
	// snapshot would otherwise wait for their ack wait to expire. So the
	// consumer is made anew at the first sequence the snapshot does not cover.
	if err := r.js.DeleteConsumer(ctx, bus.EventsStream, r.scope.consumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("correlator: reset consumer: %w", err)
	}
	cc := jetstream.ConsumerConfig{
		Durable:       r.scope.consumer,
		FilterSubject: r.scope.filter,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       time.Minute,
		MaxAckPending: 4 * snapshotEvery,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if r.snapSeq > 0 {
		cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cc.OptStartSeq = r.snapSeq + 1
	}
	cons, err := r.js.CreateOrUpdateConsumer(ctx, bus.EventsStream, cc)
	if err != nil {
		return fmt.Errorf("correlator: consumer: %w", err)
	}
	// Pull requests expire after 5s with heartbeats every 2.5s: a pull
	// parked on a server that died (its consumer leader moved) is noticed
	// after two missed heartbeats and made again, instead of after the
	// default 30s.
	it, err := cons.Messages(jetstream.PullMaxMessages(512), jetstream.PullExpiry(pullExpiry))
	if err != nil {
		return fmt.Errorf("correlator: consume: %w", err)
	}
	msgs := make(chan jetstream.Msg, 512)
	go func() {
		defer close(msgs)
		for {
			m, err := it.Next()
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				// The iterator pulls again on the next call.
				r.log.Debug("no heartbeat from the consumer; pulling again")
				continue
			}
			if err != nil {
				return // iterator stopped
			}
			msgs <- m
		}
	}()
	defer it.Stop()
	tick := time.NewTicker(r.cfg.SnapshotInterval)
	defer tick.Stop()
	for {
		if r.fenced.Load() {
			return errFenced
		}
		select {
		case <-ctx.Done():
			it.Stop()
			r.drain(msgs)
			r.snapshot(context.Background())
			return nil
		case set := <-r.setRules:
			r.corr.SetRules(set)
			r.log.Info("rules reloaded", "rules", len(set.Rules))
		case m, ok := <-msgs:
			if !ok {
				r.snapshot(context.Background())
				return ctx.Err()
			}
			r.handle(ctx, m)
			if r.gap {
				it.Stop()
				r.snapshot(ctx)
				return errGap
			}
			if r.since >= snapshotEvery {
				r.snapshot(ctx)
			}
		case <-tick.C:
			r.corr.Advance(r.now().Add(-r.cfg.Lateness), r.publishFunc(ctx))
			r.snapshot(ctx)
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
}

// publishGauges hands the correlator's counters to the metrics endpoint
// (the correlator itself is not safe for concurrent use).
func (r *correlatorRole) publishGauges() {
	g := &corrGauges{stats: r.corr.Stats(), groups: r.corr.ActiveGroups(), open: map[[2]string]int{}, set: r.corr.Rules()}
	for _, in := range r.corr.Open() {
		g.open[[2]string{in.Rule, in.Severity}]++
	}
	if r.gauges != nil {
		r.gauges(g)
		return
	}
	r.met.corr.Store(g)
}

// publishFunc publishes incident changes, retrying until stored: an
// incident change is never dropped.
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
		msg := nats.NewMsg(bus.IncidentSubject(in.Severity, in.Rule))
		msg.Data = b
		msg.Header.Set(nats.MsgIdHdr, in.ChangeID())
		for attempt := 0; !r.fenced.Load(); attempt++ {
			pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := r.js.PublishMsg(pctx, msg)
			cancel()
			if err == nil {
				return
			}
			r.log.Warn("incident publish failed; retrying", "incident", in.ID, "attempt", attempt+1, "err", err)
			if attempt >= 5 && ctx.Err() != nil {
				r.log.Error("incident publish abandoned at shutdown; it is re-derived from the events after restart", "incident", in.ID)
				return
			}
			time.Sleep(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second))
		}
	}
}

// snapshot stores the state and acks everything it covers.
func (r *correlatorRole) snapshot(ctx context.Context) {
	if r.fenced.Load() {
		return
	}
	if r.lastSeq == r.snapSeq && r.since == 0 && !r.dirty {
		if r.lastMsg != nil {
			_ = r.lastMsg.Ack()
			r.lastMsg = nil
		}
		return
	}
	state, err := r.corr.Snapshot()
	if err != nil {
		r.log.Error("snapshot failed", "err", err)
		return
	}
	b, err := json.Marshal(stateRecord{Seq: r.lastSeq, State: state})
	if err != nil {
		r.log.Error("snapshot failed", "err", err)
		return
	}
	if ctx.Err() != nil {
		ctx = context.Background()
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.storeSnapshot(pctx, b); err != nil {
		r.log.Error("snapshot not stored; events stay unacked", "err", err)
		return
	}
	r.snapSeq = r.lastSeq
	r.since = 0
	r.dirty = false
	if r.lastMsg != nil {
		if err := r.lastMsg.Ack(); err != nil {
			r.log.Warn("ack failed", "seq", r.lastSeq, "err", err)
		}
		r.lastMsg = nil
	}
}

// storeSnapshot writes the snapshot if the stored one is still the one
// this correlator read or wrote last (compare-and-set on the KV revision):
// a correlator that took the partition over has written since, and this
// one is then fenced off.
func (r *correlatorRole) storeSnapshot(ctx context.Context, b []byte) error {
	var rev uint64
	var err error
	if r.snapRev == 0 {
		rev, err = r.kv.Create(ctx, r.scope.key, b)
	} else {
		rev, err = r.kv.Update(ctx, r.scope.key, b, r.snapRev)
	}
	if casConflict(err) {
		r.fenced.Store(true)
		r.log.Warn("another correlator took this partition over; stopping without writing", "key", r.scope.key)
		return errFenced
	}
	if err != nil {
		return err
	}
	r.snapRev = rev
	return nil
}
