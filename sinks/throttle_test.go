package sinks

import (
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time       { return c.t }
func (c *clock) step(d time.Duration) { c.t = c.t.Add(d) }
func change(status string, occ int, seq int) correlate.Incident {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return correlate.Incident{ID: "i", Rule: "r", Severity: "error", Status: status, StartedAt: t0.Add(time.Duration(occ) * time.Hour), Seq: seq}
}

func TestRoute(t *testing.T) {
	in := correlate.Incident{ID: "x", Rule: "nomad.windows.desktop_heap", Node: "win-7", Severity: "warning",
		Labels: map[string]string{"component": "windows"}, Group: map[string]string{"fields.task": "web"}}
	tests := []struct {
		name string
		cfg  RouteConfig
		want bool
	}{
		{"empty matches all", RouteConfig{}, true},
		{"min severity below", RouteConfig{MinSeverity: "info"}, true},
		{"min severity equal", RouteConfig{MinSeverity: "warning"}, true},
		{"min severity above", RouteConfig{MinSeverity: "error"}, false},
		{"equality on label", RouteConfig{Match: map[string]string{"labels.component": "windows"}}, true},
		{"equality mismatch", RouteConfig{Match: map[string]string{"labels.component": "linux"}}, false},
		{"missing label is empty", RouteConfig{Match: map[string]string{"labels.team": ""}}, true},
		{"regexp on rule", RouteConfig{MatchRE: map[string]string{"rule": `nomad\.windows\..*`}}, true},
		{"regexp is anchored", RouteConfig{MatchRE: map[string]string{"rule": `windows`}}, false},
		{"regexp on node", RouteConfig{MatchRE: map[string]string{"node": "win-[0-9]+"}}, true},
		{"group key", RouteConfig{Match: map[string]string{"group.fields.task": "web"}}, true},
		{"all must hold", RouteConfig{MinSeverity: "warning", Match: map[string]string{"severity": "warning", "node": "other"}}, false},
	}
	for _, tc := range tests {
		r, err := NewRoute(tc.cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := r.Match(in); got != tc.want {
			t.Errorf("%s: Match = %v, want %v", tc.name, got, tc.want)
		}
		// A resolved change goes where the firing one went.
		res := in
		res.Status = correlate.StatusResolved
		if r.Match(res) != r.Match(in) {
			t.Errorf("%s: resolved routed differently", tc.name)
		}
	}
	if (*Route)(nil).Match(in) != true {
		t.Error("nil route must match")
	}
	bad := RouteConfig{MinSeverity: "loud", Match: map[string]string{"colour": "x"}, MatchRE: map[string]string{"rule": "("}}
	err := bad.Validate("sinks[2]")
	if err == nil {
		t.Fatal("bad route accepted")
	}
	for _, want := range []string{"sinks[2].min_severity", "sinks[2].match.colour", "sinks[2].match_re.rule"} {
		if !contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}
func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// step is one event of a throttle scenario: advance the clock, then offer
// a change (or check Due).
type step struct {
	after  time.Duration
	offer  *correlate.Incident
	want   Action
	status string // presented status when delivered
	due    int    // with offer == nil: the number of Due incidents (repeats are then delivered)
}

func offer(in correlate.Incident, want Action, status string) step {
	return step{offer: &in, want: want, status: status}
}

func TestThrottle(t *testing.T) {
	const gi = 5 * time.Minute
	tests := []struct {
		name  string
		cfg   ThrottleConfig
		steps []step
	}{
		{"defaults: firing at once, updates folded within group_interval, resolve at once", ThrottleConfig{}, []step{
			offer(change("firing", 0, 1), Deliver, "firing"),
			{after: time.Minute, offer: ptr(change("updated", 0, 2)), want: Defer},
			{after: time.Minute, offer: ptr(change("updated", 0, 3)), want: Defer},
			offer(change("updated", 0, 2), Fold, ""), // the deferred one comes back: superseded
			{after: 3 * time.Minute, offer: ptr(change("updated", 0, 3)), want: Deliver, status: "updated"},
			{after: time.Minute, offer: ptr(change("resolved", 0, 4)), want: Deliver, status: "resolved"},
		}},
		{"fire, update, update, resolve: one trigger and one resolve", ThrottleConfig{}, []step{
			offer(change("firing", 0, 1), Deliver, "firing"),
			{after: time.Second, offer: ptr(change("updated", 0, 2)), want: Defer},
			{after: time.Second, offer: ptr(change("updated", 0, 3)), want: Defer},
			{after: time.Second, offer: ptr(change("resolved", 0, 4)), want: Deliver, status: "resolved"},
			{after: gi, offer: ptr(change("updated", 0, 2)), want: Fold},
			offer(change("updated", 0, 3), Fold, ""),
		}},
		{"group_wait folds early updates into the first notification", ThrottleConfig{GroupWait: 30 * time.Second}, []step{
			offer(change("firing", 0, 1), Defer, ""),
			{after: 10 * time.Second, offer: ptr(change("updated", 0, 2)), want: Defer},
			{after: 20 * time.Second, offer: ptr(change("firing", 0, 1)), want: Fold},
			offer(change("updated", 0, 2), Deliver, "firing"),
		}},
		{"resolved within group_wait: nothing is sent", ThrottleConfig{GroupWait: 30 * time.Second}, []step{
			offer(change("firing", 0, 1), Defer, ""),
			{after: 10 * time.Second, offer: ptr(change("resolved", 0, 2)), want: Fold},
			{after: 20 * time.Second, offer: ptr(change("firing", 0, 1)), want: Fold},
		}},
		{"repeat_interval re-sends a still-open incident", ThrottleConfig{RepeatInterval: time.Hour}, []step{
			offer(change("firing", 0, 1), Deliver, "firing"),
			{after: 59 * time.Minute, due: 0},
			{after: time.Minute, due: 1},
			{after: time.Minute, due: 0},
			{after: time.Hour, due: 1},
			offer(change("resolved", 0, 2), Deliver, "resolved"),
			{after: 2 * time.Hour, due: 0},
		}},
		{"repeat off", ThrottleConfig{RepeatInterval: -1}, []step{
			offer(change("firing", 0, 1), Deliver, "firing"),
			{after: 100 * time.Hour, due: 0},
		}},
		{"group_interval off: every update goes out", ThrottleConfig{GroupInterval: -1}, []step{
			offer(change("firing", 0, 1), Deliver, "firing"),
			offer(change("updated", 0, 2), Deliver, "updated"),
			offer(change("updated", 0, 3), Deliver, "updated"),
		}},
		{"flap within resolve_delay keeps one open page", ThrottleConfig{ResolveDelay: 2 * time.Minute}, []step{
			offer(change("firing", 0, 1), Deliver, "firing"),
			{after: gi, offer: ptr(change("resolved", 0, 2)), want: Defer},
			{after: time.Minute, offer: ptr(change("firing", 1, 1)), want: Deliver, status: "updated"},
			{after: time.Minute, offer: ptr(change("resolved", 0, 2)), want: Fold},
			{after: time.Second, offer: ptr(change("resolved", 1, 2)), want: Defer},
			{after: 2 * time.Minute, offer: ptr(change("resolved", 1, 2)), want: Deliver, status: "resolved"},
		}},
		{"a new occurrence after a delivered resolve is a new page", ThrottleConfig{}, []step{
			offer(change("firing", 0, 1), Deliver, "firing"),
			offer(change("resolved", 0, 2), Deliver, "resolved"),
			{after: time.Minute, offer: ptr(change("firing", 1, 1)), want: Deliver, status: "firing"},
		}},
		{"redelivery of a delivered change is folded", ThrottleConfig{}, []step{
			offer(change("firing", 0, 1), Deliver, "firing"),
			offer(change("firing", 0, 1), Fold, ""),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
			th := NewThrottle(tc.cfg, c.now)
			sent := 0
			for i, s := range tc.steps {
				c.step(s.after)
				if s.offer == nil {
					due := th.Due()
					if len(due) != s.due {
						t.Fatalf("step %d: %d due, want %d", i, len(due), s.due)
					}
					for _, in := range due {
						th.Delivered(in)
					}
					continue
				}
				d := th.Offer(*s.offer)
				if d.Action != s.want {
					t.Fatalf("step %d (%s seq %d): %s (%s), want %s", i, s.offer.Status, s.offer.Seq, d.Action, d.Reason, s.want)
				}
				if d.Action == Defer && !d.Until.After(c.t) {
					t.Fatalf("step %d: deferred until %s, not after now", i, d.Until)
				}
				if d.Action == Deliver {
					sent++
					if d.Incident.Status != s.status {
						t.Fatalf("step %d: presented status %q, want %q", i, d.Incident.Status, s.status)
					}
					th.Delivered(d.Incident)
				}
			}
		})
	}
}

func ptr(in correlate.Incident) *correlate.Incident { return &in }

// An incident that resolves and fires again fifty times, each time within
// the resolve delay, pages once: one firing, updates at most once per
// group_interval, and one resolve when it stays resolved.
func TestThrottleFiftyFlapsPageOnce(t *testing.T) {
	c := &clock{t: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	th := NewThrottle(ThrottleConfig{ResolveDelay: 10 * time.Minute}, c.now)
	got := map[string]int{}
	try := func(in correlate.Incident) {
		if d := th.Offer(in); d.Action == Deliver {
			got[d.Incident.Status]++
			th.Delivered(d.Incident)
		}
	}
	try(change("firing", 0, 1))
	for i := 0; i < 50; i++ {
		c.step(time.Minute)
		try(change("resolved", i, 2)) // held by resolve_delay
		c.step(time.Minute)
		try(change("firing", i+1, 1)) // the flap: an update of the open page
		try(change("resolved", i, 2)) // redelivered: superseded
	}
	c.step(time.Minute)
	try(change("resolved", 50, 2))
	c.step(10 * time.Minute)
	try(change("resolved", 50, 2))
	if got["firing"] != 1 || got["resolved"] != 1 || got["updated"] > 100/5+1 {
		t.Fatalf("notifications %v: want 1 firing, 1 resolved, at most one update per group_interval", got)
	}
}

func TestThrottleRestoreAndPrune(t *testing.T) {
	c := &clock{t: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	th := NewThrottle(ThrottleConfig{}, c.now)
	th.Restore(change("updated", 0, 3), c.t.Add(-time.Minute))
	if d := th.Offer(change("updated", 0, 2)); d.Action != Fold {
		t.Fatalf("older than restored: %s", d.Action)
	}
	if d := th.Offer(change("updated", 0, 4)); d.Action != Defer || d.Reason != "group_interval" {
		t.Fatalf("update right after a restored one: %s %s", d.Action, d.Reason)
	}
	if d := th.Offer(change("resolved", 0, 5)); d.Action != Deliver {
		t.Fatalf("resolve: %s", d.Action)
	}
	th.Delivered(change("resolved", 0, 5))
	c.step(25 * time.Hour)
	th.Prune(24 * time.Hour)
	if th.Len() != 0 {
		t.Fatalf("closed incident not pruned")
	}
}
