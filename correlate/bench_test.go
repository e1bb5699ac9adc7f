package correlate

import (
	"fmt"
	"maps"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

// quietTemplates are what most nodes of the scale benchmark send in turn:
// mostly events no rule matches, and single signals of five rules that do
// not complete their conditions (they keep a group each), in the shapes
// the decoders give.
var quietTemplates = []ingest.Event{
	{Source: "nomad.log", Kind: "client.gc", Level: "info", Msg: "garbage collection skipped because no terminal allocations",
		Fields: map[string]any{"reason": "number of allocations (52) is over the limit (50)"}},
	{Source: "nomad.log", Kind: "agent", Level: "debug", Msg: "request complete", Fields: map[string]any{"method": "GET", "path": "/v1/agent/health"}},
	{Source: "nomad.log", Kind: "client.alloc_runner.task_runner", Level: "info", Msg: "restarting task",
		Fields: map[string]any{"alloc_id": "64c68057-d391-9179-dc95-ef48e88f7d5d", "task": "app", "reason": "Restart within policy", "delay": "2.2s"}},
	{Source: "nomad.event", Kind: "Allocation.AllocationUpdated", Level: "info", Msg: "allocation is running",
		Fields: map[string]any{"client_status": "running", "prev_client_status": "pending", "job": "web"}},
	{Source: "nomad.log", Kind: "client.driver_mgr", Level: "warn", Msg: "failed to reattach to plugin, starting new instance",
		Fields: map[string]any{"driver": "raw_exec", "error": "Reattachment process not found"}},
	{Source: "winevt", Kind: "Service Control Manager/7036", Level: "info", Msg: "The Nomad service entered the running state.",
		Fields: map[string]any{"param1": "Nomad", "param2": "running", "strings": "Nomad | running"}},
	{Source: "nomad.event", Kind: "Allocation.AllocationUpdated", Level: "warn", Msg: "allocation failed",
		Fields: map[string]any{"client_status": "failed", "prev_client_status": "running", "job": "batch", "alloc_id": "a"}},
	{Source: "nomad.log", Kind: "client.alloc_runner.task_runner.task_hook.logmon", Level: "debug", Msg: "starting plugin",
		Fields: map[string]any{"path": "/usr/bin/nomad", "args": "logmon"}},
	{Source: "winevt", Kind: "Application Popup/26", Level: "warn", Msg: "Application popup: Not enough storage is available to process this command.",
		Fields: map[string]any{"strings": "Not enough storage is available to process this command."}},
	{Source: "nomad.log", Kind: "client", Level: "info", Msg: "node registration complete", Fields: map[string]any{}},
	{Source: "nomad.event", Kind: "Node.NodeStreamEvent", Level: "info", Msg: "node heartbeat", Fields: map[string]any{"status": "ready", "prev_status": "ready"}},
	{Source: "nomad.log", Kind: "client.alloc_runner.task_runner", Level: "info", Msg: "Task event",
		Fields: map[string]any{"alloc_id": "64c68057-d391-9179-dc95-ef48e88f7d5d", "task": "app", "type": "Started", "msg": ""}},
	{Source: "nomad.log", Kind: "client.rpc", Level: "debug", Msg: "sending RPC", Fields: map[string]any{"method": "Node.UpdateAlloc"}},
	{Source: "nomad.log", Kind: "agent", Level: "debug", Msg: "request complete", Fields: map[string]any{"method": "GET", "path": "/v1/node/self"}},
	{Source: "winevt", Kind: "Microsoft-Windows-Kernel-General/16", Level: "info", Msg: "The access history in hive was cleared.", Fields: map[string]any{}},
	{Source: "nomad.log", Kind: "client.alloc_runner", Level: "debug", Msg: "updating alloc status", Fields: map[string]any{"alloc_id": "x"}},
	{Source: "nomad.event", Kind: "Evaluation.EvaluationUpdated", Level: "info", Msg: "evaluation complete", Fields: map[string]any{"status": "complete", "job": "web"}},
	{Source: "nomad.log", Kind: "client.driver_mgr.raw_exec", Level: "debug", Msg: "plugin exited", Fields: map[string]any{}},
	{Source: "nomad.log", Kind: "client.gc", Level: "debug", Msg: "garbage collecting allocation", Fields: map[string]any{"reason": "forced collection"}},
	{Source: "nomad.log", Kind: "agent", Level: "debug", Msg: "request complete", Fields: map[string]any{"method": "GET", "path": "/v1/metrics"}},
}

// benchTemplates are what one node in a hundred sends: signals that fire
// most bundled rules (and some events no rule matches).
var benchTemplates = []ingest.Event{
	{Source: "nomad.log", Kind: "client.gc", Level: "info", Msg: "garbage collection skipped because no terminal allocations",
		Fields: map[string]any{"reason": "number of allocations (52) is over the limit (50)"}},
	{Source: "nomad.log", Kind: "client.alloc_runner.task_runner", Level: "info", Msg: "restarting task",
		Fields: map[string]any{"alloc_id": "64c68057-d391-9179-dc95-ef48e88f7d5d", "task": "app", "reason": "Restart within policy", "delay": "2.2s"}},
	{Source: "nomad.log", Kind: "client.alloc_runner.task_runner.task_hook.logmon", Level: "debug", Msg: "starting plugin",
		Fields: map[string]any{"path": "/usr/bin/nomad", "args": "logmon"}},
	{Source: "nomad.event", Kind: "Node.NodeStreamEvent", Level: "warn", Msg: "node is disconnected (was ready)",
		Fields: map[string]any{"status": "disconnected", "prev_status": "ready", "last_event": "Node heartbeat missed"}},
	{Source: "nomad.log", Kind: "client", Level: "info", Msg: "node registration complete", Fields: map[string]any{}},
	{Source: "winevt", Kind: "Srv/2020", Level: "error", Msg: "The server was unable to allocate from the system paged pool because the pool was empty.",
		Fields: map[string]any{"strings": "Paged", "channel": "System"}},
	{Source: "nomad.event", Kind: "Allocation.TaskEvent", Level: "info", Msg: "Task event",
		Fields: map[string]any{"alloc_id": "5d6f96a1-f8d8-5c1e-c8d3-3a074080ad34", "task": "srv", "type": "Restart Signaled", "msg": "healthcheck: check \"srv\" unhealthy"}},
	{Source: "nomad.event", Kind: "Node.NodeStreamEvent", Level: "info", Msg: "node is ready (was disconnected)",
		Fields: map[string]any{"status": "ready", "prev_status": "disconnected"}},
	{Source: "nomad.log", Kind: "client.driver_mgr", Level: "warn", Msg: "failed to reattach to plugin, starting new instance",
		Fields: map[string]any{"driver": "raw_exec", "error": "Reattachment process not found"}},
	{Source: "nomad.event", Kind: "Allocation.AllocationUpdated", Level: "warn", Msg: "allocation failed",
		Fields: map[string]any{"client_status": "failed", "prev_client_status": "running", "job": "job-7"}},
	{Source: "winevt", Kind: "Microsoft-Windows-Resource-Exhaustion-Detector/2004", Level: "warn", Msg: "Windows successfully diagnosed a low virtual memory condition.",
		Fields: map[string]any{"ProcessName1": "nomad.exe"}},
	{Source: "nomad.log", Kind: "agent", Level: "debug", Msg: "request complete", Fields: map[string]any{"method": "GET", "path": "/v1/agent/health"}},
}

// scaleFeed generates the benchmark's event stream: node i%n sends its
// next template every perNode of event time, nodes interleaved.
type scaleFeed struct {
	nodes   []string
	perNode time.Duration
	i       int
	id      []byte
}

func newScaleFeed(n int) *scaleFeed {
	// One event per node every 31s: a quiet node's template cycle takes a
	// little longer than the shortest windows (10m).
	f := &scaleFeed{perNode: 31 * time.Second}
	for i := 0; i < n; i++ {
		f.nodes = append(f.nodes, fmt.Sprintf("node-%05d", i))
	}
	return f
}

func (f *scaleFeed) next(ev *ingest.Event) {
	n := len(f.nodes)
	node := f.i % n
	round := f.i / n
	tmpl := &quietTemplates[(node+round)%len(quietTemplates)]
	firing := node%100 == 0
	if firing {
		tmpl = &benchTemplates[(node+round)%len(benchTemplates)]
	}
	*ev = *tmpl
	ev.Node = f.nodes[node]
	ev.Time = t0.Add(time.Duration(f.i) * f.perNode / time.Duration(n))
	if tmpl.Fields != nil {
		ev.Fields = maps.Clone(tmpl.Fields)
		if j, ok := ev.Fields["job"]; ok {
			ev.Fields["job"] = j.(string) + "-" + ev.Node // one job per node
			ev.Fields["alloc_id"] = ev.Node               // the same allocation failing again: no storm
			if firing {
				ev.Fields["alloc_id"] = ev.Node + "-" + strconv.Itoa(round) // new ones: a storm
			}
		}
	}
	f.id = strconv.AppendInt(append(f.id[:0], "bench:"...), int64(f.i), 10)
	ev.ID = string(f.id)
	f.i++
}

// runFeed pushes k events through c, advancing its clock every second of
// event time as replay does.
func runFeed(c *Correlator, f *scaleFeed, k int, next *time.Time) {
	emit := func(Incident) {}
	var ev ingest.Event
	for j := 0; j < k; j++ {
		f.next(&ev)
		if !ev.Time.Before(*next) {
			c.Advance(ev.Time, emit)
			*next = ev.Time.Add(time.Second)
		}
		c.Process(&ev, emit)
	}
}

func bundledRules(b *testing.B) *rules.Set {
	set, err := rules.LoadDir("../rules.d")
	if err != nil {
		b.Fatal(err)
	}
	return set
}

// BenchmarkScale drives 100, 1,000 and 10,000 nodes through all bundled
// rules and reports the time per event and the heap held per active group
// (HeapAlloc after a collection, correlator and retained events included,
// divided by the groups with state). Every node sends one event every 20s
// of event time (one in a hundred sends signals that fire most rules) and has
// gone through its template cycle twice before timing.
func BenchmarkScale(b *testing.B) {
	set := bundledRules(b)
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			feed := newScaleFeed(n)
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			c := New(set, Options{Logger: quietLog()})
			var next time.Time
			runFeed(c, feed, 2*len(quietTemplates)*n, &next)
			runtime.GC()
			runtime.ReadMemStats(&after)
			groups := 0
			for _, k := range c.ActiveGroups() {
				groups += k
			}
			perGroup := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(groups)
			b.ResetTimer()
			runFeed(c, feed, b.N, &next)
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
			b.ReportMetric(perGroup, "B/group")
			b.ReportMetric(float64(groups), "groups")
			runtime.KeepAlive(c)
		})
	}
}
