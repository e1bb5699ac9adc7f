package nomadevents

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// Bounds of the diff state.
const (
	// terminalTTL is how long (in event time) terminal allocations,
	// evaluations and deployments are remembered.
	terminalTTL = time.Hour
	// maxAllocs, maxEvals and maxDeployments cap the state; beyond them the
	// oldest entries (by event time) are forgotten.
	maxAllocs      = 100_000
	maxEvals       = 100_000
	maxDeployments = 20_000
	// sweepEvery is how many updates pass between two sweeps.
	sweepEvery = 4096
	// recentTaskEvents is how many task event fingerprints are kept per
	// allocation task (Nomad keeps the last 10 events of a task).
	recentTaskEvents = 24
)

// nodeState is what the decoder remembers of a node (never forgotten).
type nodeState struct {
	Name   string `json:"name,omitempty"`
	Status string `json:"status,omitempty"`
	// Reconnecting: disconnected and not ready since.
	Reconnecting bool `json:"reconnecting,omitempty"`
	// Kernel is the node's kernel.name attribute ("windows", "linux").
	Kernel string `json:"kernel,omitempty"`
}

// allocState is what the decoder remembers of an allocation.
type allocState struct {
	NodeID    string                `json:"node_id,omitempty"`
	Job       string                `json:"job,omitempty"`
	Namespace string                `json:"namespace,omitempty"`
	Client    string                `json:"client,omitempty"`
	Desired   string                `json:"desired,omitempty"`
	Modify    int64                 `json:"modify,omitempty"` // ModifyIndex
	Time      int64                 `json:"time,omitempty"`   // ModifyTime, unix nanos
	Tasks     map[string]*taskState `json:"tasks,omitempty"`
}

func (a *allocState) terminal() bool {
	switch a.Client {
	case "complete", "failed", "lost":
		return a.Desired == "stop" || a.Desired == "evict"
	}
	return false
}

// taskState tracks the task events of one task of an allocation that were
// emitted: their count (the position of the next one) and the fingerprints
// of the latest ones. Nomad keeps only the last 10 events of a task, so a
// list is diffed by fingerprint (time and type), not by position alone.
type taskState struct {
	N      int      `json:"n"`
	Recent []fprint `json:"recent,omitempty"`
	// Floor is the newest time of the fingerprints dropped from Recent:
	// events at or before it were emitted (or are too old to matter).
	Floor int64 `json:"floor,omitempty"`
}

type fprint struct {
	T    int64  `json:"t"`
	Type string `json:"type"`
}

func (t *taskState) has(f fprint) bool {
	if f.T <= t.Floor && t.Floor != 0 {
		return true
	}
	for _, r := range t.Recent {
		if r == f {
			return true
		}
	}
	return false
}

func (t *taskState) add(f fprint) {
	t.N++
	t.Recent = append(t.Recent, f)
	if len(t.Recent) > recentTaskEvents {
		old := t.Recent[0]
		if old.T > t.Floor {
			t.Floor = old.T
		}
		t.Recent = append(t.Recent[:0], t.Recent[1:]...)
	}
}

// statusState is what the decoder remembers of an evaluation or deployment.
type statusState struct {
	Status string `json:"status,omitempty"`
	Time   int64  `json:"time,omitempty"`
}

// state is the diff state of a Decoder.
type state struct {
	nodes   map[string]*nodeState
	allocs  map[string]*allocState
	evals   map[string]*statusState
	deploys map[string]*statusState
	// lost: per namespace+job, the allocations last seen unknown or lost,
	// with their node ID (derived from allocs).
	lost map[string]map[string]string
	// running: per node ID, the allocations last seen running there
	// (derived from allocs; see running.go).
	running map[string]int
	// clock is the newest event time seen (unix nanos).
	clock int64

	seenSet   map[uint64]map[string]struct{}
	seenOrder []uint64
	// epoch counts the server's index resets seen: event IDs carry it so
	// that an index used again after a reset is not taken for a re-send.
	epoch uint64
}

func (s *state) init() {
	s.nodes = map[string]*nodeState{}
	s.allocs = map[string]*allocState{}
	s.evals = map[string]*statusState{}
	s.deploys = map[string]*statusState{}
	s.lost = map[string]map[string]string{}
	s.running = map[string]int{}
	s.seenSet = map[uint64]map[string]struct{}{}
	s.seenOrder = nil
	s.clock = 0
}

func jobKey(ns, job string) string { return ns + "\x00" + job }

// setLost keeps the lost index in step with an allocation's state.
func (s *state) setLost(id string, a *allocState) {
	k := jobKey(a.Namespace, a.Job)
	if a.Client == "unknown" || a.Client == "lost" {
		m := s.lost[k]
		if m == nil {
			m = map[string]string{}
			s.lost[k] = m
		}
		m[id] = a.NodeID
		return
	}
	s.dropLost(id, a)
}

func (s *state) dropLost(id string, a *allocState) {
	k := jobKey(a.Namespace, a.Job)
	if m := s.lost[k]; m != nil {
		delete(m, id)
		if len(m) == 0 {
			delete(s.lost, k)
		}
	}
}

func (s *state) tick(t int64) {
	if t > s.clock {
		s.clock = t
	}
}

