package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/internal/natstest"
)

func startJetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	_, js := natstest.Start(t)
	natstest.CreateStreams(t, js, jetstream.StreamConfig{}, map[string]string{natslayout.IncidentsStream: natslayout.IncidentsSubjects})
	return js
}
func publish(t *testing.T, js jetstream.JetStream, in correlate.Incident) {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), natslayout.IncidentSubject(in.Severity, in.Rule), b); err != nil {
		t.Fatal(err)
	}
}

// lifecycle returns the changes of one occurrence: firing at start, an
// update, and a resolution at end (none when end is zero).
func lifecycle(in correlate.Incident, start, end time.Time) []correlate.Incident {
	in.StartedAt, in.UpdatedAt, in.Status, in.Seq, in.Count = start, start, correlate.StatusFiring, 1, 2
	in.Evidence = []correlate.Evidence{{Time: start, ID: "e1-" + in.ID, Source: "nomad.log", Msg: "first"}}
	out := []correlate.Incident{in}
	in.Status, in.Seq, in.Count, in.UpdatedAt = correlate.StatusUpdated, 2, 3, start.Add(time.Minute)
	in.Evidence = []correlate.Evidence{in.Evidence[0], {Time: start.Add(time.Minute), ID: "e2-" + in.ID, Source: "nomad.event", Msg: "second"}}
	out = append(out, in)
	if !end.IsZero() {
		r := end
		in.Status, in.Seq, in.UpdatedAt, in.ResolvedAt = correlate.StatusResolved, 3, end, &r
		out = append(out, in)
	}
	return out
}

func ids(occ []Occurrence) string {
	var s []string
	for _, o := range occ {
		s = append(s, fmt.Sprintf("%s@%s", o.ID, o.Status))
	}
	return fmt.Sprint(s)
}

