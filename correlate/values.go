package correlate

import (
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

// The values of a rule's value references (rules.ValueRef: what latest,
// rate and predict read) are kept with the window entries, aligned with
// Rule.ValueRefs(); an entry has none when the rule reads no values. When
// entries leave the window, the newest value of each reference is carried
// in the group (Carry), so that latest() reads a gauge's last value however
// old it is. A group whose rule reads latest() values lives as long as it
// carries one: one small group per key (per node for the desktop heap).

// carried is the newest value of a value reference that left the window.
type carried struct {
	T int64 `json:"t"` // event time, Unix nanoseconds (0: none)
	V any   `json:"v,omitempty"`
}

// setValues records in e the values of the rule's value references whose
// selectors are in mask.
func setValues(r *rules.Rule, e *entry, ev *ingest.Event, mask uint64) {
	refs := r.ValueRefs()
	for i, ref := range refs {
		if mask&(1<<uint(ref.Selector)) == 0 {
			continue
		}
		v, ok := rules.LookupValue(ev, ref.Field)
		if !ok {
			continue
		}
		if e.V == nil {
			e.V = make([]any, len(refs))
		}
		e.V[i] = v
	}
}

// carry keeps the newest values of entries about to leave the window.
func (g *group) carry(gone []entry) {
	if g.rs == nil {
		return
	}
	n := len(g.rs.rule.ValueRefs())
	if n == 0 {
		return
	}
	for i := range gone {
		e := &gone[i]
		for j := 0; j < n && j < len(e.V); j++ {
			if e.V[j] == nil {
				continue
			}
			if len(g.Carry) != n {
				c := make([]carried, n)
				copy(c, g.Carry)
				g.Carry = c
			}
			if e.T >= g.Carry[j].T {
				g.Carry[j] = carried{T: e.T, V: e.V[j]}
			}
		}
	}
}

// carries reports whether the group carries a value latest() reads: it
// must not be forgotten then.
func (g *group) carries() bool {
	if g.rs == nil {
		return false
	}
	refs := g.rs.rule.ValueRefs()
	for i, c := range g.Carry {
		if i < len(refs) && refs[i].Latest && c.T != 0 {
			return true
		}
	}
	return false
}

// Latest implements rules.ValueAggregates: the newest value of ref i at or
// before the end of the span (the whole window: its newest entry).
func (a aggregates) Latest(i int) any {
	entries := a.g.Entries
	if a.to != 0 {
		// A span of the timeline: what was known at its end.
		n := len(entries)
		for n > 0 && entries[n-1].T > a.to {
			n--
		}
		entries = entries[:n]
	}
	for k := len(entries) - 1; k >= 0; k-- {
		if v := entries[k].V; i < len(v) && v[i] != nil {
			return v[i]
		}
	}
	if i < len(a.g.Carry) && a.g.Carry[i].T != 0 && (a.to == 0 || a.g.Carry[i].T <= a.to) {
		return a.g.Carry[i].V
	}
	return nil
}

// Samples implements rules.ValueAggregates: the numeric values of ref i in
// the span, with their times in seconds.
func (a aggregates) Samples(i int) (t, v []float64) {
	entries := a.entries
	if !a.ranged {
		entries = a.g.Entries
	}
	for k := range entries {
		vals := entries[k].V
		if i >= len(vals) || vals[i] == nil {
			continue
		}
		f, ok := rules.Number(vals[i])
		if !ok {
			continue
		}
		t = append(t, float64(entries[k].T)/1e9)
		v = append(v, f)
	}
	return t, v
}

// latestMap is the template's .latest of g (the whole window).
func (g *group) latestMap() map[string]map[string]any {
	r := g.rs.rule
	if len(r.ValueRefs()) == 0 {
		return nil
	}
	a := aggregates{g: g, r: r, entries: g.Entries}
	return r.LatestMap(a.Latest)
}

// rateMap is the template's .rate of g (the whole window).
func (g *group) rateMap() map[string]map[string]any {
	r := g.rs.rule
	if len(r.ValueRefs()) == 0 {
		return nil
	}
	a := aggregates{g: g, r: r, entries: g.Entries}
	return r.RateMap(a.Samples)
}

// holdsAt evaluates the condition over the window ending at t (a timeline).
func (c *Correlator) holdsAt(g *group, t time.Time) bool {
	return c.holdsOver(g, span(g.Entries, t.Add(-g.rs.rule.Window), t), t)
}
