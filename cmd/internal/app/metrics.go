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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/nomadevents"
	"github.com/klaxon-dev/klaxon/ingest/nomadlog"
	"github.com/klaxon-dev/klaxon/ingest/winevt"
	"github.com/klaxon-dev/klaxon/sinks"
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

// sourceMeter counts what one source emits on its way to the publisher.
type sourceMeter struct {
	src       ingest.Source
	events    atomic.Uint64
	lagMillis atomic.Int64 // read time − event time of the last event
	lastEvent atomic.Int64 // unix nanos of the last event read
}

// forward copies events from in to out, counting them.
func (m *sourceMeter) forward(in <-chan ingest.Event, out chan<- ingest.Event, now func() time.Time) {
	for ev := range in {
		m.events.Add(1)
		if !ev.Time.IsZero() {
			m.lagMillis.Store(now().Sub(ev.Time).Milliseconds())
			m.lastEvent.Store(ev.Time.UnixNano())
		}
		out <- ev
	}
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
	case *winevt.Source:
		st := s.Stats()
		return float64(st.BadRecords + st.BadChunks)
	}
	return 0
}

// corrGauges is what the correlator goroutine publishes for scrapes.
type corrGauges struct {
	stats  correlate.Stats
	groups map[string]int
	open   map[[2]string]int // (rule, severity) → open incidents
}

type namedDispatcher struct {
	name string
	d    *sinks.Dispatcher
}

// metrics holds klaxon's Prometheus registry.
type metrics struct {
	reg     *prometheus.Registry
	evalDur prometheus.Histogram
	changes *prometheus.CounterVec

	mu         sync.Mutex
	sources    []*sourceMeter
	dispatch   []namedDispatcher
	publisher  *bus.Publisher
	bus        *bus.Bus
	cps        *ingest.Checkpoints
	corr       atomic.Pointer[corrGauges]
	ruleErrors func() uint64
	ready      atomic.Bool
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.evalDur = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "klaxon_correlator_event_duration_seconds",
		Help:    "Time to run one event through the rules and the correlator.",
		Buckets: []float64{1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 1e-2},
	})
	m.changes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "klaxon_incident_changes_total",
		Help: "Incident changes published, by status.",
	}, []string{"status"})
	m.reg.MustRegister(m.evalDur, m.changes, m)
	return m
}

var (
	descSourceEvents  = prometheus.NewDesc("klaxon_source_events_total", "Events read by a source.", []string{"source"}, nil)
	descSourceErrors  = prometheus.NewDesc("klaxon_source_parse_errors_total", "Input a source could not use (unparsed or oversize lines, malformed frames, damaged records).", []string{"source"}, nil)
	descSourceLag     = prometheus.NewDesc("klaxon_source_lag_seconds", "Read time minus event time of the last event a source read.", []string{"source"}, nil)
	descSourceLast    = prometheus.NewDesc("klaxon_source_last_event_timestamp_seconds", "Event time of the last event a source read.", []string{"source"}, nil)
	descCheckpointAge = prometheus.NewDesc("klaxon_checkpoint_age_seconds", "Time since the source checkpoints were last written.", nil, nil)
	descPublished     = prometheus.NewDesc("klaxon_events_published_total", "Events JetStream stored.", nil, nil)
	descDuplicates    = prometheus.NewDesc("klaxon_events_duplicate_total", "Events JetStream dropped as re-sent duplicates.", nil, nil)
	descPubRetries    = prometheus.NewDesc("klaxon_publish_retries_total", "Event publishes sent again after a failure.", nil, nil)
	descPubErrors     = prometheus.NewDesc("klaxon_publish_errors_total", "Failed event publish attempts.", nil, nil)
	descCorrEvents    = prometheus.NewDesc("klaxon_correlator_events_total", "Events the correlator processed.", nil, nil)
	descCorrLate      = prometheus.NewDesc("klaxon_correlator_late_events_total", "Events older than their group's window when they arrived.", nil, nil)
	descRuleMatches   = prometheus.NewDesc("klaxon_rule_matches_total", "Events that matched a rule.", []string{"rule"}, nil)
	descRuleGroups    = prometheus.NewDesc("klaxon_rule_active_groups", "Groups with window state, per rule.", []string{"rule"}, nil)
	descOpen          = prometheus.NewDesc("klaxon_incidents_open", "Incidents firing now.", []string{"rule", "severity"}, nil)
	descRuleErrors    = prometheus.NewDesc("klaxon_rule_selector_errors_total", "Selector evaluations that failed at run time.", nil, nil)
	descSinkDelivered = prometheus.NewDesc("klaxon_sink_deliveries_total", "Incident changes a sink delivered.", []string{"sink"}, nil)
	descSinkRetries   = prometheus.NewDesc("klaxon_sink_retries_total", "Deliveries that failed and will be retried.", []string{"sink"}, nil)
	descSinkDead      = prometheus.NewDesc("klaxon_sink_dead_letters_total", "Incident changes a sink gave up on (sent to klaxon.dlq.<sink>).", []string{"sink"}, nil)
	descNATS          = prometheus.NewDesc("klaxon_nats_connected", "1 when the NATS connection is up.", nil, nil)
)

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSourceEvents, descSourceErrors, descSourceLag, descSourceLast, descCheckpointAge,
		descPublished, descDuplicates, descPubRetries, descPubErrors, descCorrEvents, descCorrLate, descRuleMatches,
		descRuleGroups, descOpen, descRuleErrors, descSinkDelivered, descSinkRetries, descSinkDead, descNATS} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it reads the components' own
