package correlate

import (
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// clock is the progress of one source of events: the newest event time it
// delivered, and when (on the Advance clock) it last delivered anything.
type clock struct {
	Latest time.Time `json:"latest"`
	Seen   time.Time `json:"seen,omitzero"`
}

// clocks holds one clock per source of events: per node for the agent log
// and the Windows Event Log (each node ships its own), and one for the
// Nomad event stream (the servers send every node's changes in one
// stream). Incident events fed back are derived and have none.
type clocks map[string]map[string]*clock

// clockNode returns the node part of the clock key of ev.
func clockNode(ev *ingest.Event) string {
	if ev.Source == ingest.SourceNomadEvent {
		return ""
	}
	return ev.Node
}

// observe records ev on its source's clock; proc is the Advance clock.
func (cs clocks) observe(ev *ingest.Event, proc time.Time) {
	m := cs[ev.Source]
	if m == nil {
		m = map[string]*clock{}
		cs[ev.Source] = m
	}
	node := clockNode(ev)
	cl := m[node]
	if cl == nil {
		cl = &clock{}
		m[node] = cl
	}
	if ev.Time.After(cl.Latest) {
		cl.Latest = ev.Time
	}
	if proc.IsZero() {
		proc = ev.Time // before the first Advance, event time stands in
	}
	cl.Seen = proc
}

// watermark returns the watermark the clocks allow: the oldest newest
// event time among the sources active within idle of proc, minus lateness,
// and never after proc (when Advance was called). Without active sources
// it is proc. Sources idle for a day are forgotten.
func (cs clocks) watermark(proc time.Time, idle, lateness time.Duration) time.Time {
	var low time.Time
	any := false
	for src, m := range cs {
		for node, cl := range m {
			if !proc.IsZero() && proc.Sub(cl.Seen) > idle {
				if proc.Sub(cl.Seen) > 24*time.Hour {
					delete(m, node)
				}
				continue
			}
			if !any || cl.Latest.Before(low) {
				low = cl.Latest
			}
			any = true
		}
		if len(m) == 0 {
			delete(cs, src)
		}
	}
	if !any {
		return proc
	}
	w := low.Add(-lateness)
	if !proc.IsZero() && proc.Before(w) {
		w = proc
	}
	return w
}
