package correlate

import (
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

// queued is an incident change waiting to be fed back as an event.
type queued struct {
	ev    ingest.Event
	depth int
}

// IncidentEvent returns the event that feeds an incident change back into
// the rules (chained rules): source klaxon.incident, kind the rule id, the
// incident's node and time, and fields status, severity, count,
// incident_id, title, group (the group values by path) and each group
// value under the last name of its path ("fields.task" gives task).
func IncidentEvent(in Incident) ingest.Event {
	f := map[string]any{
		"status":      in.Status,
		"severity":    in.Severity,
		"count":       in.Count,
		"incident_id": in.ID,
		"title":       in.Title,
	}
	group := make(map[string]any, len(in.Group))
	for p, v := range in.Group {
		group[p] = v
		name := p
		if i := strings.LastIndexByte(name, '|'); i >= 0 {
			name = name[i+1:]
		}
		name = strings.TrimPrefix(name, "fields.")
		if _, taken := f[name]; !taken && name != "group" {
			f[name] = v
		}
	}
	f["group"] = group
	level := ingest.LevelInfo
	switch in.Severity {
	case "warning":
		level = ingest.LevelWarn
	case "error", "critical":
		level = ingest.LevelError
	}
	return ingest.Event{
		ID:     "incident:" + in.ChangeID(),
		Time:   in.UpdatedAt,
		Node:   in.Node,
		Source: ingest.SourceIncident,
		Kind:   in.Rule,
		Level:  level,
		Msg:    in.Title,
		Fields: f,
	}
}

// feedBack queues an incident change as an event for chained rules.
func (c *Correlator) feedBack(in Incident) {
	depth := c.depth + 1
	if depth > c.opts.MaxChainDepth {
		c.stats.ChainDropped++
		if c.stats.ChainDropped == 1 {
			c.opts.Logger.Warn("incident change not fed back to the rules: the chain of rules matching incidents is too deep (logged once)",
				"rule", in.Rule, "incident", in.ID, "max_depth", c.opts.MaxChainDepth)
		}
		return
	}
	c.stats.Chained++
	c.queue = append(c.queue, queued{ev: IncidentEvent(in), depth: depth})
}

// drain processes the queued incident events (and those they cause).
func (c *Correlator) drain() {
	if c.draining {
		return
	}
	c.draining = true
	for len(c.queue) > 0 {
		q := c.queue[0]
		c.queue[0] = queued{}
		c.queue = c.queue[1:]
		c.process(&q.ev, q.depth)
	}
	c.queue = nil
	c.draining = false
}

// countOpen keeps the number of open incidents per rule and node; when the
// last incident of a rule closes on a node, the groups it inhibited there
// are looked at again.
func (c *Correlator) countOpen(rule, node string, d int) {
	m := c.open[rule]
	if m == nil {
		m = map[string]int{}
		c.open[rule] = m
	}
	m[node] += d
	if m[node] > 0 {
		return
	}
	delete(m, node)
	if d < 0 {
		c.release(node)
	}
}

// inhibited reports whether an incident of a rule that inhibits r is open
// for node.
func (c *Correlator) inhibited(r *rules.Rule, node string) bool {
	for _, id := range r.InhibitedBy {
		if c.open[id][node] > 0 {
			return true
		}
	}
	return false
}

// release looks again at the groups suppressed on node: those whose
// condition still holds fire now (unless another inhibitor is open).
func (c *Correlator) release(node string) {
	list := c.suppressed[node]
	if len(list) == 0 {
		return
	}
	delete(c.suppressed, node)
	now := c.watermark
	for _, g := range list {
		if g.rs.groups[g.Key] != g || !g.Suppressed || g.Incident != nil {
			continue
		}
		g.Suppressed = false
		r := g.rs.rule
		switch {
		case g.TL != nil:
			tl := g.TL
			if !tl.Active.IsZero() && !tl.EvalAt.Before(tl.Active.Add(r.For)) {
				c.fire(g, maxTime(now, tl.EvalAt), nil)
			}
		case c.holds(g):
			c.fire(g, maxTime(now, g.LastMatch), nil)
		}
		c.schedule(g)
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
