package correlate

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

const gaugeRules = `
rules:
  - id: heap.pressure
    title: "pressure on {{ .node }}"
    summary: >-
      {{ $heap := default .params.default_heap_kb (index .latest "heap" "fields.heap_kb") }}{{ index .latest "load" "fields.running" }} running, heap {{ $heap }} KB
    runbook: r
    actions: [nomad.node.eligibility]
    match:
      load: source == "nomad.event" && kind == "Node.RunningAllocations"
      heap: source == "node.fact" && kind == "windows.desktop_heap"
    correlate:
      params: {ratio: 0.8, allocs_at_default: 24, default_heap_kb: 768}
      when: >-
        (latest("load", "fields.running") ?? 0) >= params.ratio * params.allocs_at_default
          * (latest("heap", "fields.heap_kb") ?? params.default_heap_kb) / params.default_heap_kb
      window: 5m
    resolve:
      after: 10m
`

func gaugeSet(t *testing.T, src string) *rules.Set {
	t.Helper()
	rs, err := rules.ParseFile("gauge.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return rules.NewSet(rs...)
}

func loadEv(i int, at time.Duration, node string, running int) *ingest.Event {
	return &ingest.Event{ID: fmt.Sprint("load", i), Time: t0.Add(at), Node: node, Source: ingest.SourceNomadEvent,
		Kind: "Node.RunningAllocations", Msg: fmt.Sprint(node, " runs ", running), Fields: map[string]any{"running": running, "kernel": "windows"}}
}

func heapEv(i int, at time.Duration, node string, kb float64) *ingest.Event {
	return &ingest.Event{ID: fmt.Sprint("heap", i), Time: t0.Add(at), Node: node, Source: ingest.SourceNodeFact,
		Kind: "windows.desktop_heap", Msg: "heap", Fields: map[string]any{"heap_kb": kb}}
}

// TestLatestGauge: latest() reads the newest value of a gauge however old
// (the heap fact comes once per boot, the count when it changes); the
// incident fires at 80 % of the capacity the heap gives, stays open while
// nothing changes past the window, resolves when the heap is raised, and
// the state survives a snapshot.
func TestLatestGauge(t *testing.T) {
	set := gaugeSet(t, gaugeRules)
	c := New(set, Options{Logger: quietLog()})
	var got []Incident
	emit := func(in Incident) { got = append(got, in) }
	c.Process(heapEv(0, 0, "w1", 768), emit)
	for i, n := range []int{17, 18, 19} {
		c.Process(loadEv(i, time.Duration(i+1)*m, "w1", n), emit)
	}
	if len(got) != 0 {
		t.Fatalf("fired below 80 %%: %v", got)
	}
	c.Process(loadEv(3, 4*m, "w1", 20), emit)
	if len(got) != 1 || got[0].Status != StatusFiring || got[0].Summary != "20 running, heap 768 KB" {
		t.Fatalf("at 20 of 24: %+v", got)
	}
	if len(got[0].Actions) != 1 || got[0].Actions[0] != "nomad.node.eligibility" {
		t.Errorf("actions %v", got[0].Actions)
	}
	// Hours without a change: the window is empty, the gauges are not.
	c.Settle(t0.Add(3*time.Hour), emit)
	if len(got) != 1 {
		t.Fatalf("changed while nothing happened: %+v", got[1:])
	}
	// Across a snapshot.
	b, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	c2 := New(set, Options{Logger: quietLog()})
	if err := c2.Restore(b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"carry"`) {
		t.Errorf("no carried values in the snapshot: %s", b)
	}
	// One more allocation: still firing, the summary follows.
	c2.Process(loadEv(4, 3*time.Hour+m, "w1", 21), emit)
	c2.Flush(emit)
	if last := got[len(got)-1]; last.Status != StatusUpdated || last.Summary != "21 running, heap 768 KB" {
		t.Fatalf("update: %+v", last)
	}
	// The fix: the node rebooted with 4096 KB; 102 fit at 80 %.
	c2.Process(heapEv(1, 3*time.Hour+20*m, "w1", 4096), emit)
	c2.Settle(t0.Add(3*time.Hour+30*m), emit)
	last := got[len(got)-1]
	if last.Status != StatusResolved || last.Summary != "21 running, heap 4096 KB" {
		t.Fatalf("after the fix: %+v", last)
	}
	// Another Windows node without a fact: the default applies.
	c2.Process(loadEv(5, 4*time.Hour, "w2", 20), emit)
	if last := got[len(got)-1]; last.Node != "w2" || last.Status != StatusFiring || last.Summary != "20 running, heap 768 KB" {
		t.Fatalf("no fact: %+v", last)
	}
	if n := c2.ActiveGroups()["heap.pressure"]; n != 2 {
		t.Errorf("%d groups, want one per node", n)
	}
}

// TestRateOverWindow: rate and predict read the samples of the window only.
func TestRateOverWindow(t *testing.T) {
	set := gaugeSet(t, `
rules:
  - id: leak
    runbook: r
    summary: '{{ index .latest "pool" "fields.bytes" }}'
    match:
      pool: source == "node.fact" && kind == "pool"
    correlate:
      when: (predict("pool", "fields.bytes", "1h") ?? 0) > 1000000
      window: 30m
    resolve:
      after: 10m
`)
	c := New(set, Options{Logger: quietLog()})
	var got []string
	emit := func(in Incident) { got = append(got, in.Status+" "+in.Summary) }
	sample := func(i int, at time.Duration, v float64) {
		c.Process(&ingest.Event{ID: fmt.Sprint("s", i), Time: t0.Add(at), Node: "w", Source: ingest.SourceNodeFact, Kind: "pool",
			Fields: map[string]any{"bytes": v}}, emit)
	}
	// Flat at 900 kB for an hour, then 100 B/s: an hour ahead is 1.26 MB.
	for i := 0; i < 7; i++ {
		sample(i, time.Duration(i)*10*m, 900000)
	}
	if len(got) != 0 {
		t.Fatalf("fired on a flat series: %v", got)
	}
	for i := 1; i <= 3; i++ {
		sample(10+i, time.Hour+time.Duration(i)*5*m, 900000+float64(i)*300*100)
	}
	// At 1h10m the window's line (900, 900, 930, 960 kB over 20 minutes)
	// reaches 1 MB within the hour.
	if len(got) == 0 || got[0] != "firing 960000" {
		t.Fatalf("growth: %v", got)
	}
	// It levels off; the growth leaves the window and the incident resolves.
	for i := 1; i <= 8; i++ {
		sample(20+i, time.Hour+15*m+time.Duration(i)*5*m, 990000)
	}
	c.Settle(t0.Add(3*time.Hour), emit)
	if got[len(got)-1] != "resolved 990000" {
		t.Fatalf("levelled: %v", got)
	}
}
