package durable

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/rules"
)

// Correlators runs one correlator per partition of KLAXON_EVENTS that this
// process holds.
//
// On an external NATS cluster every partition has a lease in the
// KLAXON_LEASES bucket, whose entries expire when they are not written
// again within correlator.lease_ttl. A replica renews the leases it holds
// every quarter of that time; it claims its preferred partition at once
// and any partition nobody holds after one TTL of its own uptime (so that
// the replicas starting together each get their own first). A replica that
// took a partition over hands it back when the partition's preferred
// replica asks for it (a "want" entry). A partition's correlator restores
// the partition's checkpoint and claims it: a new epoch written to the
// checkpoint's meta record with compare-and-set, and every later commit
// with compare-and-set on that revision (see correlate/checkpoint): a
// previous holder that was only cut off, not dead, fails its next
// checkpoint, stops without writing, and publishes nothing more; what it
// wrote meanwhile is ignored.
//
// With the embedded server this process is the only correlator: it runs
// every partition without leases.
type Correlators struct {
	js jetstream.JetStream
	// incidentJS publishes the correlators' incident changes (incidents.go).
	incidentJS jetstream.JetStream
	cfg        Config
	now        func() time.Time
	log        *slog.Logger
	met        *Metrics
	n          int                // partitions
	prefer     map[int]bool       // partitions claimed at once and never handed back
	leases     jetstream.KeyValue // nil without leases
	id         string             // this process in lease entries

	mu      sync.Mutex
	set     *rules.Set
	workers map[int]*partitionWorker
	gauges  map[int]*Gauges
	started time.Time
	// processed counts the events every partition's correlator processed.
	processed atomic.Uint64
}

// Processed returns how many events the correlators processed so far (the
// live benchmarks wait for it); safe to call while Run runs.
func (c *Correlators) Processed() uint64 { return c.processed.Load() }

// partitionWorker is the correlator of one held partition.
type partitionWorker struct {
	p       int
	role    *correlatorRole
	cancel  context.CancelFunc
	done    chan struct{}
	rev     uint64    // lease revision
	renewed time.Time // last successful renewal
}

// Options are what New needs besides the configuration.
type Options struct {
	// JS is the JetStream context of KLAXON_EVENTS, KLAXON_STATE and
	// KLAXON_INCIDENTS.
	JS jetstream.JetStream
	// Partitions is the number of partitions of KLAXON_EVENTS.
	Partitions int
	// Leases is the KLAXON_LEASES bucket; nil runs every partition without
	// leases (the embedded server: this process is the only correlator).
	Leases jetstream.KeyValue
	// Rules is the rule set to start with.
	Rules *rules.Set
	// Now is the wall clock of the correlators' time.
	Now func() time.Time
	// Log receives the correlators' diagnostics.
	Log *slog.Logger
	// Metrics receives the counters for /metrics and readiness.
	Metrics *Metrics
}

// New makes the correlators of the partitions of o.JS this process may
// hold; Run runs them.
func New(cfg Config, o Options) (*Correlators, error) {
	n, met := o.Partitions, o.Metrics
	met.ckpt.setMaxAge(cfg.CheckpointMaxAge)
	met.setRuleErrors(o.Rules)
	host, _ := os.Hostname()
	incidentJS, err := newIncidentJetStream(o.JS.Conn())
	if err != nil {
		return nil, fmt.Errorf("correlator: %w", err)
	}
	c := &Correlators{
		incidentJS: incidentJS,
		js:         o.JS, cfg: cfg, now: o.Now, log: o.Log.With("role", "correlator"), met: met, n: n,
		prefer: map[int]bool{}, set: o.Rules, leases: o.Leases,
		id:      fmt.Sprintf("%s/%d/%08x", host, os.Getpid(), rand.Uint32()),
		workers: map[int]*partitionWorker{}, gauges: map[int]*Gauges{},
	}
	switch p := cfg.Partition; {
	case p == nil:
		for i := range n {
			c.prefer[i] = true
		}
	case *p >= n:
		return nil, fmt.Errorf("correlator.partition: %d, but KLAXON_EVENTS has %d partitions (correlator.partitions)", *p, n)
	default:
		c.prefer[*p] = true
	}
	c.log.Info("correlator partitions", "partitions", n, "prefer", sortedParts(c.prefer), "leases", c.leases != nil, "id", c.id)
	return c, nil
}

// SetRules hands a reloaded rule set to every partition's correlator.
func (c *Correlators) SetRules(set *rules.Set) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.set = set
	for _, w := range c.workers {
		w.role.SetRules(set)
	}
}

