package correlate

import (
	"cmp"
	"slices"
	"time"

	"github.com/klaxon-dev/klaxon/rules"
)

// Inhibited is a group whose condition holds but which an open incident of
// a rule in its inhibited_by keeps from firing: the incident it would be,
// held back (the web view shows it as such).
type Inhibited struct {
	// ID is the id the incident will have when it fires.
	ID       string            `json:"id"`
	Rule     string            `json:"rule"`
	Severity string            `json:"severity"`
	Node     string            `json:"node"`
	Group    map[string]string `json:"group"`
	Title    string            `json:"title"`
	Summary  string            `json:"summary"`
	// By lists the rules whose open incidents on the node hold it back.
	By []string `json:"inhibited_by"`
	// Count is the events in the group's window; First and Last the times
	// of its first and last matching events.
	Count int       `json:"count"`
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

// Inhibited lists the groups an inhibition holds back now, by node, rule
// and group. Like every method of Correlator it must not run concurrently
// with the others.
func (c *Correlator) Inhibited() []Inhibited {
	var out []Inhibited
	for node, list := range c.suppressed {
		for _, g := range list {
			if g.rs.groups[g.Key] != g || !g.Suppressed || g.Incident != nil {
				continue
			}
			r := g.rs.rule
			in := Inhibited{
				ID: IncidentID(r.ID, g.Key), Rule: r.ID, Severity: r.SeverityAt(len(g.Entries)), Node: node,
				Group: g.valueMap(), Count: len(g.Entries), First: g.firstTime(), Last: g.LastMatch,
			}
			for _, id := range r.InhibitedBy {
				if c.open[id][node] > 0 {
					in.By = append(in.By, id)
				}
			}
			td := rules.TemplateData{
				Node: node, Group: in.Group, Count: in.Count, Counts: g.countsByName(r), Window: r.Window,
				Rule: r.ID, Severity: in.Severity, First: in.First, Last: in.Last, Values: g.values(r),
			}
			if n := len(g.Evidence); n > 0 {
				td.Fields = g.Evidence[n-1].Fields
			}
			in.Title, in.Summary = r.Render(td)
			out = append(out, in)
		}
	}
	slices.SortFunc(out, func(a, b Inhibited) int {
		return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.Rule, b.Rule), cmp.Compare(a.ID, b.ID))
	})
	return out
}
