package rules

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// benchRules are 10 rules of 3 selectors in the style of the bundled rules.
func benchRules() string {
	var b strings.Builder
	b.WriteString("rules:\n")
	sels := []string{
		`source == "nomad.log" && lower(msg) contains "reattach" && lower(fields.error) contains "reattachment process not found"`,
		`msg contains "Insufficient system resources exist" || fields.error contains "Insufficient system resources exist"`,
		`source == "winevt" && kind in ["Srv/2019", "Srv/2020"]`,
		`source == "nomad.log" && kind == "client.alloc_runner.task_runner" && msg == "Task event" && fields.type == "Restarting %d"`,
		`source == "nomad.log" && kind startsWith "client.gc" && msg contains "garbage collecting %d"`,
		`source == "nomad.log" && kind == "watch.checks" && msg contains "check became unhealthy %d"`,
		`source == "nomad.event" && kind == "Node.NodeEvent" && fields.status == "down"`,
		`source == "nomad.log" && lower(msg) contains "heartbeat %d" && level == "error"`,
		`source == "nomad.log" && msg startsWith "failed to reattach %d"`,
		`source == "winevt" && kind == "Application Error/1000" && msg contains "nomad.exe"`,
	}
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&b, "  - id: bench.r%d\n    match:\n", i)
		for j := 0; j < 3; j++ {
			expr := sels[(i+j*3)%len(sels)]
			if strings.Contains(expr, "%d") {
				expr = fmt.Sprintf(expr, i)
			}
			fmt.Fprintf(&b, "      s%d: '%s'\n", j, expr)
		}
		b.WriteString("    correlate: {window: 15m}\n")
	}
	return b.String()
}

func benchEvents() []*ingest.Event {
	t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var evs []*ingest.Event
	for i, typ := range []string{"Received", "Task Setup", "Started", "Terminated", "Restarting"} {
		evs = append(evs, &ingest.Event{
			ID: fmt.Sprint(i), Time: t, Node: "vm", Source: "nomad.log",
			Kind: "client.alloc_runner.task_runner", Level: "info", Msg: "Task event",
			Fields: map[string]any{
				"alloc_id": "0b2c5d1e-6c39-33a5-0b5f-1c3c1c7c8f7a", "task": "app", "type": typ,
				"msg": "Task received by client", "failed": "false",
			},
		})
	}
	evs = append(evs, &ingest.Event{
		ID: "gc", Time: t, Node: "vm", Source: "nomad.log", Kind: "client.gc", Level: "info",
		Msg: "marking allocation for GC", Fields: map[string]any{"alloc_id": "0b2c5d1e-6c39-33a5-0b5f-1c3c1c7c8f7a"},
	})
	return evs
}

// BenchmarkMatch measures events that match nothing (the common case).
func BenchmarkMatch(b *testing.B) {
	rs, err := ParseFile("bench.yaml", []byte(benchRules()))
	if err != nil {
		b.Fatal(err)
	}
	s := NewSet(rs...)
	evs := benchEvents()
	n := 0
	fn := func(*Rule, uint64) { n++ }
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Match(evs[i%len(evs)], fn)
	}
	if n != 0 {
		b.Fatalf("%d matches", n)
	}
}

// BenchmarkMatchHit measures an event that reaches expr for one selector.
func BenchmarkMatchHit(b *testing.B) {
	rs, err := ParseFile("bench.yaml", []byte(benchRules()))
	if err != nil {
		b.Fatal(err)
	}
	s := NewSet(rs...)
	ev := benchEvents()[0]
	ev.Fields["type"] = "Restarting 0"
	n := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Match(ev, func(*Rule, uint64) { n++ })
	}
	if n == 0 {
		b.Fatal("no match")
	}
}

// BenchmarkSelectorsNoIndex is the baseline: every selector through expr.
func BenchmarkSelectorsNoIndex(b *testing.B) {
	rs, err := ParseFile("bench.yaml", []byte(benchRules()))
	if err != nil {
		b.Fatal(err)
	}
	evs := benchEvents()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ev := evs[i%len(evs)]
		for _, r := range rs {
			for _, sel := range r.Selectors {
				sel.Eval(ev)
			}
		}
	}
}

func BenchmarkMayMatchRaw(b *testing.B) {
	rs, err := ParseFile("bench.yaml", []byte(benchRules()))
	if err != nil {
		b.Fatal(err)
	}
	s := NewSet(rs...)
	line := []byte(`2026-11-22T01:58:12.345Z [INFO]  client.alloc_runner.task_runner: Task event: alloc_id=0b2c5d1e-6c39-33a5-0b5f-1c3c1c7c8f7a task=app type=Received msg="Task received by client" failed=false`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.MayMatchRawSource("nomad.log", line)
	}
}

func BenchmarkConditionEval(b *testing.B) {
	s := mustLoad(b, "testdata/good.yaml")
	c := s.Rule("nomad.windows.desktop_heap_exhaustion").When
	agg := fakeAgg{counts: []int{1, 1}}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c.Eval(agg)
	}
}
