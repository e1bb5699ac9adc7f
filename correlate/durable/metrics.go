package durable

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/rules"
)

// Gauges is what the correlator goroutines publish for scrapes and the
// web view (the correlator itself is not safe for concurrent use).
type Gauges struct {
	Stats  correlate.Stats
	Groups map[string]int
	Open   map[[2]string]int // (rule, severity) → open incidents
	// Rules is the rule set the correlator runs (nil: not known); every
	// rule gets its series, at 0 until it matches.
	Rules *rules.Set
	// Inhibited are the groups an inhibition holds back (the web view).
	Inhibited []correlate.Inhibited
}

// Metrics are the correlators' Prometheus metrics and what readiness asks
// of them: the time spent per event, the incident changes published, the
// checkpoints, and the counters of the rules and incidents.
type Metrics struct {
	evalDur prometheus.Histogram
	changes *prometheus.CounterVec
	// ckpt follows the checkpoints (failures, last success; readiness).
	ckpt checkpointMeter
	corr atomic.Pointer[Gauges]

	mu         sync.Mutex
	ruleErrors func() uint64
}

// incidentStatuses are the statuses an incident change can have; each gets
// its klaxon_incident_changes_total series from the start.
var incidentStatuses = []string{correlate.StatusFiring, correlate.StatusUpdated, correlate.StatusResolved}

// NewMetrics makes the correlators' metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{}
	m.evalDur = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "klaxon_correlator_event_duration_seconds",
		Help:    "Time to run one event through the rules and the correlator.",
		Buckets: []float64{1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 1e-2},
	})
	m.changes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "klaxon_incident_changes_total",
		Help: "Incident changes published, by status.",
	}, []string{"status"})
	for _, st := range incidentStatuses {
		m.changes.WithLabelValues(st)
	}
	reg.MustRegister(m.evalDur, m.changes, (*gaugeCollector)(m), &m.ckpt)
	return m
}

// Gauges returns the correlators' last published gauges (nil before the
// first publication).
func (m *Metrics) Gauges() *Gauges { return m.corr.Load() }

// Fresh reports whether every partition this process holds stored its
// state within correlator.checkpoint_max_age (true without correlators).
func (m *Metrics) Fresh(now time.Time) bool { return m.ckpt.fresh(now) }

// setRuleErrors counts the selector errors of set until the correlators
// publish the set they run.
func (m *Metrics) setRuleErrors(set *rules.Set) {
	if set == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ruleErrors = set.Errors
}

var (
	descCorrEvents   = prometheus.NewDesc("klaxon_correlator_events_total", "Events the correlator processed.", nil, nil)
	descCorrLate     = prometheus.NewDesc("klaxon_correlator_late_events_total", "Events older than their group's window when they arrived.", nil, nil)
	descRuleMatches  = prometheus.NewDesc("klaxon_rule_matches_total", "Events that matched a rule.", []string{"rule"}, nil)
	descRuleEvals    = prometheus.NewDesc("klaxon_rule_evaluations_total", "Selector evaluations of a rule that reached expr (the index turns most events away before).", []string{"rule"}, nil)
	descRuleEvalTime = prometheus.NewDesc("klaxon_rule_evaluation_seconds_total", "Time spent evaluating a rule's selectors.", []string{"rule"}, nil)
	descRuleGroups   = prometheus.NewDesc("klaxon_rule_active_groups", "Groups with window state, per rule.", []string{"rule"}, nil)
	descOpen         = prometheus.NewDesc("klaxon_incidents_open", "Incidents firing now.", []string{"rule", "severity"}, nil)
	descRuleErrors   = prometheus.NewDesc("klaxon_rule_selector_errors_total", "Selector evaluations that failed at run time.", nil, nil)
)

// gaugeCollector exposes the published gauges at scrape time.
type gaugeCollector Metrics

// Describe implements prometheus.Collector.
func (*gaugeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCorrEvents, descCorrLate, descRuleMatches, descRuleEvals, descRuleEvalTime, descRuleGroups, descOpen, descRuleErrors} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *gaugeCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	c.mu.Lock()
	ruleErrors := c.ruleErrors
	c.mu.Unlock()
	if g := c.corr.Load(); g != nil {
		counter(descCorrEvents, float64(g.Stats.Events))
		counter(descCorrLate, float64(g.Stats.Late))
		matches := maps.Clone(g.Stats.MatchesByRule)
		groups := maps.Clone(g.Groups)
		if matches == nil {
			matches = map[string]uint64{}
		}
		if groups == nil {
			groups = map[string]int{}
		}
		if g.Rules != nil {
			ruleErrors = g.Rules.Errors
			for id, e := range g.Rules.EvalStats() {
				counter(descRuleEvals, float64(e.Evaluations), id)
				counter(descRuleEvalTime, e.Time.Seconds(), id)
				matches[id] += 0
				groups[id] += 0
			}
		}
		for r, n := range matches {
			counter(descRuleMatches, float64(n), r)
		}
		for r, n := range groups {
			gauge(descRuleGroups, float64(n), r)
		}
		for k, n := range g.Open {
			gauge(descOpen, float64(n), k[0], k[1])
		}
	}
	if ruleErrors != nil {
		counter(descRuleErrors, float64(ruleErrors()))
	}
}
