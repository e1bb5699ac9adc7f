package correlate

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func loadRules(t *testing.T) *rules.Set {
	t.Helper()
	set, err := rules.LoadFiles("testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// step is one input of a scenario: an event at an offset, or (msg == "")
// an Advance to that offset.
type step struct {
	at    time.Duration
	node  string
	msg   string
	alloc string
}

func runSteps(c *Correlator, steps []step) []Incident {
	var out []Incident
	emit := func(in Incident) { out = append(out, in) }
	for i, s := range steps {
		now := t0.Add(s.at)
		if s.msg == "" {
			c.Advance(now, emit)
			continue
		}
		ev := ingest.Event{ID: fmt.Sprint(i), Time: now, Node: s.node, Source: "nomad.log", Kind: "test", Msg: s.msg}
		if s.alloc != "" {
			ev.Fields = map[string]any{"alloc_id": s.alloc}
		}
		c.Process(&ev, emit)
	}
	return out
}

func statuses(ins []Incident) []string {
	var s []string
	for _, in := range ins {
		s = append(s, in.Rule+"/"+in.Node+"/"+in.Status)
	}
	return s
}

func TestLifecycle(t *testing.T) {
	set := loadRules(t)
	tests := []struct {
		name  string
		steps []step
		want  []string
	}{
		{"pair fires once", []step{{0, "n1", "a", ""}, {time.Minute, "n1", "b", ""}}, []string{"test.pair/n1/firing"}},
		{"one signal is not enough", []step{{0, "n1", "a", ""}, {time.Minute, "n1", "a", ""}}, nil},
		{"nodes do not mix", []step{{0, "n1", "a", ""}, {time.Minute, "n2", "b", ""}}, nil},
		{"outside the window", []step{{0, "n1", "a", ""}, {11 * time.Minute, "n1", "b", ""}}, nil},
		{"updated is throttled to the update interval", []step{
			{0, "n1", "a", ""}, {time.Second, "n1", "b", ""}, {2 * time.Second, "n1", "b", ""},
			{3 * time.Second, "n1", "b", ""}, {2 * time.Minute, "n1", "b", ""},
		}, []string{"test.pair/n1/firing", "test.pair/n1/updated"}},
		{"resolves after the quiet period, not before", []step{
			{0, "n1", "a", ""}, {time.Second, "n1", "b", ""},
			{20 * time.Minute, "", "", ""}, {31 * time.Minute, "", "", ""},
		}, []string{"test.pair/n1/firing", "test.pair/n1/resolved"}},
		{"fires again after resolving", []step{
			{0, "n1", "a", ""}, {time.Second, "n1", "b", ""}, {40 * time.Minute, "", "", ""},
			{41 * time.Minute, "n1", "a", ""}, {42 * time.Minute, "n1", "b", ""},
		}, []string{"test.pair/n1/firing", "test.pair/n1/resolved", "test.pair/n1/firing"}},
		{"distinct counts values, not events", []step{
			{0, "n1", "fail", "x"}, {time.Second, "n1", "fail", "x"}, {2 * time.Second, "n1", "fail", "y"},
			{3 * time.Second, "n1", "fail", "y"},
		}, nil},
		{"distinct fires on the third value", []step{
			{0, "n1", "fail", "x"}, {time.Second, "n1", "fail", "y"}, {2 * time.Second, "n1", "fail", "z"},
		}, []string{"test.distinct/n1/firing"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := statuses(runSteps(New(set, Options{}), tc.steps))
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestIncidentFields(t *testing.T) {
	set := loadRules(t)
	c := New(set, Options{MaxEvidence: 3})
	var steps []step
	steps = append(steps, step{0, "n1", "a", ""})
	for i := 1; i <= 10; i++ {
		steps = append(steps, step{time.Duration(i) * 2 * time.Minute, "n1", "b", ""})
	}
	out := runSteps(c, steps)
	if len(out) < 2 {
		t.Fatalf("want firing and updates, got %v", statuses(out))
	}
	first, last := out[0], out[len(out)-1]
	if first.ID != last.ID || first.ID != IncidentID("test.pair", "node=n1") {
		t.Errorf("id not stable: %s %s", first.ID, last.ID)
	}
	if first.Title != "pair on n1" || first.Summary != "1 a and 1 b" {
		t.Errorf("templates: %q %q", first.Title, first.Summary)
	}
	if first.Seq != 1 || last.Seq != len(out) {
		t.Errorf("seq: first %d last %d of %d", first.Seq, last.Seq, len(out))
	}
	if last.Count != 11 {
		t.Errorf("count %d, want 11", last.Count)
	}
	if len(last.Evidence) != 3 {
		t.Errorf("evidence %d, want capped at 3", len(last.Evidence))
	}
	if !first.StartedAt.Equal(t0) {
		t.Errorf("started_at %v, want first event in window %v", first.StartedAt, t0)
	}
	if first.Runbook != "do something" || first.Severity != "warning" {
		t.Errorf("runbook/severity: %q %q", first.Runbook, first.Severity)
	}
}

func TestSnapshotRestoreDoesNotRefire(t *testing.T) {
	set := loadRules(t)
	c := New(set, Options{})
	out := runSteps(c, []step{{0, "n1", "a", ""}, {time.Second, "n1", "b", ""}})
	if len(out) != 1 {
		t.Fatalf("want one firing, got %v", statuses(out))
	}
	snap, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	c2 := New(set, Options{})
	if err := c2.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if n := len(c2.Open()); n != 1 {
		t.Fatalf("restored %d open incidents, want 1", n)
	}
	// More evidence within the update interval: no new firing.
	out = runSteps(c2, []step{{2 * time.Second, "n1", "b", ""}})
	if len(out) != 0 {
		t.Fatalf("restored correlator emitted %v", statuses(out))
	}
	// Windows survived: one "a" more on a fresh node would not fire, but
	// the restored group still has its a and b.
	out = runSteps(c2, []step{{40 * time.Minute, "", "", ""}})
	if fmt.Sprint(statuses(out)) != "[test.pair/n1/resolved]" {
		t.Fatalf("got %v", statuses(out))
	}
}

func TestSetRulesKeepsUnchangedState(t *testing.T) {
	set := loadRules(t)
	c := New(set, Options{})
	runSteps(c, []step{{0, "n1", "a", ""}, {0, "n1", "fail", "x"}, {0, "n1", "fail", "y"}})
	b, err := os.ReadFile("testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Change test.distinct only (threshold 3 → 2).
	old := `distinct("fail", "fields.alloc_id") >= 3`
	if !strings.Contains(string(b), old) {
		t.Fatal("fixture changed")
	}
	changed := strings.Replace(string(b), old, `distinct("fail", "fields.alloc_id") >= 2`, 1)
	rs, err := rules.ParseFile("edited.yaml", []byte(changed))
	if err != nil {
		t.Fatal(err)
	}
	set2 := rules.NewSet(rs...)
	c.SetRules(set2)
	out := runSteps(c, []step{{time.Second, "n1", "b", ""}, {2 * time.Second, "n1", "fail", "z"}})
	// test.pair kept its "a": the "b" fires it. test.distinct lost its two
	// values: one new value does not reach 2.
	if fmt.Sprint(statuses(out)) != "[test.pair/n1/firing]" {
		t.Fatalf("got %v", statuses(out))
	}
}

func TestLateEventsAreCounted(t *testing.T) {
	set := loadRules(t)
	c := New(set, Options{})
	runSteps(c, []step{{30 * time.Minute, "n1", "a", ""}, {0, "n1", "b", ""}})
	if c.Stats().Late != 1 {
		t.Fatalf("late = %d, want 1", c.Stats().Late)
	}
}

func TestEscalationIsSentAtOnce(t *testing.T) {
	c := New(loadRules(t), Options{})
	out := runSteps(c, []step{{0, "n1", "x", ""}, {time.Second, "n1", "x", ""}, {2 * time.Second, "n1", "x", ""}, {3 * time.Second, "n1", "x", ""}})
	var got []string
	for _, in := range out {
		got = append(got, in.Status+"/"+in.Severity)
	}
	if fmt.Sprint(got) != "[firing/warning updated/critical]" {
		t.Fatalf("got %v", got)
	}
}
