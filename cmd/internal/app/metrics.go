package app

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/correlate/durable"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/journald"
	"github.com/klaxon-dev/klaxon/ingest/nomadevents"
	"github.com/klaxon-dev/klaxon/ingest/nomadlog"
	"github.com/klaxon-dev/klaxon/ingest/winevt"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/sinks"
	"github.com/klaxon-dev/klaxon/sinks/silence"
)

// HTTPConfig is klaxon's own HTTP endpoint: /metrics, /healthz, /readyz
// and POST /-/reload.
type HTTPConfig struct {
	// Listen is host:port; default 127.0.0.1:9464; "off" disables it.
	Listen string `yaml:"listen"`
	// Token is the bearer token required by endpoints that change
	// anything; required when Listen is not a loopback address.
	Token ingest.Secret `yaml:"token"`
}

// sourceMeter counts what one source emits on its way to the publisher,
// and what of it JetStream acknowledged (the events whose positions the
// source's checkpoint may then cover).
type sourceMeter struct {
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

// forward copies events from in to out, counting them; each event's Commit
// is wrapped to count its acknowledgement.
func (m *sourceMeter) forward(in <-chan ingest.Event, out chan<- ingest.Event, now func() time.Time) {
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
func (m *sourceMeter) checkpointAge(now time.Time) float64 {
	if m.published.Load() >= m.events.Load() {
		return 0
	}
	since := max(m.waitingSince.Load(), m.lastCommit.Load())
	return max(now.Sub(time.Unix(0, since)).Seconds(), 0)
}

// parseErrors reads a source's count of input it could not use.
func (m *sourceMeter) parseErrors() float64 {
	switch s := m.src.(type) {
	case *nomadlog.Tailer:
		st := s.Stats()
		return float64(st.Unparsed + st.Oversize)
	case *nomadevents.Source:
		st := s.Stats()
		return float64(st.Malformed + st.Unknown)
	case *journald.Source:
		st := s.Stats()
		return float64(st.Unparsed + st.Oversize + st.Malformed)
	case *winevt.Source:
		st := s.Stats()
		return float64(st.BadRecords + st.BadChunks)
	}
	return 0
}

type namedDispatcher struct {
	name string
	d    *sinks.Dispatcher
}

// metrics holds klaxon's Prometheus registry.
type metrics struct {
	reg *prometheus.Registry
	// corr are the correlators' metrics (readiness, the web view).
	corr *durable.Metrics

	mu        sync.Mutex
	sources   []*sourceMeter
	dispatch  []namedDispatcher
	publisher *bus.Publisher
	bus       *bus.Bus
	cps       *ingest.Checkpoints
	ready     atomic.Bool
	// now is the clock of the age gauges (default time.Now).
	now func() time.Time
	// dlqTimeout bounds the KLAXON_DLQ query of one scrape (default 1s).
	dlqTimeout time.Duration
	log        *slog.Logger
	// mount, when set, adds more routes (the web view) to the endpoint.
	mount func(*http.ServeMux)
	// silences, when set, is served on /api/silences.
	silences *silence.Store
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), now: time.Now, dlqTimeout: time.Second, log: slog.Default()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.corr = durable.NewMetrics(m.reg)
	m.reg.MustRegister(m)
	return m
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
	descPublished       = prometheus.NewDesc("klaxon_events_published_total", "Events JetStream stored.", nil, nil)
	descDuplicates      = prometheus.NewDesc("klaxon_events_duplicate_total", "Events JetStream dropped as re-sent duplicates.", nil, nil)
	descPubRetries      = prometheus.NewDesc("klaxon_publish_retries_total", "Event publishes sent again after a failure.", nil, nil)
	descPubErrors       = prometheus.NewDesc("klaxon_publish_errors_total", "Failed event publish attempts.", nil, nil)
	descSinkDelivered   = prometheus.NewDesc("klaxon_sink_deliveries_total", "Incident changes a sink delivered.", []string{"sink"}, nil)
	descSinkFailures    = prometheus.NewDesc("klaxon_sink_failures_total", "Failed deliveries to a sink (retried or sent to the dead letters).", []string{"sink"}, nil)
	descSinkRetries     = prometheus.NewDesc("klaxon_sink_retries_total", "Deliveries that failed and will be retried.", []string{"sink"}, nil)
	descSinkDead        = prometheus.NewDesc("klaxon_sink_dead_letters_total", "Incident changes a sink gave up on (sent to klaxon.dlq.<sink>).", []string{"sink"}, nil)
	descSinkFetchErrors = prometheus.NewDesc("klaxon_sink_fetch_errors_total", "Failed fetches from a sink's JetStream consumer (each is followed by a jittered back-off).", []string{"sink"}, nil)
	descSinkSilenced    = prometheus.NewDesc("klaxon_sink_silenced_total", "Incident changes a silence kept from a sink (the latest of an incident is sent when its silence ends).", []string{"sink"}, nil)
	descSinkDLQ         = prometheus.NewDesc("klaxon_sink_dlq_messages", "Messages on klaxon.dlq.<sink> in the KLAXON_DLQ stream.", []string{"sink"}, nil)
	descNATS            = prometheus.NewDesc("klaxon_nats_connected", "1 when the NATS connection is up.", nil, nil)
	descNATSReconnects  = prometheus.NewDesc("klaxon_nats_reconnects_total", "Times the NATS connection reconnected.", nil, nil)
	descReady           = prometheus.NewDesc("klaxon_ready", "1 when every role runs, NATS is connected and the correlator state was stored within correlator.checkpoint_max_age (what /readyz answers).", nil, nil)
)

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSourceEvents, descSourcePublished, descSourceErrors, descSourceLag, descSourceLast,
		descStreamResets, descStreamGaps, descStreamStale,
		descSourceCkptAge, descCheckpointAge, descPublished, descDuplicates, descPubRetries, descPubErrors,
		descSinkDelivered, descSinkFailures, descSinkRetries, descSinkDead, descSinkSilenced, descSinkFetchErrors, descSinkDLQ, descNATS, descNATSReconnects, descReady} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it reads the components' own
