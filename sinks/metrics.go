package sinks

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/klaxon-dev/klaxon/internal/natslayout"
)

// Metrics are the series of the dispatchers a process runs (sinks and
// actions), and the dead letters waiting in KLAXON_DLQ.
type Metrics struct {
	mu       sync.Mutex
	dispatch []namedDispatcher
	js       jetstream.JetStream
	// connected reports whether the connection of js is up (no KLAXON_DLQ
	// query otherwise).
	connected func() bool
	log       *slog.Logger
	// dlqTimeout bounds the KLAXON_DLQ query of one scrape.
	dlqTimeout time.Duration
}

type namedDispatcher struct {
	name string
	d    *Dispatcher
}

// NewMetrics makes the dispatchers' metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{dlqTimeout: time.Second, log: slog.Default()}
	reg.MustRegister(m)
	return m
}

// Add exposes the counters of d, the dispatcher of sink name.
func (m *Metrics) Add(name string, d *Dispatcher) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dispatch = append(m.dispatch, namedDispatcher{name, d})
}

// Names are the names of the sinks added, in order.
func (m *Metrics) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, d := range m.dispatch {
		out = append(out, d.name)
	}
	return out
}

// WatchDLQ exposes the dead letters in KLAXON_DLQ of js, asked at every
// scrape while connected reports the connection up; log receives why they
// could not be counted.
func (m *Metrics) WatchDLQ(js jetstream.JetStream, connected func() bool, log *slog.Logger) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.js, m.connected, m.log = js, connected, log
}

var (
	descSinkDelivered   = prometheus.NewDesc("klaxon_sink_deliveries_total", "Incident changes a sink delivered.", []string{"sink"}, nil)
	descSinkFailures    = prometheus.NewDesc("klaxon_sink_failures_total", "Failed deliveries to a sink (retried or sent to the dead letters).", []string{"sink"}, nil)
	descSinkRetries     = prometheus.NewDesc("klaxon_sink_retries_total", "Deliveries that failed and will be retried.", []string{"sink"}, nil)
	descSinkDead        = prometheus.NewDesc("klaxon_sink_dead_letters_total", "Incident changes a sink gave up on (sent to klaxon.dlq.<sink>).", []string{"sink"}, nil)
	descSinkFetchErrors = prometheus.NewDesc("klaxon_sink_fetch_errors_total", "Failed fetches from a sink's JetStream consumer (each is followed by a jittered back-off).", []string{"sink"}, nil)
	descSinkSilenced    = prometheus.NewDesc("klaxon_sink_silenced_total", "Incident changes a silence kept from a sink (the latest of an incident is sent when its silence ends).", []string{"sink"}, nil)
	descSinkDLQ         = prometheus.NewDesc("klaxon_sink_dlq_messages", "Messages on klaxon.dlq.<sink> in the KLAXON_DLQ stream.", []string{"sink"}, nil)
)

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSinkDelivered, descSinkFailures, descSinkRetries, descSinkDead, descSinkSilenced, descSinkFetchErrors, descSinkDLQ} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it reads the dispatchers' own
// counters at scrape time.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	for _, d := range m.dispatch {
		st := d.d.Stats()
		counter(descSinkDelivered, float64(st.Delivered), d.name)
		counter(descSinkFailures, float64(st.Retried+st.DeadLettered), d.name)
		counter(descSinkRetries, float64(st.Retried), d.name)
		counter(descSinkDead, float64(st.DeadLettered), d.name)
		counter(descSinkSilenced, float64(st.Silenced), d.name)
		counter(descSinkFetchErrors, float64(st.FetchErrors), d.name)
	}
	if m.js == nil || !m.connected() || len(m.dispatch) == 0 {
		return
	}
	sizes, err := m.dlqSizes()
	if err != nil {
		m.log.Debug("metrics: dead-letter counts unavailable", "stream", natslayout.DLQStream, "err", err)
		return
	}
	names := map[string]bool{}
	for _, d := range m.dispatch {
		subj := natslayout.DLQSubject(d.name)
		gauge(descSinkDLQ, float64(sizes[subj]), d.name)
		names[subj] = true
	}
	// Dead letters of sinks this process does not run (another process's,
	// or removed from the config) still show, by subject token.
	for subj, n := range sizes {
		if !names[subj] {
			gauge(descSinkDLQ, float64(n), strings.TrimPrefix(subj, natslayout.DLQPrefix+"."))
		}
	}
}

// dlqSizes counts the messages per subject of KLAXON_DLQ, bounded by
// dlqTimeout so that a slow server does not hold up the scrape.
func (m *Metrics) dlqSizes() (map[string]uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), m.dlqTimeout)
	defer cancel()
	st, err := m.js.Stream(ctx, natslayout.DLQStream)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(natslayout.DLQSubjects))
	if err != nil {
		return nil, err
	}
	return info.State.Subjects, nil
}
