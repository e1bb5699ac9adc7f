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
	idx    int       // index in the heap of active clocks, -1 when idle
	// src and node are the clock's keys in clocks.m (its checkpoint item).
	src, node string
}

// clocks holds one clock per source of events: per node for the agent log
// and the Windows Event Log (each node ships its own), and one for the
// Nomad event stream (the servers send every node's changes in one
// stream). Incident events fed back are derived and have none.
//
// The active clocks are kept in a min-heap by Latest, so that the
// watermark costs O(log sources) per event rather than a scan of every
// source per Advance. A clock leaves the heap when it reaches the top
// while idle, and comes back with its next event.
type clocks struct {
	m    map[string]map[string]*clock
	heap []*clock
	// dirty holds the clocks changed since the last checkpoint.
	dirty map[*clock]struct{}
}

func newClocks() clocks { return clocks{m: map[string]map[string]*clock{}} }

// clockNode returns the node part of the clock key of ev.
func clockNode(ev *ingest.Event) string {
	if ev.Source == ingest.SourceNomadEvent {
		return ""
	}
	return ev.Node
}

// observe records ev on its source's clock; proc is the Advance clock.
func (cs *clocks) observe(ev *ingest.Event, proc time.Time) {
	m := cs.m[ev.Source]
	if m == nil {
		m = map[string]*clock{}
		cs.m[ev.Source] = m
	}
	node := clockNode(ev)
	cl := m[node]
	if cl == nil {
		cl = &clock{idx: -1, src: ev.Source, node: node}
		m[node] = cl
	}
	cs.touch(cl)
	if proc.IsZero() {
		proc = ev.Time // before the first Advance, event time stands in
	}
	cl.Seen = proc
	if ev.Time.After(cl.Latest) {
		cl.Latest = ev.Time
		if cl.idx >= 0 {
			cs.down(cl.idx)
		}
	}
	if cl.idx < 0 {
		cs.push(cl)
	}
}

// seenAt counts every clock as seen at proc (see Correlator.Resume). The
// clocks are not marked changed: a checkpoint's Seen is stamped again by
// the Resume after its restore.
func (cs *clocks) seenAt(proc time.Time) {
	for _, cl := range cs.heap {
		if cl.Seen.Before(proc) {
			cl.Seen = proc
		}
	}
}

// watermark returns the watermark the clocks allow: the oldest newest
// event time among the sources active within idle of proc, minus lateness,
// and never after proc (when Advance was called). Without active sources
// it is proc: time goes on while every source is quiet. Before any source
// delivered anything it is zero: a correlator that has seen no event has
// no time of its own yet, and moving to the wall clock would make every
// event of a backlog (sidecars reading logs from their beginning, a
// recording played later) late.
func (cs *clocks) watermark(proc time.Time, idle, lateness time.Duration) time.Time {
	for len(cs.heap) > 0 && !proc.IsZero() && proc.Sub(cs.heap[0].Seen) > idle {
		cs.pop()
	}
	if len(cs.heap) == 0 {
		if len(cs.m) == 0 {
			return time.Time{}
		}
		return proc
	}
	w := cs.heap[0].Latest.Add(-lateness)
	if !proc.IsZero() && proc.Before(w) {
		w = proc
	}
	return w
}

// touch records that cl changed.
func (cs *clocks) touch(cl *clock) {
	if cs.dirty == nil {
		cs.dirty = map[*clock]struct{}{}
	}
	cs.dirty[cl] = struct{}{}
}

// set adds a clock read from a snapshot or checkpoint (restore builds the
// heap once all are in).
func (cs *clocks) set(src, node string, cl *clock) {
	if cs.m[src] == nil {
		cs.m[src] = map[string]*clock{}
	}
	cl.src, cl.node = src, node
	cs.m[src][node] = cl
}

// restore rebuilds the heap from the map (after a snapshot was read).
func (cs *clocks) restore() {
	cs.heap = cs.heap[:0]
	for _, m := range cs.m {
		for _, cl := range m {
			cl.idx = -1
			cs.push(cl)
		}
	}
}

func (cs *clocks) less(i, j int) bool { return cs.heap[i].Latest.Before(cs.heap[j].Latest) }

func (cs *clocks) swap(i, j int) {
	h := cs.heap
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}

func (cs *clocks) push(cl *clock) {
	cl.idx = len(cs.heap)
	cs.heap = append(cs.heap, cl)
	siftUp(cs, cl.idx)
}

func (cs *clocks) down(i int) { siftDown(cs, i, len(cs.heap)) }

func (cs *clocks) pop() {
	n := len(cs.heap) - 1
	cs.swap(0, n)
	cs.heap[n].idx = -1
	cs.heap[n] = nil
	cs.heap = cs.heap[:n]
	if n > 0 {
		cs.down(0)
	}
}