// Run holds partitions until ctx is done, then stops every correlator
// (each processes what it was delivered and snapshots) and releases the
// leases so that another replica takes over without waiting.
func (c *Correlators) Run(ctx context.Context) error {
	c.started = time.Now()
	every := c.cfg.LeaseTTL / 4
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		c.step(ctx)
		select {
		case <-ctx.Done():
			c.stopAll()
			return nil
		case <-t.C:
		}
	}
}

func (c *Correlators) step(ctx context.Context) {
	for p := range c.n {
		if ctx.Err() != nil {
			return
		}
		w := c.workers[p]
		if w != nil {
			select {
			case <-w.done:
				// It stopped on its own (the consumer went away, or it was
				// fenced off): drop it; the partition is claimed again below
				// and its correlator restarts from the snapshot.
				fenced := w.role.fenced.Load()
				c.log.Warn("partition correlator stopped", "partition", p, "fenced", fenced)
				c.remove(w)
				if !fenced {
					c.release(w)
				}
				w = nil
			default:
			}
		}
		if w != nil {
			c.renew(ctx, w)
			continue
		}
		c.claim(ctx, p)
	}
}

func leaseKey(p int) string { return "partition-" + strconv.Itoa(p) }
func wantKey(p int) string  { return "want-" + strconv.Itoa(p) }

// claim tries to take partition p.
func (c *Correlators) claim(ctx context.Context, p int) {
	if c.leases == nil {
		c.start(ctx, p, 0)
		return
	}
	preferred := c.prefer[p]
	if !preferred && (time.Since(c.started) < c.cfg.LeaseTTL || c.wanted(ctx, p)) {
		return // leave it to its preferred replica
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.LeaseTTL/4)
	defer cancel()
	rev, err := c.leases.Create(rctx, leaseKey(p), []byte(c.id))
	if casConflict(err) {
		// Held. By this process (a renewal timed out, the entry lived)?
		if e, gerr := c.leases.Get(rctx, leaseKey(p)); gerr == nil && string(e.Value()) == c.id {
			rev, err = c.leases.Update(rctx, leaseKey(p), []byte(c.id), e.Revision())
		}
	}
	switch {
	case err == nil:
		c.start(ctx, p, rev)
	case casConflict(err):
		if preferred {
			if _, err := c.leases.Put(rctx, wantKey(p), []byte(c.id)); err != nil {
				c.log.Warn("partition lease: asking for the partition failed", "partition", p, "err", err)
			}
		}
	default:
		c.log.Warn("partition lease: claim failed", "partition", p, "err", err)
	}
}

// wanted reports whether another replica asks for partition p.
func (c *Correlators) wanted(ctx context.Context, p int) bool {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.LeaseTTL/4)
	defer cancel()
	e, err := c.leases.Get(rctx, wantKey(p))
	return err == nil && string(e.Value()) != c.id
}

// renew renews the lease of a held partition: fence the worker off when the
// lease was taken, or could not be renewed for most of its TTL; hand a
// partition back to the replica that prefers it.
func (c *Correlators) renew(ctx context.Context, w *partitionWorker) {
	if c.leases == nil {
		return
	}
	rev, err := c.extend(ctx, w)
	switch {
	case err == nil:
		w.rev, w.renewed = rev, time.Now()
	case casConflict(err):
		c.log.Warn("partition lease lost to another replica", "partition", w.p)
		c.fence(w)
		return
	case time.Since(w.renewed) > c.cfg.LeaseTTL*3/4:
		c.log.Warn("partition lease not renewed in time; stopping its correlator", "partition", w.p, "err", err)
		c.fence(w)
		return
	default:
		c.log.Warn("partition lease renewal failed; retrying", "partition", w.p, "err", err)
		return
	}
	if !c.prefer[w.p] && c.wanted(ctx, w.p) {
		c.log.Info("handing the partition back to its preferred replica", "partition", w.p)
		c.stop(w)
		c.release(w)
	}
}