// sweep forgets terminal entries older than terminalTTL in event time and
// enforces the caps.
func (s *state) sweep() {
	horizon := s.clock - int64(terminalTTL)
	for id, a := range s.allocs {
		if a.terminal() && a.Time < horizon {
			s.dropLost(id, a)
			s.countRunning(a, -1)
			delete(s.allocs, id)
		}
	}
	if len(s.allocs) > maxAllocs {
		for _, id := range oldest(s.allocs, len(s.allocs)-maxAllocs, func(a *allocState) int64 { return a.Time }) {
			s.dropLost(id, s.allocs[id])
			s.countRunning(s.allocs[id], -1)
			delete(s.allocs, id)
		}
	}
	for _, m := range []struct {
		m   map[string]*statusState
		max int
		end func(string) bool
	}{
		{s.evals, maxEvals, func(st string) bool { return st == "complete" || st == "failed" || st == "canceled" }},
		{s.deploys, maxDeployments, func(st string) bool {
			return st == "successful" || st == "failed" || st == "cancelled" || st == "canceled"
		}},
	} {
		for id, e := range m.m {
			if m.end(e.Status) && e.Time < horizon {
				delete(m.m, id)
			}
		}
		if len(m.m) > m.max {
			for _, id := range oldest(m.m, len(m.m)-m.max, func(e *statusState) int64 { return e.Time }) {
				delete(m.m, id)
			}
		}
	}
}

// oldest returns the n keys of m with the smallest times.
func oldest[V any](m map[string]V, n int, t func(V) int64) []string {
	type kt struct {
		k string
		t int64
	}
	all := make([]kt, 0, len(m))
	for k, v := range m {
		all = append(all, kt{k, t(v)})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].t < all[j].t })
	out := make([]string, 0, n)
	for _, x := range all[:n] {
		out = append(out, x.k)
	}
	return out
}

// stateVersion is the version of the State() encoding.
const stateVersion = 1

type stateJSON struct {
	V       int                     `json:"v"`
	Index   uint64                  `json:"index,omitempty"`
	Clock   int64                   `json:"clock,omitempty"`
	Nodes   map[string]*nodeState   `json:"nodes,omitempty"`
	Allocs  map[string]*allocState  `json:"allocs,omitempty"`
	Evals   map[string]*statusState `json:"evals,omitempty"`
	Deploys map[string]*statusState `json:"deployments,omitempty"`
	Seen    map[uint64][]string     `json:"seen,omitempty"`
	Epoch   uint64                  `json:"epoch,omitempty"`
}

// State returns the diff state (node, allocation, evaluation and deployment
// statuses, emitted task events, the changes of the latest indexes) as
// JSON, for a checkpoint. Restore reads it back.
func (d *Decoder) State() ([]byte, error) {
	sj := stateJSON{
		V:       stateVersion,
		Index:   d.Index(),
		Clock:   d.clock,
		Nodes:   d.nodes,
		Allocs:  d.allocs,
		Evals:   d.evals,
		Deploys: d.deploys,
		Seen:    make(map[uint64][]string, len(d.seenSet)),
		Epoch:   d.epoch,
	}
	for idx, set := range d.seenSet {
		keys := make([]string, 0, len(set))
		for k := range set {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		sj.Seen[idx] = keys
	}
	return json.Marshal(sj)
}

// Restore replaces the decoder's state with one returned by State. The
// node names in it are taught to the Identity.
func (d *Decoder) Restore(b []byte) error {
	var sj stateJSON
	if err := json.Unmarshal(b, &sj); err != nil {
		return fmt.Errorf("nomadevents: restore state: %w", err)
	}
	if sj.V != stateVersion {
		return fmt.Errorf("nomadevents: restore state: version %d, want %d", sj.V, stateVersion)
	}
	d.state.init()
	d.clock = sj.Clock
	d.epoch = sj.Epoch
	for id, n := range sj.Nodes {
		if n == nil {
			continue
		}
		d.nodes[id] = n
		if n.Name != "" {
			if _, known := d.id.NameOf(id); !known {
				d.id.Learn(id, n.Name)
			}
		}
	}
	for id, a := range sj.Allocs {
		if a == nil {
			continue
		}
		for t, ts := range a.Tasks {
			if ts == nil {
				delete(a.Tasks, t)
			}
		}
		d.allocs[id] = a
		d.setLost(id, a)
		d.countRunning(a, 1)
	}
	for id, e := range sj.Evals {
		if e != nil {
			d.evals[id] = e
		}
	}
	for id, e := range sj.Deploys {
		if e != nil {
			d.deploys[id] = e
		}
	}
	idxs := make([]uint64, 0, len(sj.Seen))
	for idx := range sj.Seen {
		idxs = append(idxs, idx)
	}
	sort.Slice(idxs, func(i, j int) bool { return idxs[i] < idxs[j] })
	if len(idxs) > seenIndexes {
		idxs = idxs[len(idxs)-seenIndexes:]
	}
	for _, idx := range idxs {
		set := make(map[string]struct{}, len(sj.Seen[idx]))
		for _, k := range sj.Seen[idx] {
			set[k] = struct{}{}
		}
		d.seenSet[idx] = set
		d.seenOrder = append(d.seenOrder, idx)
	}
	d.index.Store(sj.Index)
	return nil
}
