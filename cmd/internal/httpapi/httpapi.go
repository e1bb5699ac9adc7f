// Package httpapi is klaxon's own HTTP endpoint: /metrics, /healthz,
// /readyz, POST /-/reload, the silences API (/api/silences), the
// dead-letter API (/api/dlq) and whatever else is mounted on it (the web
// view).
package httpapi

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/sinks/silence"
)

// Config is the endpoint's address and token (the http block of the
// configuration file).
type Config struct {
	// Listen is host:port; default 127.0.0.1:9464; "off" disables it.
	Listen string `yaml:"listen"`
	// Token is the bearer token required by endpoints that change
	// anything; required when Listen is not a loopback address.
	Token ingest.Secret `yaml:"token"`
}

// Options are what the endpoint serves.
type Options struct {
	// Gatherer is served on /metrics.
	Gatherer prometheus.Gatherer
	// Ready answers /readyz.
	Ready func() bool
	// Reload is called by POST /-/reload.
	Reload func() error
	// Mount, when set, adds more routes (the web view).
	Mount func(*http.ServeMux)
	// Silences, when set, is served on /api/silences; with JS set too, the
	// dead letters of JS are served on /api/dlq, replayed to the sinks
	// SinkNames names.
	Silences  *silence.Store
	JS        jetstream.JetStream
	SinkNames func() []string
	// Now is the clock of the silences' states.
	Now func() time.Time
	// Log receives the endpoint's diagnostics.
	Log *slog.Logger
}

// Serve runs the endpoint until ctx is done and returns the address it
// listens on ("" when cfg.Listen is "off").
func Serve(ctx context.Context, cfg Config, o Options) (addr string, err error) {
	if cfg.Listen == "off" {
		return "", nil
	}
	log := o.Log
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !o.Ready() {
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
		if err := o.Reload(); err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		fmt.Fprintln(w, "reloaded")
	})
	if o.Mount != nil {
		o.Mount(mux)
	}
	if o.Silences != nil {
		registerSilences(mux, o.Silences, cfg.Token, o.Now, log)
		if o.JS != nil {
			registerDLQ(mux, o.JS, cfg.Token, o.SinkNames, log)
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

// Readiness is what /readyz answers and klaxon_ready shows: set once every
// role runs, and every check passes (NATS connected, the correlator state
// stored recently).
type Readiness struct {
	ready  atomic.Bool
	checks []func() bool
}

var descReady = prometheus.NewDesc("klaxon_ready", "1 when every role runs, NATS is connected and the correlator state was stored within correlator.checkpoint_max_age (what /readyz answers).", nil, nil)

// NewReadiness makes the readiness of checks and registers klaxon_ready
// with reg.
func NewReadiness(reg prometheus.Registerer, checks ...func() bool) *Readiness {
	r := &Readiness{checks: checks}
	reg.MustRegister(r)
	return r
}

// Set records whether every role runs.
func (r *Readiness) Set(ready bool) { r.ready.Store(ready) }

// Ready reports whether every role runs and every check passes.
func (r *Readiness) Ready() bool {
	if !r.ready.Load() {
		return false
	}
	for _, c := range r.checks {
		if !c() {
			return false
		}
	}
	return true
}

// Describe implements prometheus.Collector.
func (r *Readiness) Describe(ch chan<- *prometheus.Desc) { ch <- descReady }

// Collect implements prometheus.Collector.
func (r *Readiness) Collect(ch chan<- prometheus.Metric) {
	v := 0.0
	if r.Ready() {
		v = 1
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, v)
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

// IsLoopbackListen reports whether a listen address binds only to loopback.
func IsLoopbackListen(listen string) bool {
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