// TestSearchAndGet: the history answers by node, job (group or label),
// rule, status, severity, text and time, newest start first, across
// occurrences of one id; Get merges the evidence of one occurrence's
// changes.
func TestSearchAndGet(t *testing.T) {
	js := startJetStream(t)
	now := time.Now().UTC().Truncate(time.Second)
	h := func(n int) time.Time { return now.Add(time.Duration(n) * time.Hour) }
	crash := correlate.Incident{ID: "crash", Rule: "nomad.task.crash_loop", Severity: "error", Node: "n1", Title: "Crash loop of job pay",
		Group: map[string]string{"node": "n1", "fields.job": "pay", "fields.namespace": "prod"}, Labels: map[string]string{"team": "payments"}}
	gc := correlate.Incident{ID: "gc", Rule: "nomad.client.gc_pressure", Severity: "warning", Node: "n2", Title: "GC pressure on n2",
		Group: map[string]string{"node": "n2"}}
	heap := correlate.Incident{ID: "heap", Rule: "nomad.windows.desktop_heap_exhaustion", Severity: "critical", Node: "n1",
		Title: "Desktop heap exhaustion on n1", Group: map[string]string{"node": "n1"}, Labels: map[string]string{"job": "search"}}
	var all []correlate.Incident
	all = append(all, lifecycle(crash, h(-50), h(-49))...)
	all = append(all, lifecycle(gc, h(-10), h(-9))...)
	all = append(all, lifecycle(crash, h(-2), time.Time{})...)
	all = append(all, lifecycle(heap, h(-1), time.Time{})...)
	for _, in := range all {
		publish(t, js, in)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		q       Query
		want    string
		scanned int
	}{
		{"everything", Query{}, "[heap@updated crash@updated gc@resolved crash@resolved]", 10},
		{"node", Query{Node: "n1"}, "[heap@updated crash@updated crash@resolved]", 10},
		{"job of the group", Query{Job: "pay"}, "[crash@updated crash@resolved]", 10},
		{"job label", Query{Job: "search"}, "[heap@updated]", 10},
		{"rule (its subjects only)", Query{Rule: "nomad.task.crash_loop"}, "[crash@updated crash@resolved]", 5},
		{"firing", Query{Status: "firing"}, "[heap@updated crash@updated]", 10},
		{"resolved", Query{Status: "resolved"}, "[gc@resolved crash@resolved]", 10},
		{"severity", Query{Severity: "CRITICAL"}, "[heap@updated]", 10},
		{"text", Query{Text: "HEAP"}, "[heap@updated]", 10},
		{"since", Query{Since: h(-5)}, "[heap@updated crash@updated]", 10},
		{"until", Query{Until: h(-20)}, "[crash@resolved]", 10},
		{"between", Query{Since: h(-9).Add(-time.Minute), Until: h(-3)}, "[gc@resolved]", 10},
		{"limit", Query{Limit: 1}, "[heap@updated]", 10},
	} {
		res, err := Search(ctx, js, tc.q)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := ids(res.Occurrences); got != tc.want || res.Scanned != tc.scanned {
			t.Errorf("%s: %s (scanned %d), want %s (scanned %d)", tc.name, got, res.Scanned, tc.want, tc.scanned)
		}
		if tc.name == "limit" && res.Total != 4 {
			t.Errorf("limit: total %d, want 4", res.Total)
		}
		if tc.name == "job of the group" && (res.Occurrences[0].Job != "pay" || res.Occurrences[0].Changes != 2 || res.Occurrences[1].Changes != 3) {
			t.Errorf("job of the group: %+v", res.Occurrences)
		}
	}
	if _, err := Search(ctx, js, Query{Status: "maybe"}); err == nil {
		t.Error("status maybe accepted")
	}

	d, err := Get(ctx, js, "crash", Hint{Rule: "nomad.task.crash_loop"})
	if err != nil {
		t.Fatal(err)
	}
	if !d.Incident.StartedAt.Equal(h(-2)) || len(d.Changes) != 2 || len(d.Occurrences) != 2 || len(d.Incident.Evidence) != 2 {
		t.Errorf("newest occurrence: %+v", d)
	}
	d, err = Get(ctx, js, "crash", Hint{Started: h(-50)})
	if err != nil {
		t.Fatal(err)
	}
	var st []string
	for _, c := range d.Changes {
		st = append(st, c.Status)
	}
	if fmt.Sprint(st) != "[firing updated resolved]" || d.Incident.Status != correlate.StatusResolved || len(d.Incident.Evidence) != 2 ||
		d.Incident.Evidence[0].Msg != "first" || d.Incident.Evidence[1].Msg != "second" {
		t.Errorf("first occurrence: changes %v, incident %+v", st, d.Incident)
	}
	if _, err := Get(ctx, js, "nope", Hint{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(nope) = %v", err)
	}
	if _, err := Get(ctx, js, "crash", Hint{Started: h(-30)}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(crash, another start) = %v", err)
	}
}

// TestSearchReadsFromSince: with Since, the scan starts Lookback before it
// (by the time changes were stored), not at the start of the stream.
func TestSearchReadsFromSince(t *testing.T) {
	js := startJetStream(t)
	in := correlate.Incident{ID: "a", Rule: "r", Severity: "info", Node: "n", Status: correlate.StatusFiring, Seq: 1, StartedAt: time.Now(), UpdatedAt: time.Now()}
	publish(t, js, in)
	time.Sleep(50 * time.Millisecond)
	mid := time.Now()
	time.Sleep(50 * time.Millisecond)
	in.ID = "b"
	publish(t, js, in)
	res, err := Search(context.Background(), js, Query{Since: mid.Add(Lookback)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Scanned != 1 || ids(res.Occurrences) != "[b@firing]" {
		t.Errorf("scanned %d: %s", res.Scanned, ids(res.Occurrences))
	}
	// An empty stream, or one with nothing after Since, answers at once.
	start := time.Now()
	if res, err := Search(context.Background(), js, Query{Since: time.Now().Add(48 * time.Hour)}); err != nil || res.Scanned != 0 {
		t.Errorf("future: %+v %v", res, err)
	}
	if res, err := Search(context.Background(), js, Query{Rule: "no.such.rule"}); err != nil || res.Scanned != 0 {
		t.Errorf("unknown rule: %+v %v", res, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("empty searches took %s", d)
	}
}

// BenchmarkSearch: a search over 20,000 incident changes (each with 5
// pieces of evidence, about 2 KB, as the correlator publishes them) in an
// embedded JetStream; reported as changes read per second.
func BenchmarkSearch(b *testing.B) {
	js := startJetStream(b)
	const n = 20000
	ctx := context.Background()
	base := time.Now().Add(-48 * time.Hour)
	for i := range n {
		in := correlate.Incident{ID: fmt.Sprintf("inc%05d", i/4), Rule: "nomad.task.crash_loop", Severity: "error", Node: fmt.Sprintf("n%d", i%50),
			Status: correlate.StatusUpdated, Seq: i%4 + 1, StartedAt: base.Add(time.Duration(i/4) * time.Second), UpdatedAt: base.Add(time.Duration(i) * time.Second),
			Title: "Crash loop of task app of job pay", Summary: "Task app of job pay restarted 3 times within 10m and gave up (exit code 1).",
			Group: map[string]string{"node": "n", "fields.job": "pay", "fields.task": "app"}, Labels: map[string]string{"team": "payments"}}
		for j := range 5 {
			in.Evidence = append(in.Evidence, correlate.Evidence{Time: in.UpdatedAt, ID: fmt.Sprintf("e%d-%d", i, j), Source: "nomad.log",
				Kind: "client.alloc_runner.task_runner", Level: "info", Msg: "restarting task", Fields: map[string]any{"alloc_id": "6f1d2c1e-2f0a-4b7e-9a51-3c0d8e8f7a11", "task": "app", "reason": "Restart within policy", "delay": "1.1s"}})
		}
		data, _ := json.Marshal(in)
		if _, err := js.PublishAsync(natslayout.IncidentSubject(in.Severity, in.Rule), data); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	b.ResetTimer()
	for b.Loop() {
		res, err := Search(ctx, js, Query{Node: "n7", Limit: 10})
		if err != nil || res.Scanned != n {
			b.Fatalf("%+v %v", res.Scanned, err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "changes/s")
}
