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
	"github.com/klaxon-dev/klaxon/ingest/meter"
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

type namedDispatcher struct {
	name string
	d    *sinks.Dispatcher
}

// metrics holds klaxon's Prometheus registry.
type metrics struct {
	reg *prometheus.Registry
	// corr are the correlators' metrics (readiness, the web view).
	corr *durable.Metrics

	// src are the sources' metrics.
	src *meter.Metrics

	mu        sync.Mutex
	dispatch  []namedDispatcher
	publisher *bus.Publisher
	bus       *bus.Bus
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
	m.src = meter.NewMetrics(m.reg, time.Now)
	m.reg.MustRegister(m)
	return m
}

var (
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
	for _, d := range []*prometheus.Desc{descPublished, descDuplicates, descPubRetries, descPubErrors,
		descSinkDelivered, descSinkFailures, descSinkRetries, descSinkDead, descSinkSilenced, descSinkFetchErrors, descSinkDLQ, descNATS, descNATSReconnects, descReady} {
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