// counters at scrape time.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
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
		counter(descSourceEvents, float64(s.events.Load()), name)
		counter(descSourcePublished, float64(s.published.Load()), name)
		counter(descSourceErrors, s.parseErrors(), name)
		gauge(descSourceLag, float64(s.lagMillis.Load())/1000, name)
		if t := s.lastEvent.Load(); t != 0 {
			gauge(descSourceLast, float64(t)/1e9, name)
		}
		gauge(descSourceCkptAge, s.checkpointAge(now), name)
		if es, ok := s.src.(*nomadevents.Source); ok {
			st := es.Stats()
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
	if m.publisher != nil {
		st := m.publisher.Stats()
		counter(descPublished, float64(st.Published))
		counter(descDuplicates, float64(st.Duplicates))
		counter(descPubRetries, float64(st.Retries))
		counter(descPubErrors, float64(st.Errors))
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
	connected := m.bus != nil && m.bus.NC.IsConnected()
	if m.bus != nil {
		gauge(descNATS, boolValue(connected))
		counter(descNATSReconnects, float64(m.bus.NC.Stats().Reconnects))
	}
	gauge(descReady, boolValue(m.isReady()))
	if connected && len(m.dispatch) > 0 {
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
		// Dead letters of sinks this process does not run (another
		// process's, or removed from the config) still show, by subject token.
		for subj, n := range sizes {
			if !names[subj] {
				gauge(descSinkDLQ, float64(n), strings.TrimPrefix(subj, natslayout.DLQPrefix+"."))
			}
		}
	}
}

// dlqSizes counts the messages per subject of KLAXON_DLQ, bounded by
// dlqTimeout so that a slow server does not hold up the scrape.
func (m *metrics) dlqSizes() (map[string]uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), m.dlqTimeout)
	defer cancel()
	st, err := m.bus.JS.Stream(ctx, natslayout.DLQStream)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(natslayout.DLQSubjects))
	if err != nil {
		return nil, err
	}
	return info.State.Subjects, nil
}

// isReady is what /readyz answers: every role runs, NATS is connected, and
// every partition this process correlates stored its state recently.
func (m *metrics) isReady() bool {
	return m.ready.Load() && (m.bus == nil || m.bus.NC.IsConnected()) && m.corr.Fresh(m.now())
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// serveHTTP runs the endpoint until ctx is done. reload is called by POST
// /-/reload.
func (m *metrics) serveHTTP(ctx context.Context, cfg HTTPConfig, reload func() error, log *slog.Logger) (addr string, err error) {
	if cfg.Listen == "off" {
		return "", nil
	}
	if log != nil {
		m.mu.Lock()
		m.log = log
		m.mu.Unlock()
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !m.isReady() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("POST /-/reload", func(w http.ResponseWriter, r *http.Request) {
		if !authorized(r, cfg.Token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="klaxon"`)
			http.Error(w, "a bearer token is required", http.StatusUnauthorized)
			return
		}
		if err := reload(); err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		fmt.Fprintln(w, "reloaded")
	})
	if m.mount != nil {
		m.mount(mux)
	}
	if m.silences != nil {
		registerSilences(mux, m.silences, cfg.Token, m.now, log)
		if m.bus != nil {
			registerDLQ(mux, m.bus.JS, cfg.Token, m.sinkNames, log)
		}
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return "", fmt.Errorf("http.listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http endpoint stopped", "err", err)
		}
	}()
	return l.Addr().String(), nil
}

// authorized checks the bearer token; without a configured token (only
// allowed on loopback) every request is allowed.
func authorized(r *http.Request, token ingest.Secret) bool {
	if !token.IsSet() {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(token.Reveal())) == 1
}

// isLoopbackListen reports whether a listen address binds only to loopback.
func isLoopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sinkNames are the names of the sinks this process runs.
func (m *metrics) sinkNames() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, d := range m.dispatch {
		out = append(out, d.name)
	}
	return out
}
