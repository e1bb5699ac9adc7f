package app

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/cmd/internal/httpapi"
	"github.com/klaxon-dev/klaxon/correlate/durable"
	"github.com/klaxon-dev/klaxon/ingest/meter"
	"github.com/klaxon-dev/klaxon/sinks"
)

// metrics is klaxon's Prometheus registry with every component's metrics
// on it; each component registers its own.
type metrics struct {
	reg   *prometheus.Registry
	corr  *durable.Metrics
	src   *meter.Metrics
	bus   *bus.Metrics
	sinks *sinks.Metrics
	// ready is what /readyz answers: every role runs, NATS is connected,
	// and every partition this process correlates stored its state
	// recently.
	ready *httpapi.Readiness
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &metrics{reg: reg, corr: durable.NewMetrics(reg), src: meter.NewMetrics(reg, time.Now), bus: bus.NewMetrics(reg), sinks: sinks.NewMetrics(reg)}
	m.ready = httpapi.NewReadiness(reg, m.bus.Connected, func() bool { return m.corr.Fresh(time.Now()) })
	return m
}
