package correlate

import (
	"maps"
	"slices"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Records of actions (source klaxon.action, written by an action executor
// such as sinks/nomadaction) come back through the events stream and are
// put in the evidence of the incident they are about, here, so that the
// correlator stays the one writer of an incident's changes (their Seq,
// which sinks order, throttle and de-duplicate by):
//
//   - a record of an open incident (the action taken when it fired) joins
//     its evidence (Acts, kept beside the capped events) and is sent at once
//     as an `updated` change;
//   - a record of an incident that resolved (the undo its resolution
//     caused) is sent as a follow-up of the resolved change: status
//     resolved, the next Seq, the record added to its evidence. The last
//     resolved change of a rule with actions is kept for closedKeep for it.
//
// A record matching neither (an incident long gone) is counted in
// Stats.ActionsUnmatched and logged once.

// closedKeep is how long (in event time) the resolved change of an incident
// of a rule with actions is kept for the records of its undo.
const closedKeep = 15 * time.Minute

// action puts an action record in its incident's evidence and sends the
// change.
func (c *Correlator) action(ev *ingest.Event) {
	g := c.actionGroup(ev)
	id := ev.Field("incident_id")
	started, _ := time.Parse(time.RFC3339Nano, ev.Field("started_at"))
	rec := Evidence{Time: ev.Time, ID: ev.ID, Node: ev.Node, Source: ev.Source,
		Kind: ev.Kind, Level: ev.Level, Msg: ev.Msg, Fields: ev.Fields}
	switch {
	case g != nil && g.Incident != nil && g.Incident.ID == id && g.Incident.StartedAt.Equal(started):
		if hasEvidence(g.Acts, ev.ID) {
			return // a record published again
		}
		c.touch(g)
		g.Acts = append(g.Acts, rec)
		in := g.Incident
		in.Status = StatusUpdated
		in.UpdatedAt = maxTime(in.UpdatedAt, c.watermark)
		in.Seq++
		c.emit(g, nil)
		c.schedule(g)
	case g != nil && g.Closed != nil && g.Closed.ID == id && g.Closed.StartedAt.Equal(started):
		if hasEvidence(g.Closed.Evidence, ev.ID) {
			return
		}
		c.touch(g)
		out := cloneIncident(*g.Closed)
		out.Seq++
		out.UpdatedAt = maxTime(out.UpdatedAt, c.watermark)
		out.Evidence = append(out.Evidence, rec)
		keep := cloneIncident(out)
		g.Closed = &keep
		c.send(out)
	default:
		c.stats.ActionsUnmatched++
		if c.stats.ActionsUnmatched == 1 {
			c.opts.Logger.Warn("action record for an incident the correlator no longer holds: not sent (logged once)",
				"incident", id, "rule", ev.Field("rule"), "node", ev.Node, "record", ev.Msg)
		}
	}
}

// actionGroup finds the group of the incident a record is about: its rule
// and its group values.
func (c *Correlator) actionGroup(ev *ingest.Event) *group {
	rs := c.rules[ev.Field("rule")]
	if rs == nil {
		return nil
	}
	vals := map[string]string{}
	switch gv := ev.Fields["group"].(type) {
	case map[string]any:
		for k, v := range gv {
			s, _ := v.(string)
			vals[k] = s
		}
	case map[string]string:
		vals = gv
	}
	return rs.groups[rs.rule.GroupKeyOf(vals)]
}

func hasEvidence(list []Evidence, id string) bool {
	for _, e := range list {
		if e.ID == id {
			return true
		}
	}
	return false
}

// closed keeps the resolved change of g's incident when its rule has
// actions (or the incident has action records), for the records of the
// undo; the next occurrence starts without records.
func (c *Correlator) closed(g *group) {
	if len(g.rs.rule.Actions) == 0 && len(g.Acts) == 0 {
		g.Closed = nil
		return
	}
	in := cloneIncident(*g.Incident)
	g.Closed = &in
	g.Acts = nil
}

// cloneIncident copies what the correlator changes in place (maps and
// slices it writes to); the others are replaced whole when they change.
func cloneIncident(in Incident) Incident {
	in = cloneIncidentMaps(in)
	in.Actions, in.Evidence = slices.Clone(in.Actions), slices.Clone(in.Evidence)
	return in
}

// cloneIncidentMaps copies the incident's maps, which the correlator may
// change in place.
func cloneIncidentMaps(in Incident) Incident {
	in.Group, in.Labels, in.Counts, in.Links = maps.Clone(in.Group), maps.Clone(in.Labels), maps.Clone(in.Counts), maps.Clone(in.Links)
	return in
}

// keepClosed reports whether g must stay for its resolved change; it
// forgets the change once closedKeep has passed.
func (c *Correlator) keepClosed(g *group) bool {
	if g.Closed == nil {
		return false
	}
	if c.watermark.Before(g.Closed.UpdatedAt.Add(closedKeep)) {
		return true
	}
	g.Closed = nil
	return false
}
