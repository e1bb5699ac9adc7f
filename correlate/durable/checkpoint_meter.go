package durable

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultCheckpointMaxAge is how long the correlator may go without a
// stored checkpoint before /readyz says not ready (correlator.checkpoint_max_age).
const DefaultCheckpointMaxAge = 2 * time.Minute

var (
	descCkptFailures = prometheus.NewDesc("klaxon_state_checkpoint_failures_total",
		"Correlator checkpoints that could not be stored in KLAXON_STATE (each is retried after a back-off; the events stay unacknowledged meanwhile).", nil, nil)
	descCkptLast = prometheus.NewDesc("klaxon_state_checkpoint_last_success_timestamp_seconds",
		"When the correlator state was last known stored: a checkpoint written, or nothing to write (the oldest of the partitions this process holds).", nil, nil)
)

// checkpointMeter follows the correlator checkpoints of this process: how
// many failed, and per partition (scope key) when the state was last
// known stored. It is a Prometheus collector of its own.
type checkpointMeter struct {
	failures atomic.Uint64

	mu   sync.Mutex
	last map[string]time.Time
	// maxAge is how long a partition may go without a stored checkpoint
	// before the process is not ready (0: DefaultCheckpointMaxAge).
	maxAge time.Duration
}

// hold records that this process holds scope key, its state stored as of
// t (restored).
func (m *checkpointMeter) hold(key string, t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.last == nil {
		m.last = map[string]time.Time{}
	}
	m.last[key] = t
}

// ok records that the state of scope key is stored as of t; a scope no
// longer held (a correlator fenced while its checkpoint was under way) is
// not brought back.
func (m *checkpointMeter) ok(key string, t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, held := m.last[key]; held {
		m.last[key] = t
	}
}

// failed counts a checkpoint that was not stored.
func (m *checkpointMeter) failed() { m.failures.Add(1) }

// forget drops a partition this process no longer holds.
func (m *checkpointMeter) forget(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.last, key)
}

// setMaxAge sets the readiness bound.
func (m *checkpointMeter) setMaxAge(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maxAge = d
}

// oldest returns the oldest last-stored time of the held partitions.
func (m *checkpointMeter) oldest() (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var t time.Time
	for _, v := range m.last {
		if t.IsZero() || v.Before(t) {
			t = v
		}
	}
	return t, !t.IsZero()
}

// fresh reports whether every held partition stored its state within the
// bound (true without correlators).
func (m *checkpointMeter) fresh(now time.Time) bool {
	t, ok := m.oldest()
	if !ok {
		return true
	}
	m.mu.Lock()
	bound := m.maxAge
	m.mu.Unlock()
	if bound <= 0 {
		bound = DefaultCheckpointMaxAge
	}
	return now.Sub(t) <= bound
}

// Describe implements prometheus.Collector.
func (m *checkpointMeter) Describe(ch chan<- *prometheus.Desc) {
	ch <- descCkptFailures
	ch <- descCkptLast
}

// Collect implements prometheus.Collector.
func (m *checkpointMeter) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descCkptFailures, prometheus.CounterValue, float64(m.failures.Load()))
	if t, ok := m.oldest(); ok {
		ch <- prometheus.MustNewConstMetric(descCkptLast, prometheus.GaugeValue, float64(t.UnixNano())/1e9)
	}
}
