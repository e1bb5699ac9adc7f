package nomadevents

import (
	"strconv"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// KindRunningAllocations is the Kind of the events the decoder derives
// from its state (they are no frame of the stream): the number of
// allocations running on a Windows node, whenever it changes. Each Windows
// node's allocations share its non-interactive desktop heap, which runs
// out at about two dozen at the default size (seed 000). Fields:
//
//	running        int   allocations whose client status is running on the node
//	prev_running   int   the count before the change (absent when the
//	                     event reports a node just found to run Windows)
//	kernel         text  the node's kernel.name attribute ("windows")
//	alloc_id, job, namespace   the allocation whose change moved the count
//
// Only nodes whose kernel.name attribute is known to be windows get them:
// the decoder learns it from the node payloads of the stream's Node topic.
// The count follows the allocations the stream reports; the live Source
// seeds it from the agent's API when it starts and after an index reset or
// a gap (seed.go), so allocations that were running before and have not
// changed since are counted too. The event of a seeded count has the field
// seeded (true) and no alloc_id.
const KindRunningAllocations = "Node.RunningAllocations"

// countRunning adds d to the running count of a's node when a runs.
func (s *state) countRunning(a *allocState, d int) {
	if a == nil || a.Client != "running" || a.NodeID == "" {
		return
	}
	s.running[a.NodeID] += d
	if s.running[a.NodeID] <= 0 {
		delete(s.running, a.NodeID)
	}
}

// windowsKernel is the kernel.name of the nodes whose running allocations
// are counted.
const windowsKernel = "windows"

// windows reports whether the node is known to run Windows (the kernel
// d counts: tests against the real, Linux, agent count Linux nodes).
func (d *Decoder) windows(nodeID string) bool {
	n := d.nodes[nodeID]
	return n != nil && n.Kernel == d.kernel
}

// runningEvent is the event of a Windows node's running count; prev < 0
// leaves prev_running out. id is the event id of the change that moved it.
func (d *Decoder) runningEvent(id, nodeID string, prev int, t time.Time, cause fields) ingest.Event {
	name := d.nodeName(nodeID)
	n := d.running[nodeID]
	f := fields{"running": n}
	if prev >= 0 {
		f["prev_running"] = prev
	}
	f.set("kernel", d.nodes[nodeID].Kernel)
	for _, k := range []string{"alloc_id", "job", "namespace", "seeded"} {
		if v, ok := cause[k]; ok {
			f[k] = v
		}
	}
	who := name
	if who == "" {
		who = short(nodeID)
	}
	msg := "node " + who + " runs " + strconv.Itoa(n) + " allocations"
	if prev >= 0 {
		msg += " (was " + strconv.Itoa(prev) + ")"
	}
	return ingest.Event{
		ID: id + ":running:" + nodeID, Time: t, Node: name, NodeID: nodeID,
		Source: ingest.SourceNomadEvent, Kind: KindRunningAllocations, Level: ingest.LevelInfo, Msg: msg, Fields: f,
	}
}
