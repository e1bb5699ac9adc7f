package nomadevents

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Seeding the running counts.
//
// The stream tells changes only: an allocation that was running before
// klaxon's decoder state began (a first start, a state lost or from
// another cluster after an index reset, changes lost in a gap) and has not
// changed since would not be counted until it does. So when the Source
// starts, and after an index reset or a gap, it asks the agent what runs
// on the Windows nodes and brings the decoder's state in line:
//
//   - GET /v1/nodes?filter=Attributes["kernel.name"] == "windows" (one
//     request: the filter reads the whole node, the stubs do not carry the
//     attribute);
//   - GET /v1/allocations?task_states=false&filter=NodeID == … or … (one
//     request per seedChunk Windows nodes; every client status, so that
//     the stream's older copies of allocations that ended since do not
//     count them again).
//
// Each listed allocation replaces the state's copy (one that ended over
// terminalTTL ago and that the state does not hold is left out);
// allocations the state places on those nodes that the agent no longer
// lists (collected) are forgotten. The count stays derived from the set of allocations in the
// state (by ID), so stream events that follow move it from there and a
// re-sent or older copy of an allocation changes nothing: nothing is
// counted twice. Then, for each Windows node whose count differs from what
// the state said (or which the state did not know to run Windows and runs
// some), the decoder emits Node.RunningAllocations with seeded: true.
//
// The requests are bounded by seedTimeout. An agent that refuses them
// (401, 403: the token lacks node:read or the namespace's read-job; 404)
// is logged once and the stream goes on with the counts it has; other
// errors are retried every seedRetry while the stream runs.

var (
	// seedTimeout bounds the requests of one seeding.
	seedTimeout = 30 * time.Second
	// seedRetry is the time between two attempts after a failed one.
	seedRetry = 30 * time.Second
)

// seedChunk is how many node IDs the filter of one allocation list names.
const seedChunk = 40

// seedNode is a Windows node the agent lists.
type seedNode struct {
	ID, Name string
}

// seedAlloc is an allocation on one of them.
type seedAlloc struct {
	ID, NodeID, Job, Namespace, Client, Desired string
	Modify                                      int64 // ModifyIndex
	Time                                        int64 // ModifyTime, unix nanos
}

// seedRunning brings the state of the allocations on the Windows nodes in
// line with what the agent listed at index (nodes: every node whose
// kernel is d.kernel; allocs: every allocation on them) and emits the
// counts that changed (see above).
func (d *Decoder) seedRunning(index uint64, nodes []seedNode, allocs []seedAlloc, emit func(ingest.Event)) {
	listedNode := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		listedNode[n.ID] = true
	}
	// The nodes concerned: those listed, and those the state knows to run
	// Windows that the agent no longer lists (purged: nothing runs there).
	touched := map[string]bool{}
	for id := range listedNode {
		touched[id] = true
	}
	for id := range d.nodes {
		if d.windows(id) {
			touched[id] = true
		}
	}
	before := make(map[string]int, len(touched))
	known := make(map[string]bool, len(touched))
	for id := range touched {
		before[id], known[id] = d.running[id], d.windows(id)
	}
	for _, n := range nodes {
		st := d.nodes[n.ID]
		if st == nil {
			st = &nodeState{}
			d.nodes[n.ID] = st
		}
		st.Kernel = d.kernel
		if n.Name != "" {
			st.Name = n.Name
			d.id.Learn(n.ID, n.Name)
		}
	}
	listed := make(map[string]bool, len(allocs))
	old := d.now().Add(-terminalTTL).UnixNano()
	for _, a := range allocs {
		if a.ID == "" || !listedNode[a.NodeID] {
			continue
		}
		listed[a.ID] = true
		st := d.allocs[a.ID]
		if st == nil {
			if a.Client != "running" && a.Client != "pending" && a.Time < old {
				// Ended long ago: the stream has nothing of it to send again
				// (its buffer is far shorter), and the state need not hold
				// it until Nomad collects it.
				continue
			}
			st = &allocState{}
			d.allocs[a.ID] = st
		}
		// The agent's copy is newer than any the state holds: the state
		// holds what the stream told before this request was made (or, after
		// an index reset, what another cluster told).
		d.dropLost(a.ID, st)
		d.countRunning(st, -1)
		st.NodeID, st.Job, st.Namespace = a.NodeID, a.Job, a.Namespace
		st.Client, st.Desired = a.Client, a.Desired
		st.Modify, st.Time = a.Modify, a.Time
		d.setLost(a.ID, st)
		d.countRunning(st, 1)
		d.tick(a.Time)
	}
	for id, st := range d.allocs {
		if touched[st.NodeID] && !listed[id] {
			d.dropLost(id, st)
			d.countRunning(st, -1)
			delete(d.allocs, id)
		}
	}
	ids := make([]string, 0, len(touched))
	for id := range touched {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	c := change{epoch: d.epoch, index: index, typ: "Seed", key: "allocations"}
	at := d.now().UTC()
	for _, id := range ids {
		n := d.running[id]
		switch {
		case known[id] && n != before[id]:
			emit(d.runningEvent(c.id(), id, before[id], at, fields{"seeded": true}))
		case !known[id] && d.windows(id) && n > 0:
			emit(d.runningEvent(c.id(), id, -1, at, fields{"seeded": true}))
		}
	}
}

