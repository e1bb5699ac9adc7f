package correlate

import (
	"encoding/json"
	"fmt"
	"testing"
)

// refireRules: a gauge rule whose window (30m) outlasts its quiet period
// (5m), so that entries of a resolved occurrence are still in the window
// when it fires again.
const refireRules = `
rules:
  - id: refire.gauge
    title: "load on {{ .node }}"
    summary: '{{ index .latest "load" "fields.running" }} running'
    runbook: r
    match:
      load: source == "nomad.event" && kind == "Node.RunningAllocations"
    correlate:
      when: (latest("load", "fields.running") ?? 0) >= 20
      window: 30m
    resolve:
      after: 5m
`

// refireSteps: fire at 0 (21 running), fall below at 1m, resolve at 7m
// (quiet since 1m + 5m), fire again at 8m (22 running) with the entries of
// 0 and 1m still in the window; what happens after restart (the index of
// the step to snapshot and restore before; -1: none).
func refireSteps(t *testing.T, restartBefore int) []Incident {
	t.Helper()
	set := gaugeSet(t, refireRules)
	c := New(set, Options{Logger: quietLog()})
	var got []Incident
	emit := func(in Incident) { got = append(got, in) }
	steps := []func(){
		func() { c.Process(loadEv(0, 0, "w1", 21), emit) },
		func() { c.Process(loadEv(1, m, "w1", 10), emit) },
		func() { c.Settle(t0.Add(7*m), emit) },
		func() { c.Process(loadEv(2, 8*m, "w1", 22), emit) },
		func() { c.Settle(t0.Add(20*m), emit) },
		func() { c.Process(loadEv(3, 21*m, "w1", 5), emit) },
		func() { c.Settle(t0.Add(27*m), emit) },
		// A third firing, the first two occurrences' entries still there.
		func() { c.Process(loadEv(4, 28*m, "w1", 23), emit) },
	}
	for i, s := range steps {
		if i == restartBefore {
			b, err := c.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			c = New(set, Options{Logger: quietLog()})
			if err := c.Restore(b); err != nil {
				t.Fatal(err)
			}
		}
		s()
	}
	return got
}

func changeIDs(ins []Incident) []string {
	var out []string
	for _, in := range ins {
		out = append(out, fmt.Sprintf("%s %s", in.Status, in.ChangeID()))
	}
	return out
}

// TestRefireChangeIDs: an incident that fires again while entries of its
// last occurrence remain in the window is a new occurrence: its StartedAt
// is later than the last one's, so no change id repeats (JetStream's
// de-duplication by Nats-Msg-Id and the sinks' delivered-id check would
// drop the page), and every change reaches the emit callback. The ids
// derive from event data: a restart from a snapshot at any step gives the
// same ones, so a replay after a crash is de-duplicated.
func TestRefireChangeIDs(t *testing.T) {
	got := refireSteps(t, -1)
	var firing []Incident
	seen := map[string]bool{}
	for _, in := range got {
		id := in.ChangeID()
		if seen[id] {
			t.Errorf("change id %s repeated: %v", id, changeIDs(got))
		}
		seen[id] = true
		if in.Status == StatusFiring {
			firing = append(firing, in)
		}
	}
	if len(firing) != 3 {
		t.Fatalf("%d firing changes, want 3: %v", len(firing), changeIDs(got))
	}
	for i := 1; i < len(firing); i++ {
		if !firing[i].StartedAt.After(firing[i-1].StartedAt) {
			t.Errorf("firing %d started at %s, not after the last one's %s", i+1, firing[i].StartedAt, firing[i-1].StartedAt)
		}
	}
	if firing[0].StartedAt != t0 {
		t.Errorf("first firing started at %s, want its first event's time %s", firing[0].StartedAt, t0)
	}
	// Fired again by the event of 8m: that is when the occurrence began.
	if want := t0.Add(8 * m); !firing[1].StartedAt.Equal(want) {
		t.Errorf("second firing started at %s, want %s (the event that fired it again)", firing[1].StartedAt, want)
	}
	for restart := 1; restart < 8; restart++ {
		again := refireSteps(t, restart)
		if fmt.Sprint(changeIDs(again)) != fmt.Sprint(changeIDs(got)) {
			t.Errorf("restored before step %d:\n%v\nwant\n%v", restart, changeIDs(again), changeIDs(got))
		}
	}
}

// TestRefireOldSnapshot: a snapshot written before groups kept the start
// of their last occurrence (no prev_started) still restores, and a group
// that resolved there (entries, no evidence, no incident) fires again as a
// new occurrence.
func TestRefireOldSnapshot(t *testing.T) {
	set := gaugeSet(t, refireRules)
	c := New(set, Options{Logger: quietLog()})
	var got []Incident
	emit := func(in Incident) { got = append(got, in) }
	c.Process(loadEv(0, 0, "w1", 21), emit)
	c.Process(loadEv(1, m, "w1", 10), emit)
	c.Settle(t0.Add(7*m), emit)
	b, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	g := s["rules"].(map[string]any)["refire.gauge"].(map[string]any)["groups"].([]any)[0].(map[string]any)
	if _, ok := g["prev_started"]; !ok {
		t.Fatalf("no prev_started in the group: %v", g)
	}
	delete(g, "prev_started")
	old, _ := json.Marshal(s)
	c2 := New(set, Options{Logger: quietLog()})
	if err := c2.Restore(old); err != nil {
		t.Fatal(err)
	}
	c2.Process(loadEv(2, 8*m, "w1", 22), emit)
	if n := len(got); n != 4 || got[3].Status != StatusFiring || got[3].ChangeID() == got[0].ChangeID() {
		t.Fatalf("after an old snapshot: %v", changeIDs(got))
	}
	if want := t0.Add(8 * m); !got[3].StartedAt.Equal(want) {
		t.Errorf("fired again at %s after an old snapshot, want %s", got[3].StartedAt, want)
	}
}
