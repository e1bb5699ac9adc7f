package correlate

import (
	"sort"
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

// newest returns the time of the newest entry (zero when empty).
func (g *group) newest() time.Time {
	if len(g.Entries) == 0 {
		return time.Time{}
	}
	return g.Entries[len(g.Entries)-1].Time
}

// firstTime returns the time of the oldest entry in the window.
func (g *group) firstTime() time.Time {
	if len(g.Entries) == 0 {
		return g.LastMatch
	}
	return g.Entries[0].Time
}

// insert places e in time order; events mostly arrive in order, so the
// search runs from the end.
func (g *group) insert(e entry) {
	i := len(g.Entries)
	for i > 0 && g.Entries[i-1].Time.After(e.Time) {
		i--
	}
	g.Entries = append(g.Entries, entry{})
	copy(g.Entries[i+1:], g.Entries[i:])
	g.Entries[i] = e
}

func (g *group) addCounts(mask uint64, d int) {
	for i := range g.Counts {
		if mask&(1<<uint(i)) != 0 {
			g.Counts[i] += d
		}
	}
}

// evict drops entries older than cutoff.
func (g *group) evict(cutoff time.Time, r *rules.Rule) {
	n := 0
	for n < len(g.Entries) && g.Entries[n].Time.Before(cutoff) {
		g.addCounts(g.Entries[n].Mask, -1)
		n++
	}
	if n > 0 {
		// Re-slice instead of copying: append reallocates (copying only the
		// live entries) once the capacity runs out, so eviction is O(1)
		// amortised even for windows of many thousand entries.
		clear(g.Entries[:n])
		g.Entries = g.Entries[n:]
	}
}

func (g *group) addEvidence(ev *ingest.Event, max int) {
	if len(g.Evidence) >= max {
		copy(g.Evidence, g.Evidence[1:])
		g.Evidence = g.Evidence[:max-1]
	}
	g.Evidence = append(g.Evidence, Evidence{
		Time: ev.Time, ID: ev.ID, Node: ev.Node, Source: ev.Source,
		Kind: ev.Kind, Level: ev.Level, Msg: ev.Msg, Fields: ev.Fields,
	})
}

// node names the node of the group's incident: the group's node value when
// it groups by node (also as the last alternative, "fields.prev_node|node"),
// else the node of the last event.
func (g *group) node(r *rules.Rule, last *ingest.Event) string {
	for _, p := range r.By {
		if p == "node" || strings.HasSuffix(p, "|node") {
			return g.Values[p]
		}
	}
	if last != nil {
		return last.Node
	}
	return ""
}

func (g *group) countsByName(r *rules.Rule) map[string]int {
	m := make(map[string]int, len(r.Selectors))
	for i, s := range r.Selectors {
		m[s.Name] = g.Counts[i]
	}
	return m
}

// values collects distinct values for templates: per distinct() reference
// ("selector.field") from the window, and per field of the evidence
// ("fields.<name>").
func (g *group) values(r *rules.Rule) map[string][]string {
	out := map[string][]string{}
	for i, d := range r.Distincts {
		seen := map[string]bool{}
		for _, e := range g.Entries {
			if v := e.Distinct[i]; v != "" && !seen[v] {
				seen[v] = true
				out[r.Selectors[d.Selector].Name+"."+d.Field] = append(out[r.Selectors[d.Selector].Name+"."+d.Field], v)
			}
		}
	}
	seen := map[string]map[string]bool{}
	for _, ev := range g.Evidence {
		for k, v := range ev.Fields {
			s, ok := v.(string)
			if !ok || s == "" {
				continue
			}
			path := "fields." + k
			if seen[path] == nil {
				seen[path] = map[string]bool{}
			}
			if !seen[path][s] {
				seen[path][s] = true
				out[path] = append(out[path], s)
			}
		}
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

// aggregates exposes a group's window to a rule's condition.
type aggregates struct {
	g *group
	r *rules.Rule
}

func (a aggregates) Count(sel int) int {
	if sel < 0 || sel >= len(a.g.Counts) {
		return 0
	}
	return a.g.Counts[sel]
}

func (a aggregates) Distinct(sel int, field string) int {
	for i, d := range a.r.Distincts {
		if d.Selector != sel || d.Field != field {
			continue
		}
		seen := map[string]struct{}{}
		for _, e := range a.g.Entries {
			if v := e.Distinct[i]; v != "" {
				seen[v] = struct{}{}
			}
		}
		return len(seen)
	}
	return 0
}
