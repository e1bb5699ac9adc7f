package bus

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the bus's series: the NATS connection, and the events the
// publisher stored. Each shows once its part is set.
type Metrics struct {
	bus atomic.Pointer[Bus]
	pub atomic.Pointer[Publisher]
}

// NewMetrics makes the bus's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{}
	reg.MustRegister(m)
	return m
}

// SetBus gives the connection whose state is exposed.
func (m *Metrics) SetBus(b *Bus) { m.bus.Store(b) }

// SetPublisher gives the event publisher whose counters are exposed.
func (m *Metrics) SetPublisher(p *Publisher) { m.pub.Store(p) }

var (
	descPublished      = prometheus.NewDesc("klaxon_events_published_total", "Events JetStream stored.", nil, nil)
	descDuplicates     = prometheus.NewDesc("klaxon_events_duplicate_total", "Events JetStream dropped as re-sent duplicates.", nil, nil)
	descPubRetries     = prometheus.NewDesc("klaxon_publish_retries_total", "Event publishes sent again after a failure.", nil, nil)
	descPubErrors      = prometheus.NewDesc("klaxon_publish_errors_total", "Failed event publish attempts.", nil, nil)
	descNATS           = prometheus.NewDesc("klaxon_nats_connected", "1 when the NATS connection is up.", nil, nil)
	descNATSReconnects = prometheus.NewDesc("klaxon_nats_reconnects_total", "Times the NATS connection reconnected.", nil, nil)
)

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPublished, descDuplicates, descPubRetries, descPubErrors, descNATS, descNATSReconnects} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	if p := m.pub.Load(); p != nil {
		st := p.Stats()
		counter(descPublished, float64(st.Published))
		counter(descDuplicates, float64(st.Duplicates))
		counter(descPubRetries, float64(st.Retries))
		counter(descPubErrors, float64(st.Errors))
	}
	if b := m.bus.Load(); b != nil {
		connected := 0.0
		if b.NC.IsConnected() {
			connected = 1
		}
		ch <- prometheus.MustNewConstMetric(descNATS, prometheus.GaugeValue, connected)
		counter(descNATSReconnects, float64(b.NC.Stats().Reconnects))
	}
}

// Connected reports whether the connection is up (true before SetBus:
// there is none to wait for).
func (m *Metrics) Connected() bool {
	b := m.bus.Load()
	return b == nil || b.NC.IsConnected()
}