// seedState is the Source's bookkeeping of seeding.
type seedState struct {
	due     bool      // a seeding is wanted (start, index reset, gap, a failed attempt)
	next    time.Time // not before (after a failed attempt)
	refused bool      // the agent refused once: logged
}

// countsAllocations reports whether the stream follows allocations, which
// seeding is for.
func (s *Source) countsAllocations() bool {
	for _, t := range s.cfg.Topics {
		name, key, _ := strings.Cut(t, ":")
		if name == "*" || (name == "Allocation" && (key == "" || key == "*")) {
			return true
		}
	}
	return false
}

// seed asks the agent for the Windows nodes and their allocations and
// hands them to the decoder (see above), which emits the counts that
// changed. why says what called for it (logged).
func (s *Source) seed(ctx context.Context, why string, emit func(ingest.Event)) {
	s.seeds.due = false
	if !s.countsAllocations() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, seedTimeout)
	defer cancel()
	q := func() *api.QueryOptions {
		return (&api.QueryOptions{AuthToken: s.token(), Namespace: s.cfg.Namespace}).WithContext(ctx)
	}
	nq := q()
	nq.Filter = `Attributes["kernel.name"] == ` + strconv.Quote(s.dec.kernel)
	list, qm, err := s.client.Nodes().List(nq)
	if err != nil {
		s.seedFailed(ctx, why, "nodes", err)
		return
	}
	index := qm.LastIndex
	nodes := make([]seedNode, 0, len(list))
	for _, n := range list {
		nodes = append(nodes, seedNode{ID: n.ID, Name: n.Name})
	}
	var allocs []seedAlloc
	for i := 0; i < len(nodes); i += seedChunk {
		chunk := nodes[i:min(i+seedChunk, len(nodes))]
		terms := make([]string, len(chunk))
		for j, n := range chunk {
			terms[j] = "NodeID == " + strconv.Quote(n.ID)
		}
		aq := q()
		aq.Filter = strings.Join(terms, " or ")
		aq.Params = map[string]string{"task_states": "false"}
		stubs, qm, err := s.client.Allocations().List(aq)
		if err != nil {
			s.seedFailed(ctx, why, "allocations", err)
			return
		}
		index = max(index, qm.LastIndex)
		for _, a := range stubs {
			allocs = append(allocs, seedAlloc{
				ID: a.ID, NodeID: a.NodeID, Job: a.JobID, Namespace: a.Namespace,
				Client: a.ClientStatus, Desired: a.DesiredStatus,
				Modify: int64(a.ModifyIndex), Time: a.ModifyTime,
			})
		}
	}
	n := 0
	s.dec.seedRunning(index, nodes, allocs, func(ev ingest.Event) { n++; emit(ev) })
	s.seeded.Add(1)
	s.log.Info("nomadevents: running allocations of the Windows nodes read from the agent", "address", s.cfg.Address,
		"why", why, "index", index, "windows_nodes", len(nodes), "allocations", len(allocs), "counts_changed", n)
}

// seedFailed logs a failed seeding: a refusal once (the stream goes on
// with the counts it has), other errors at every attempt (retried).
func (s *Source) seedFailed(ctx context.Context, why, what string, err error) {
	var ure api.UnexpectedResponseError
	if errors.As(err, &ure) && ure.HasStatusCode() {
		switch code := ure.StatusCode(); code {
		case 401, 403, 404:
			if !s.seeds.refused {
				s.seeds.refused = true
				s.log.Warn("nomadevents: the agent refused the running allocations of the Windows nodes; their counts follow the stream's changes only (allocations running before and unchanged since are missed until they change)",
					"address", s.cfg.Address, "why", why, "request", what, "status", code,
					"needs", fmt.Sprintf("node:read and namespace read-job on %q", s.cfg.Namespace))
			}
			return
		}
	}
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
		return
	}
	s.seeds.due, s.seeds.next = true, time.Now().Add(seedRetry)
	s.log.Warn("nomadevents: reading the running allocations of the Windows nodes failed; retrying", "address", s.cfg.Address,
		"why", why, "request", what, "error", err, "in", seedRetry)
}
