// Package meter counts what the sources of the ingest role read and what
// of it JetStream acknowledged, for /metrics: one Source per running
// source, between the source and the publisher.
package meter

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Source counts what one source emits on its way to the publisher, and
// what of it JetStream acknowledged (the events whose positions the
// source's checkpoint may then cover).
type Source struct {
	src ingest.Source
	// observe, when set, sees each event before it is forwarded.
	observe   func(*ingest.Event)
	events    atomic.Uint64
	published atomic.Uint64
	lagMillis atomic.Int64 // read time − event time of the last event
	lastEvent atomic.Int64 // unix nanos of the last event read
	// waitingSince is when the oldest unacknowledged event was read (unix
	// nanos; meaningful while events > published), lastCommit when an
	// event was last acknowledged.
	waitingSince, lastCommit atomic.Int64
}

// Forward copies events from in to out, counting them; each event's Commit
// is wrapped to count its acknowledgement.
func (m *Source) Forward(in <-chan ingest.Event, out chan<- ingest.Event, now func() time.Time) {
	for ev := range in {
		t := now()
		if m.published.Load() >= m.events.Load() {
			m.waitingSince.Store(t.UnixNano())
		}
		m.events.Add(1)
		if !ev.Time.IsZero() {
			m.lagMillis.Store(t.Sub(ev.Time).Milliseconds())
			m.lastEvent.Store(ev.Time.UnixNano())
		}
		if m.observe != nil {
			m.observe(&ev)
		}
		commit := ev.Commit
		ev.Commit = func() {
			if commit != nil {
				commit()
			}
			m.lastCommit.Store(now().UnixNano())
			m.published.Add(1)
		}
		out <- ev
	}
}

// checkpointAge is how long the source's position has waited for
// acknowledgements: 0 when everything read is acknowledged, else the time
// since the last acknowledgement or since the oldest waiting event was
// read, whichever is later.
func (m *Source) checkpointAge(now time.Time) float64 {
	if m.published.Load() >= m.events.Load() {
		return 0
	}
	since := max(m.waitingSince.Load(), m.lastCommit.Load())
	return max(now.Sub(time.Unix(0, since)).Seconds(), 0)
}

// Metrics are the sources' series: one Source per source, and the age of
// the source checkpoints.
type Metrics struct {
	now func() time.Time

	mu      sync.Mutex
	sources []*Source
	cps     *ingest.Checkpoints
}

// NewMetrics makes the sources' metrics and registers them with reg; now
// is the clock of the age gauges.
func NewMetrics(reg prometheus.Registerer, now func() time.Time) *Metrics {
	m := &Metrics{now: now}
	reg.MustRegister(m)
	return m
}

// Meter returns the counter of src; observe, when set, sees each event
// before it is forwarded.
func (m *Metrics) Meter(src ingest.Source, observe func(*ingest.Event)) *Source {
	s := &Source{src: src, observe: observe}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sources = append(m.sources, s)
	return s
}

// SetCheckpoints gives the source checkpoints whose age is exposed.
func (m *Metrics) SetCheckpoints(cps *ingest.Checkpoints) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cps = cps
}

var (
	descSourceEvents    = prometheus.NewDesc("klaxon_source_events_total", "Events read by a source.", []string{"source"}, nil)
	descSourcePublished = prometheus.NewDesc("klaxon_source_events_published_total", "Events of a source JetStream acknowledged (stored, or dropped as a re-sent duplicate); the source's checkpoint may cover them.", []string{"source"}, nil)
	descSourceErrors    = prometheus.NewDesc("klaxon_source_parse_errors_total", "Input a source could not use (unparsed or oversize lines, malformed frames, damaged records).", []string{"source"}, nil)
	descSourceLag       = prometheus.NewDesc("klaxon_source_lag_seconds", "Read time minus event time of the last event a source read.", []string{"source"}, nil)
	descSourceLast      = prometheus.NewDesc("klaxon_source_last_event_timestamp_seconds", "Event time of the last event a source read.", []string{"source"}, nil)
	descStreamResets    = prometheus.NewDesc("klaxon_nomad_event_stream_resets_total", "Times the Nomad server's event index went back below the source's checkpoint (state reset, restored or rebuilt); the stream was followed from the new index.", []string{"source"}, nil)
	descStreamGaps      = prometheus.NewDesc("klaxon_nomad_event_stream_gaps_total", "Resumes of the Nomad event stream past indexes that left the server's buffer (changes in between may be missing).", []string{"source"}, nil)
	descStreamStale     = prometheus.NewDesc("klaxon_nomad_event_stream_stale_frames_total", "Nomad event-stream frames below the resume index, dropped.", []string{"source"}, nil)
	descSourceCkptAge   = prometheus.NewDesc("klaxon_source_checkpoint_age_seconds", "How long a source's position has waited for JetStream to acknowledge the events it read (0 when none waits).", []string{"source"}, nil)
	descCheckpointAge   = prometheus.NewDesc("klaxon_checkpoint_age_seconds", "Time since the source checkpoints were last written.", nil, nil)
)

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSourceEvents, descSourcePublished, descSourceErrors, descSourceLag, descSourceLast,
		descStreamResets, descStreamGaps, descStreamStale, descSourceCkptAge, descCheckpointAge} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it reads the sources' own
// counters at scrape time.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	for _, s := range m.sources {
		name := s.src.Name()
		var c ingest.Counters
		if cs, ok := s.src.(ingest.Counted); ok {
			c = cs.Counters()
		}
		counter(descSourceEvents, float64(s.events.Load()), name)
		counter(descSourcePublished, float64(s.published.Load()), name)
		counter(descSourceErrors, float64(c.ParseErrors), name)
		gauge(descSourceLag, float64(s.lagMillis.Load())/1000, name)
		if t := s.lastEvent.Load(); t != 0 {
			gauge(descSourceLast, float64(t)/1e9, name)
		}
		gauge(descSourceCkptAge, s.checkpointAge(now), name)
		if st := c.Stream; st != nil {
			counter(descStreamResets, float64(st.Resets), name)
			counter(descStreamGaps, float64(st.Gaps), name)
			counter(descStreamStale, float64(st.Stale), name)
		}
	}
	if m.cps != nil {
		if t := m.cps.LastFlush(); !t.IsZero() {
			gauge(descCheckpointAge, max(now.Sub(t).Seconds(), 0))
		}
	}
}
