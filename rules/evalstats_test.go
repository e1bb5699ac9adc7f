package rules

import (
	"testing"
	"time"
)

// TestEvalStats: every rule is listed; only the rule whose selector reached
// expr counts evaluations and time.
func TestEvalStats(t *testing.T) {
	rs, err := ParseFile("bench.yaml", []byte(benchRules()))
	if err != nil {
		t.Fatal(err)
	}
	s := NewSet(rs...)
	ev := benchEvents()[0]
	ev.Fields["type"] = "Restarting 0"
	before := s.EvalStats()
	if len(before) != len(s.Rules) {
		t.Fatalf("%d rules in EvalStats, want %d", len(before), len(s.Rules))
	}
	for id, e := range before {
		if e.Evaluations != 0 || e.Time != 0 {
			t.Errorf("%s: %+v before any event", id, e)
		}
	}
	const n = 10
	matched := 0
	for i := 0; i < n; i++ {
		s.Match(ev, func(r *Rule, _ uint64) {
			if r.ID != "bench.r0" {
				t.Errorf("matched %s", r.ID)
			}
			matched++
		})
	}
	if matched != n {
		t.Fatalf("%d matches, want %d", matched, n)
	}
	// A coarse clock (Windows' monotonic clock moves in ticks) times most
	// short evaluations as 0 and a few as a tick: evaluate until one shows.
	for deadline := time.Now().Add(5 * time.Second); s.EvalStats()["bench.r0"].Time <= 0 && time.Now().Before(deadline); {
		s.Match(ev, func(*Rule, uint64) {})
	}
	after := s.EvalStats()
	if e := after["bench.r0"]; e.Evaluations < n || e.Time <= 0 {
		t.Errorf("bench.r0: %+v, want at least %d evaluations and some time", e, n)
	}
	if e := after["bench.r5"]; e.Evaluations != 0 {
		t.Errorf("bench.r5 (never reached by the index): %+v", e)
	}
}