// start runs the correlator of partition p, holding the lease at rev.
func (c *Correlators) start(ctx context.Context, p int, rev uint64) {
	c.mu.Lock()
	set := c.set
	c.mu.Unlock()
	w := &partitionWorker{p: p, rev: rev, renewed: time.Now(), done: make(chan struct{})}
	var role *correlatorRole
	var err error
	c.holdLease(ctx, w, func() {
		role, err = newScopedCorrelator(ctx, c.js, c.incidentJS, set, c.cfg, scopeOf(p, c.n), c.now, c.log, c.met)
	})
	if err == nil {
		role.processed = &c.processed
	}
	if err != nil {
		c.log.Error("partition correlator not started", "partition", p, "err", err)
		c.release(w)
		return
	}
	role.gauges = func(g *Gauges) { c.storeGauges(p, g) }
	w.role = role
	resumeAfter := role.snapSeq // read before run's goroutine owns role
	wctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() {
		defer close(w.done)
		if err := role.run(wctx); err != nil && !errors.Is(err, errFenced) && wctx.Err() == nil {
			c.log.Error("partition correlator", "partition", p, "err", err)
		}
	}()
	c.mu.Lock()
	c.workers[p] = w
	c.mu.Unlock()
	if c.leases != nil {
		c.log.Info("partition taken", "partition", p, "preferred", c.prefer[p], "resume_after_seq", resumeAfter)
	}
}

// extend writes w's lease again (at its revision), within a quarter of the
// lease's TTL.
func (c *Correlators) extend(ctx context.Context, w *partitionWorker) (uint64, error) {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.LeaseTTL/4)
	defer cancel()
	return c.leases.Update(rctx, leaseKey(w.p), []byte(c.id), w.rev)
}

// holdLease runs f (a restore: seconds for a large state on busy servers,
// longer than the lease lives) while renewing w's lease every quarter of
// its TTL, so that the partition is not taken from under its restore.
func (c *Correlators) holdLease(ctx context.Context, w *partitionWorker, f func()) {
	if c.leases == nil {
		f()
		return
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(c.cfg.LeaseTTL / 4)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			rev, err := c.extend(ctx, w)
			if err == nil {
				w.rev, w.renewed = rev, time.Now()
			} else if casConflict(err) {
				return // taken: the first renewal after the start fences it
			}
		}
	}()
	f()
	close(stop)
	<-done
}

// stop stops a worker in order: it processes what it was delivered and
// snapshots.
func (c *Correlators) stop(w *partitionWorker) {
	w.cancel()
	<-w.done
	c.remove(w)
}

// fence stops a worker that lost its partition, without a snapshot and
// without waiting: fenced, it writes, acks and publishes nothing more, and
// a KV or publish call in flight must not hold up the other leases.
func (c *Correlators) fence(w *partitionWorker) {
	w.role.fenced.Store(true)
	w.cancel()
	c.remove(w)
}

func (c *Correlators) remove(w *partitionWorker) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.workers[w.p] == w {
		delete(c.workers, w.p)
		c.met.ckpt.forget(w.role.scope.key)
	}
	delete(c.gauges, w.p)
}

// release deletes the lease of w if it is still this process's.
func (c *Correlators) release(w *partitionWorker) {
	if c.leases == nil || w.rev == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(context.Background(), c.cfg.LeaseTTL/2)
	defer cancel()
	if err := c.leases.Delete(rctx, leaseKey(w.p), jetstream.LastRevision(w.rev)); err != nil && !casConflict(err) {
		c.log.Warn("partition lease not released; it expires", "partition", w.p, "err", err)
	}
}

func (c *Correlators) stopAll() {
	c.mu.Lock()
	ws := make([]*partitionWorker, 0, len(c.workers))
	for _, w := range c.workers {
		ws = append(ws, w)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.stop(w)
			if !w.role.fenced.Load() {
				c.release(w)
			}
		}()
	}
	wg.Wait()
}

// storeGauges merges the gauges of the held partitions for /metrics.
func (c *Correlators) storeGauges(p int, g *Gauges) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, held := c.workers[p]; !held {
		return // stopped meanwhile
	}
	c.gauges[p] = g
	m := *g // fields not summed below are the latest partition's
	m.Stats = correlate.Stats{MatchesByRule: map[string]uint64{}}
	m.Groups = map[string]int{}
	m.Open = map[[2]string]int{}
	m.Inhibited = nil
	for _, p := range slices.Sorted(maps.Keys(c.gauges)) {
		m.Inhibited = append(m.Inhibited, c.gauges[p].Inhibited...)
	}
	for _, pg := range c.gauges {
		m.Stats.Events += pg.Stats.Events
		m.Stats.Matched += pg.Stats.Matched
		m.Stats.Incidents += pg.Stats.Incidents
		m.Stats.Late += pg.Stats.Late
		for k, v := range pg.Stats.MatchesByRule {
			m.Stats.MatchesByRule[k] += v
		}
		for k, v := range pg.Groups {
			m.Groups[k] += v
		}
		for k, v := range pg.Open {
			m.Open[k] += v
		}
	}
	c.met.corr.Store(&m)
}

// casConflict reports a failed compare-and-set on a KV entry.
func casConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

func sortedParts(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}