// counters at scrape time.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	for _, s := range m.sources {
		name := s.src.Name()
		counter(descSourceEvents, float64(s.events.Load()), name)
		counter(descSourceErrors, s.parseErrors(), name)
		gauge(descSourceLag, float64(s.lagMillis.Load())/1000, name)
		if t := s.lastEvent.Load(); t != 0 {
			gauge(descSourceLast, float64(t)/1e9, name)
		}
	}
	if m.cps != nil {
		if t := m.cps.LastFlush(); !t.IsZero() {
			gauge(descCheckpointAge, time.Since(t).Seconds())
		}
	}
	if m.publisher != nil {
		st := m.publisher.Stats()
		counter(descPublished, float64(st.Published))
		counter(descDuplicates, float64(st.Duplicates))
		counter(descPubRetries, float64(st.Retries))
		counter(descPubErrors, float64(st.Errors))
	}
	if g := m.corr.Load(); g != nil {
		counter(descCorrEvents, float64(g.stats.Events))
		counter(descCorrLate, float64(g.stats.Late))
		for r, n := range g.stats.MatchesByRule {
			counter(descRuleMatches, float64(n), r)
		}
		for r, n := range g.groups {
			gauge(descRuleGroups, float64(n), r)
		}
		for k, n := range g.open {
			gauge(descOpen, float64(n), k[0], k[1])
		}
	}
	if m.ruleErrors != nil {
		counter(descRuleErrors, float64(m.ruleErrors()))
	}
	for _, d := range m.dispatch {
		st := d.d.Stats()
		counter(descSinkDelivered, float64(st.Delivered), d.name)
		counter(descSinkRetries, float64(st.Retried), d.name)
		counter(descSinkDead, float64(st.DeadLettered), d.name)
	}
	if m.bus != nil {
		up := 0.0
		if m.bus.NC.IsConnected() {
			up = 1
		}
		gauge(descNATS, up)
	}
}

// serveHTTP runs the endpoint until ctx is done. reload is called by POST
// /-/reload.
func (m *metrics) serveHTTP(ctx context.Context, cfg HTTPConfig, reload func() error, log *slog.Logger) (addr string, err error) {
	if cfg.Listen == "off" {
		return "", nil
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !m.ready.Load() || (m.bus != nil && !m.bus.NC.IsConnected()) {
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
