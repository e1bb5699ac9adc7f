package correlate

import (
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

// Options tune the correlator. Zero values take the defaults.
type Options struct {
	// MaxEvidence caps the events kept with an incident (default 20).
	MaxEvidence int
	// UpdateInterval is the least event time between two `updated` changes
	// of one incident (default 1m); new evidence in between is folded into
	// the next change.
	UpdateInterval time.Duration
	// MaxEntries caps the window entries kept per group (default 10000);
	// the oldest go first.
	MaxEntries int
}

func (o *Options) setDefaults() {
	if o.MaxEvidence <= 0 {
		o.MaxEvidence = 20
	}
	if o.UpdateInterval <= 0 {
		o.UpdateInterval = time.Minute
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = 10000
	}
}

// Correlator keeps the windows of every rule and group and the incidents
// they raise. It is not safe for concurrent use: one goroutine feeds it.
// Time comes only from the events and from Advance.
type Correlator struct {
	opts  Options
	set   *rules.Set
	rules map[string]*ruleState // by rule id
	// watermark is the latest time passed to Advance or seen in an event.
	watermark time.Time
	stats     Stats
}

// Stats counts what the correlator did.
type Stats struct {
	Events    uint64 // events processed
	Matched   uint64 // (event, rule) matches
	Incidents uint64 // incident changes emitted
	Late      uint64 // events older than their group's window when they arrived
	// MatchesByRule counts (event, rule) matches per rule id.
	MatchesByRule map[string]uint64
}

type ruleState struct {
	rule   *rules.Rule
	hash   string
	groups map[string]*group
}

// group is the state of one rule for one group key.
type group struct {
	Key     string            `json:"key"`
	Values  map[string]string `json:"values"`
	Entries []entry           `json:"entries"`
	Counts  []int             `json:"counts"`
	// LastMatch is the event time of the newest matching event.
	LastMatch time.Time `json:"last_match"`
	// Incident is the open incident, nil when none fires.
	Incident *Incident `json:"incident,omitempty"`
	// Pending is set when evidence arrived since the last emitted change.
	Pending bool `json:"pending,omitempty"`
	// Evidence is kept between incidents too, so that a firing incident
	// shows what led to it.
	Evidence []Evidence `json:"evidence"`
}

// entry is one matching event in a window.
type entry struct {
	Time time.Time `json:"t"`
	Mask uint64    `json:"m"`
	// Distinct holds the values of rule.Distincts for this event ("" when
	// the selector of that ref did not match).
	Distinct []string `json:"d,omitempty"`
}

// New returns a correlator for the rule set.
func New(set *rules.Set, opts Options) *Correlator {
	opts.setDefaults()
	c := &Correlator{opts: opts, rules: map[string]*ruleState{}}
	c.SetRules(set)
	return c
}

// Stats returns a copy of the counters.
func (c *Correlator) Stats() Stats {
	st := c.stats
	st.MatchesByRule = maps.Clone(c.stats.MatchesByRule)
	return st
}

// ActiveGroups returns the number of groups with state per rule id.
func (c *Correlator) ActiveGroups() map[string]int {
	m := make(map[string]int, len(c.rules))
	for id, rs := range c.rules {
		m[id] = len(rs.groups)
	}
	return m
}

// Rules returns the rule set in use.
func (c *Correlator) Rules() *rules.Set { return c.set }

// Watermark returns the latest event time the correlator has seen or been advanced to.
func (c *Correlator) Watermark() time.Time { return c.watermark }

// SetRules replaces the rule set. The state of rules whose definition did
// not change (same id and hash) is kept; state of changed or removed rules
// is dropped.
func (c *Correlator) SetRules(set *rules.Set) {
	next := make(map[string]*ruleState, len(set.Rules))
	for _, r := range set.Rules {
		h := r.Hash()
		if old, ok := c.rules[r.ID]; ok && old.hash == h {
			old.rule = r
			next[r.ID] = old
			continue
		}
		next[r.ID] = &ruleState{rule: r, hash: h, groups: map[string]*group{}}
	}
	c.set = set
	c.rules = next
}

// Process runs one event through every rule and emits incident changes.
func (c *Correlator) Process(ev *ingest.Event, emit func(Incident)) {
	c.stats.Events++
	if ev.Time.After(c.watermark) {
		c.watermark = ev.Time
	}
	c.set.Match(ev, func(r *rules.Rule, mask uint64) {
		rs := c.rules[r.ID]
		if rs == nil {
			return
		}
		c.stats.Matched++
		if c.stats.MatchesByRule == nil {
			c.stats.MatchesByRule = map[string]uint64{}
		}
		c.stats.MatchesByRule[r.ID]++
		c.match(rs, ev, mask, emit)
	})
}

func (c *Correlator) match(rs *ruleState, ev *ingest.Event, mask uint64, emit func(Incident)) {
	r := rs.rule
	key, values := r.GroupKey(ev)
	g := rs.groups[key]
	if g == nil {
		g = &group{Key: key, Values: values, Counts: make([]int, len(r.Selectors))}
		rs.groups[key] = g
	}
	e := entry{Time: ev.Time, Mask: mask}
	if len(r.Distincts) > 0 {
		e.Distinct = make([]string, len(r.Distincts))
		for i, d := range r.Distincts {
			if mask&(1<<uint(d.Selector)) != 0 {
				e.Distinct[i], _ = ev.Lookup(d.Field)
			}
		}
	}
	newest := g.newest()
	if !newest.IsZero() && ev.Time.Before(newest.Add(-r.Window)) {
		// Too old to count in any window this group still has.
		c.stats.Late++
		return
	}
	g.insert(e)
	g.addCounts(mask, 1)
	g.evict(g.newest().Add(-r.Window), r)
	if over := len(g.Entries) - c.opts.MaxEntries; over > 0 {
		for _, e := range g.Entries[:over] {
			g.addCounts(e.Mask, -1)
		}
		clear(g.Entries[:over])
		g.Entries = g.Entries[over:]
	}
	if ev.Time.After(g.LastMatch) {
		g.LastMatch = ev.Time
	}
	g.addEvidence(ev, c.opts.MaxEvidence)
	if g.Incident != nil {
		g.Incident.Count++
	}
	g.Pending = true
	c.evaluate(rs, g, ev.Time, ev, emit)
}

// evaluate checks the condition of one group at event time now.
func (c *Correlator) evaluate(rs *ruleState, g *group, now time.Time, last *ingest.Event, emit func(Incident)) {
	r := rs.rule
	holds, err := r.When.Eval(aggregates{g: g, r: r})
	if err != nil {
		holds = false
	}
	switch {
	case holds && g.Incident == nil:
		in := &Incident{
			ID:        IncidentID(r.ID, g.Key),
			Rule:      r.ID,
			Status:    StatusFiring,
			Severity:  r.SeverityAt(len(g.Entries)),
			Node:      g.node(r, last),
			Group:     maps.Clone(g.Values),
			Runbook:   r.Runbook,
			Labels:    maps.Clone(r.Labels),
			StartedAt: g.firstTime(),
			UpdatedAt: now,
			Count:     len(g.Entries),
			Seq:       1,
		}
		if in.Labels == nil {
			in.Labels = map[string]string{}
		}
		g.Incident = in
		c.emit(rs, g, last, emit)
	case g.Incident != nil && g.Incident.Severity != r.SeverityAt(g.Incident.Count),
		g.Incident != nil && g.Pending && !now.Before(g.Incident.UpdatedAt.Add(c.opts.UpdateInterval)):
		// An escalation is sent at once; other evidence waits for the update interval.
		g.Incident.Severity = r.SeverityAt(g.Incident.Count)
		g.Incident.Status = StatusUpdated
		g.Incident.UpdatedAt = now
		g.Incident.Seq++
		c.emit(rs, g, last, emit)
	}
}

// emit renders the incident of g and sends a copy.
func (c *Correlator) emit(rs *ruleState, g *group, last *ingest.Event, emit func(Incident)) {
	in := g.Incident
	td := rules.TemplateData{
		Node:     in.Node,
		Group:    in.Group,
		Count:    in.Count,
		Counts:   g.countsByName(rs.rule),
		Window:   rs.rule.Window,
		Rule:     rs.rule.ID,
		Severity: in.Severity,
		First:    in.StartedAt,
		Last:     g.LastMatch,
		Values:   g.values(rs.rule),
	}
	if last != nil {
		td.Fields = last.Fields
	} else if n := len(g.Evidence); n > 0 {
		td.Fields = g.Evidence[n-1].Fields
	}
	in.Title, in.Summary = rs.rule.Render(td)
	in.Evidence = slices.Clone(g.Evidence)
	g.Pending = false
	c.stats.Incidents++
	out := *in
	out.Group = maps.Clone(in.Group)
	out.Labels = maps.Clone(in.Labels)
	emit(out)
}

// Advance moves time forward to now (a watermark: event time in replay,
// wall-clock time live). Windows slide, pending updates are flushed and
// incidents whose quiet period has passed and whose condition no longer
// holds are resolved. Groups with nothing left are forgotten.
func (c *Correlator) Advance(now time.Time, emit func(Incident)) {
	if now.After(c.watermark) {
		c.watermark = now
	}
	now = c.watermark
	for _, id := range c.sortedRuleIDs() {
		rs := c.rules[id]
		r := rs.rule
		for _, key := range sortedKeys(rs.groups) {
			g := rs.groups[key]
			g.evict(now.Add(-r.Window), r)
			if g.Incident != nil {
				quiet := !now.Before(g.LastMatch.Add(r.ResolveAfter))
				holds, err := r.When.Eval(aggregates{g: g, r: r})
				if quiet && (err != nil || !holds) {
					g.Incident.Status = StatusResolved
					g.Incident.UpdatedAt = now
					t := now
					g.Incident.ResolvedAt = &t
					g.Incident.Seq++
					c.emit(rs, g, nil, emit)
					g.Incident = nil
					g.Evidence = nil
				} else if g.Pending && !now.Before(g.Incident.UpdatedAt.Add(c.opts.UpdateInterval)) {
					c.evaluate(rs, g, now, nil, emit)
				}
			}
			if g.Incident == nil && len(g.Entries) == 0 {
				delete(rs.groups, key)
			}
		}
	}
}

// Flush emits the pending evidence of every firing incident as an
// `updated` change regardless of the update interval (end of a replay, or
// shutdown), so the last change shows the final count.
func (c *Correlator) Flush(emit func(Incident)) {
	for _, id := range c.sortedRuleIDs() {
		rs := c.rules[id]
		for _, key := range sortedKeys(rs.groups) {
			g := rs.groups[key]
			if g.Incident == nil || !g.Pending {
				continue
			}
			g.Incident.Status = StatusUpdated
			if g.LastMatch.After(g.Incident.UpdatedAt) {
				g.Incident.UpdatedAt = g.LastMatch
			}
			g.Incident.Seq++
			c.emit(rs, g, nil, emit)
		}
	}
}

// Open returns copies of the incidents that currently fire, sorted by id.
func (c *Correlator) Open() []Incident {
	var out []Incident
	for _, rs := range c.rules {
		for _, g := range rs.groups {
			if g.Incident != nil {
				out = append(out, *g.Incident)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (c *Correlator) sortedRuleIDs() []string {
	ids := make([]string, 0, len(c.rules))
	for id := range c.rules {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
