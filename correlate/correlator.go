package correlate

import (
	"log/slog"
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
	// Lateness is how far behind its own newest event a source may still
	// deliver an event on time (default 0). The watermark trails the
	// slowest active source by this much; events older than the watermark
	// are late: counted in Stats.Late and logged.
	Lateness time.Duration
	// Idle is how long (on the clock of Advance) a source may deliver
	// nothing before it stops holding the watermark back (default 5m).
	Idle time.Duration
	// MaxChainDepth bounds chained rules: an incident change is fed back as
	// an event of source klaxon.incident at most this many times in a row
	// (default 3).
	MaxChainDepth int
	// Logger receives late-event and chain notices (default slog.Default()).
	Logger *slog.Logger
	// Links, when set, gives each incident change its Links (e.g.
	// NomadUILinks); nil leaves them out.
	Links func(*Incident) map[string]string
}

// Defaults of Options.
const (
	DefaultMaxEvidence    = 20
	DefaultUpdateInterval = time.Minute
)

func (o *Options) setDefaults() {
	if o.MaxEvidence <= 0 {
		o.MaxEvidence = DefaultMaxEvidence
	}
	if o.UpdateInterval <= 0 {
		o.UpdateInterval = DefaultUpdateInterval
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = 10000
	}
	if o.Lateness < 0 {
		o.Lateness = 0
	}
	if o.Idle <= 0 {
		o.Idle = 5 * time.Minute
	}
	if o.MaxChainDepth <= 0 {
		o.MaxChainDepth = 3
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Correlator keeps the windows of every rule and group and the incidents
// they raise. It is not safe for concurrent use: one goroutine feeds it.
// Time comes only from the events and from Advance.
//
// Time-driven decisions (resolution, absence deadlines, for and
// keep_firing_for) are taken on the watermark: the newest event time of the
// slowest active source (minus Lateness), and never later than the time
// given to Advance. One node's clock running ahead does not move it; a
// source that lags holds it back until it has been idle for Options.Idle.
type Correlator struct {
	opts  Options
	set   *rules.Set
	rules map[string]*ruleState // by rule id

	// proc is the latest time passed to Advance (zero: never called).
	proc time.Time
	// watermark is the time up to which time-driven decisions are taken.
	watermark time.Time
	clocks    clocks
	timers    timerHeap

	// open counts the open incidents per rule id and node (inhibition).
	open map[string]map[string]int
	// suppressed lists the groups an inhibition keeps from firing, by node.
	suppressed map[string][]*group

	queue    []queued // incident changes to feed back (chained rules)
	draining bool
	waking   bool // in wakeDue
	depth    int  // chain depth of the event being processed
	emitFn   func(Incident)
	// retired holds the open incidents of rules that were changed or
	// removed; they are resolved with the next emission.
	retired []Incident

	keyBuf  []byte
	lateLog map[string]uint64
	stats   Stats
	ckpt    checkpointState // what changed since the last checkpoint (checkpoint.go)
}

// Stats counts what the correlator did.
type Stats struct {
	Events    uint64 // events processed (not counting incident events fed back)
	Matched   uint64 // (event, rule) matches
	Incidents uint64 // incident changes emitted
	// Late counts events that arrived behind the watermark (beyond the
	// lateness) or older than their group's window. The first are still
	// placed in their window when it covers them; the second are dropped.
	Late uint64
	// Dropped counts late events too old for their group's window.
	Dropped uint64
	// Inhibited counts firings an inhibiting incident held back.
	Inhibited uint64
	// Chained counts incident changes fed back as klaxon.incident events;
	// ChainDropped those not fed back because the chain was too deep.
	Chained, ChainDropped uint64
	// Observations counts further records of an occurrence already in a
	// group's window (another source's report of it): evidence, not counts.
	Observations uint64
	// ActionsUnmatched counts action records (klaxon.action) about an
	// incident the correlator no longer holds.
	ActionsUnmatched uint64
	// MatchesByRule counts (event, rule) matches per rule id.
	MatchesByRule map[string]uint64
}

type ruleState struct {
	rule   *rules.Rule
	hash   string
	groups map[string]*group
}

// New returns a correlator for the rule set.
func New(set *rules.Set, opts Options) *Correlator {
	opts.setDefaults()
	c := &Correlator{opts: opts, rules: map[string]*ruleState{}, clocks: newClocks(),
		open: map[string]map[string]int{}, suppressed: map[string][]*group{}, lateLog: map[string]uint64{}}
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

// Watermark returns the event time up to which time-driven decisions have
// been taken.
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
	// A changed or removed rule's open incidents are resolved rather than
	// forgotten, so that no page stays open; the new definition fires anew
	// (with a new start) when its condition holds.
	for _, id := range c.sortedRuleIDs() {
		old := c.rules[id]
		if next[id] == old {
			continue
		}
		for _, key := range slices.Sorted(maps.Keys(old.groups)) {
			c.touch(old.groups[key]) // its checkpoint item goes
			if in := old.groups[key].Incident; in != nil {
				c.retired = append(c.retired, *in)
			}
		}
	}
	c.set = set
	c.rules = next
	c.rebuild()
}

// rebuild recreates the timers and the inhibition indexes from the groups
// (after SetRules and Restore).
func (c *Correlator) rebuild() {
	c.ckpt.quiet = true // nothing a checkpoint keeps changes here
	defer func() { c.ckpt.quiet = false }()
	c.timers = c.timers[:0]
	c.open = map[string]map[string]int{}
	c.suppressed = map[string][]*group{}
	for _, id := range c.sortedRuleIDs() {
		rs := c.rules[id]
		for _, key := range slices.Sorted(maps.Keys(rs.groups)) {
			g := rs.groups[key]
			g.rs, g.hidx, g.due = rs, -1, time.Time{}
			if g.Incident != nil {
				c.countOpen(rs.rule.ID, g.Incident.Node, 1)
			}
			if g.Suppressed {
				n := g.nodeName(rs.rule)
				c.suppressed[n] = append(c.suppressed[n], g)
			}
			c.schedule(g)
		}
	}
}

// Process runs one event through every rule and emits incident changes.
// Incident changes are fed back as events of source klaxon.incident
// (chained rules) before Process returns.
func (c *Correlator) Process(ev *ingest.Event, emit func(Incident)) {
	c.emitFn = emit
	c.resolveRetired()
	c.process(ev, 0)
	c.drain()
}

func (c *Correlator) process(ev *ingest.Event, depth int) {
	if depth == 0 {
		c.stats.Events++
	}
	c.depth = depth
	if ev.Source == ingest.SourceAction {
		c.action(ev) // a record of an action on an incident (actions.go)
		return
	}
	late := false
	if ev.Source != ingest.SourceIncident {
		c.clocks.observe(ev, c.proc)
		if !c.watermark.IsZero() && ev.Time.Before(c.watermark) {
			late = true
			c.late(ev, "it is older than the watermark")
		}
	}
	c.set.Match(ev, func(r *rules.Rule, mask uint64) {
		if ev.Source == ingest.SourceIncident && ev.Kind == r.ID {
			return // a rule never sees its own incidents
		}
		rs := c.rules[r.ID]
		if rs == nil {
			return
		}
		c.stats.Matched++
		if c.stats.MatchesByRule == nil {
			c.stats.MatchesByRule = map[string]uint64{}
		}
		c.stats.MatchesByRule[r.ID]++
		c.match(rs, ev, mask, late)
	})
	c.depth = 0
}

// late counts a late event and logs the 1st, 10th, 100th, ... of each
// source.
func (c *Correlator) late(ev *ingest.Event, why string) {
	c.stats.Late++
	key := ev.Source + "/" + clockNode(ev)
	n := c.lateLog[key] + 1
	c.lateLog[key] = n
	if n != 1 && n != 10 && n != 100 && n%1000 != 0 {
		return
	}
	c.opts.Logger.Warn("late event: "+why+" (counted; only the 1st, 10th, 100th and every 1000th of a source are logged)",
		"source", ev.Source, "node", ev.Node, "event", ev.ID, "time", ev.Time, "watermark", c.watermark,
		"behind", c.watermark.Sub(ev.Time).String(), "late_from_source", n)
}

func (c *Correlator) match(rs *ruleState, ev *ingest.Event, mask uint64, late bool) {
	r := rs.rule
	c.keyBuf = r.AppendGroupKey(c.keyBuf[:0], ev)
	g := rs.groups[string(c.keyBuf)]
	if g == nil {
		key, values := r.GroupKey(ev)
		g = &group{groupState: groupState{Key: key, Counts: make([]int, len(r.Selectors))}, rs: rs, hidx: -1}
		g.vals = make([]string, len(r.By))
		for i, p := range r.By {
			g.vals[i] = values[p]
		}
		if r.Absence != nil {
			g.Abs = &absState{}
		}
		if r.TimeDriven() {
			start := c.watermark
			if start.IsZero() || ev.Time.Before(start) {
				start = ev.Time.Add(-time.Nanosecond)
			}
			g.TL = &timeline{EvalAt: start}
		}
		rs.groups[key] = g
	}
	c.touch(g)
	newest := g.newest()
	if !newest.IsZero() && ev.Time.Before(newest.Add(-r.Window)) {
		// Too old to count in any window this group still has.
		if !late {
			c.late(ev, "it is older than its group's window")
		}
		c.stats.Dropped++
		if g.Incident == nil && len(g.Entries) == 0 {
			c.dropIfDead(g)
		}
		return
	}
	if ev.Occurrence != "" {
		if i := g.sameOccurrence(ev.Occurrence, ev.Time.UnixNano()); i >= 0 {
			c.observeAgain(g, i, ev, mask)
			return
		}
	}
	e := entry{T: ev.Time.UnixNano(), Mask: mask, O: ev.Occurrence}
	if len(r.Distincts) > 0 {
		e.Distinct = make([]string, len(r.Distincts))
	}
	setDistinct(r, &e, ev, mask)
	setValues(r, &e, ev, mask)
	setJoin(r, &e, ev, mask)
	if tl := g.TL; tl != nil && !ev.Time.After(tl.EvalAt) && !ev.Time.Before(c.watermark) {
		// On time, at the instant the timeline has reached: follow it from
		// just before.
		tl.EvalAt = ev.Time.Add(-time.Nanosecond)
	}
	g.insert(e)
	g.addCounts(mask, 1)
	cutoff := g.newest().Add(-r.Window)
	if g.TL != nil && g.TL.EvalAt.Add(-r.Window).Before(cutoff) {
		cutoff = g.TL.EvalAt.Add(-r.Window) // the timeline still needs them
	}
	g.evict(cutoff)
	g.dropHead(len(g.Entries) - c.opts.MaxEntries)
	if ev.Time.After(g.LastMatch) {
		g.LastMatch = ev.Time
		g.Node = ev.Node
	} else if g.Node == "" {
		g.Node = ev.Node
	}
	g.addEvidence(ev, c.opts.MaxEvidence)
	if g.Incident != nil {
		g.Incident.Count++
	}
	g.Pending = true
	if a := r.Absence; a != nil {
		c.absenceEvent(g, a, ev.Time, mask)
	}
	c.evaluate(g, ev.Time, ev)
	c.schedule(g)
}

// setDistinct records in e the values of the rule's distinct() references
// whose selectors are in mask.
func setDistinct(r *rules.Rule, e *entry, ev *ingest.Event, mask uint64) {
	for i, d := range r.Distincts {
		if mask&(1<<uint(d.Selector)) == 0 {
			continue
		}
		if e.Distinct == nil {
			e.Distinct = make([]string, len(r.Distincts))
		}
		e.Distinct[i], _ = ev.Lookup(d.Field)
	}
}

// setJoin records in e the sequence join key of the first step in mask.
func setJoin(r *rules.Rule, e *entry, ev *ingest.Event, mask uint64) {
	sq := r.Sequence
	if sq == nil || sq.JoinLen == 0 || e.J != "" {
		return
	}
	for k, st := range sq.Steps {
		if mask&(1<<uint(st.Selector)) != 0 {
			e.J = sq.JoinKey(k, ev)
			return
		}
	}
}

// observeAgain takes another record of the occurrence of entry i (the
// event stream's task event of a restart the agent log reported, say): it
// joins the evidence, and counts only for selectors the occurrence had not
// matched yet; counts, distinct values, sequences and absences see one
// occurrence once.
func (c *Correlator) observeAgain(g *group, i int, ev *ingest.Event, mask uint64) {
	r := g.rs.rule
	c.stats.Observations++
	g.addEvidence(ev, c.opts.MaxEvidence)
	e := &g.Entries[i]
	added := mask &^ e.Mask
	if added == 0 {
		if g.Incident != nil {
			g.Pending = true // the next update shows the evidence
			c.schedule(g)
		}
		return
	}
	g.segs.changed(i, len(g.Entries))
	g.ownEntries()
	e = &g.Entries[i]
	e.Mask |= added
	g.addCounts(added, 1)
	// A checkpoint's cut shares an entry's slices: replace, not change.
	e.Distinct, e.V = slices.Clone(e.Distinct), slices.Clone(e.V)
	setDistinct(r, e, ev, added)
	setValues(r, e, ev, added)
	setJoin(r, e, ev, added)
	g.Pending = true
	if a := r.Absence; a != nil {
		c.absenceEvent(g, a, e.time(), added)
	}
	c.evaluate(g, ev.Time, ev)
	c.schedule(g)
}

// absenceEvent records an `after` event and lets an `expect` event end the
// wait of earlier ones (and an established absence).
func (c *Correlator) absenceEvent(g *group, a *rules.Absence, t time.Time, mask uint64) {
	st := g.Abs
	if mask&(1<<uint(a.Expect)) != 0 {
		keep := st.Await[:0]
		for _, at := range st.Await {
			// Followed in time: this wait is over. An expect event after
			// the deadline does not undo the absence.
			if at.After(t) || t.After(at.Add(a.Within)) {
				keep = append(keep, at)
			}
		}
		clear(st.Await[len(keep):])
		st.Await = keep
		if len(st.Await) == 0 {
			st.Await = nil
		}
		if !st.From.IsZero() && !t.Before(st.From) {
			st.From, st.At = time.Time{}, time.Time{}
		}
	}
	if mask&(1<<uint(a.After)) != 0 {
		i := len(st.Await)
		for i > 0 && st.Await[i-1].After(t) {
			i--
		}
		st.Await = slices.Insert(st.Await, i, t)
		if over := len(st.Await) - 64; over > 0 {
			st.Await = st.Await[over:] // bounded: the newest waits matter
		}
	}
}

// holds evaluates the rule's condition over the whole window of g.
func (c *Correlator) holds(g *group) bool {
	return c.holdsOver(g, g.Entries, time.Time{})
}

// holdsOver evaluates the rule's condition over entries: the whole window,
// or the time span of the window that ends at to.
func (c *Correlator) holdsOver(g *group, entries []entry, to time.Time) bool {
	ranged := !to.IsZero()
	r := g.rs.rule
	if r.Absence != nil {
		return g.Abs != nil && !g.Abs.From.IsZero()
	}
	if r.Sequence != nil && !sequenceHolds(r.Sequence, entries) {
		return false
	}
	a := aggregates{g: g, r: r, entries: entries, ranged: ranged}
	if ranged {
		a.to = to.UnixNano()
	}
	ok, err := r.When.Eval(a)
	return err == nil && ok
}

// evaluate checks the condition of one group at event time now, after an
// event (last) or when its time has come.
func (c *Correlator) evaluate(g *group, now time.Time, last *ingest.Event) {
	r := g.rs.rule
	switch {
	case g.Incident == nil:
		if g.TL != nil || r.Absence != nil || g.Suppressed {
			return // fired by the timeline, the deadline or the inhibitor's end
		}
		if c.holds(g) {
			c.fire(g, now, last)
		}
	case g.Incident.Severity != r.SeverityAt(g.Incident.Count),
		g.Pending && !now.Before(g.Incident.UpdatedAt.Add(c.opts.UpdateInterval)):
		// An escalation is sent at once; other evidence waits for the update interval.
		g.Incident.Severity = r.SeverityAt(g.Incident.Count)
		g.Incident.Status = StatusUpdated
		g.Incident.UpdatedAt = now
		g.Incident.Seq++
		c.emit(g, last)
	}
}

// fire opens an incident for g at now, unless an inhibiting incident is
// open for its node.
func (c *Correlator) fire(g *group, now time.Time, last *ingest.Event) {
	r := g.rs.rule
	node := g.nodeName(r)
	if c.inhibited(r, node) {
		if !g.Suppressed {
			g.Suppressed = true
			c.suppressed[node] = append(c.suppressed[node], g)
			c.stats.Inhibited++
		}
		return
	}
	g.Suppressed = false
	started := g.startOf(last)
	in := &Incident{
		ID:        IncidentID(r.ID, g.Key),
		Rule:      r.ID,
		Status:    StatusFiring,
		Severity:  r.SeverityAt(len(g.Entries)),
		Node:      node,
		Group:     g.valueMap(),
		Runbook:   r.Runbook,
		Labels:    maps.Clone(r.Labels),
		StartedAt: started,
		UpdatedAt: now,
		Count:     len(g.Entries),
		Seq:       1,
	}
	if in.Labels == nil {
		in.Labels = map[string]string{}
	}
	addJobLabels(in, g.Evidence, last)
	g.Incident = in
	if g.TL != nil {
		g.TL.Inactive = time.Time{}
	}
	c.countOpen(r.ID, node, 1)
	c.emit(g, last)
}

// resolve closes the incident of g at now.
func (c *Correlator) resolve(g *group, now time.Time) {
	in := g.Incident
	in.markResolved(now)
	g.PrevStarted = in.StartedAt
	c.emit(g, nil)
	c.closed(g)
	g.Incident = nil
	g.Evidence = nil
	if g.Abs != nil {
		g.Abs.From, g.Abs.At = time.Time{}, time.Time{}
	}
	c.countOpen(g.rs.rule.ID, in.Node, -1)
}

// emit renders the incident of g and sends a copy.
func (c *Correlator) emit(g *group, last *ingest.Event) {
	rs := g.rs
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
		Latest:   g.latestMap(),
		Rate:     g.rateMap(),
	}
	if last != nil {
		td.Fields = last.Fields
	} else if n := len(g.Evidence); n > 0 {
		td.Fields = g.Evidence[n-1].Fields
	}
	in.Title, in.Summary = rs.rule.Render(td)
	in.Counts = td.Counts
	in.Evidence = append(slices.Clone(g.Evidence), g.Acts...)
	in.Actions = slices.Clone(rs.rule.Actions)
	if c.opts.Links != nil {
		if l := c.opts.Links(in); len(l) > 0 || len(in.Links) == 0 {
			in.Links = l // a resolution keeps the links of the last change
		}
	}
	c.touch(g)
	g.Pending = false
	out := *in
	out.Group = maps.Clone(in.Group)
	out.Labels = maps.Clone(in.Labels)
	out.Links = maps.Clone(in.Links)
	c.send(out)
}

// send emits an incident change and feeds it back to chained rules.
func (c *Correlator) send(out Incident) {
	c.stats.Incidents++
	if c.emitFn != nil {
		c.emitFn(out)
	}
	c.feedBack(out)
}

// Advance moves time forward to now (wall-clock time minus the configured
// lateness live; event time in replay). The watermark follows, bounded by
// the sources (see Correlator); groups whose time has come are woken:
// windows slide, absences past their deadline fire, for and
// keep_firing_for are followed, pending updates are flushed and incidents
// whose quiet period has passed and whose condition no longer holds are
// resolved. Groups with nothing left are forgotten.
func (c *Correlator) Advance(now time.Time, emit func(Incident)) {
	if now.After(c.proc) {
		c.proc = now
	}
	c.emitFn = emit
	c.resolveRetired()
	if w := c.clocks.watermark(c.proc, c.opts.Idle, c.opts.Lateness); w.After(c.watermark) {
		c.watermark = w
	}
	c.wakeDue()
	c.drain()
}

// Resume declares that processing starts, or starts again after a
// restore, on a live clock at now: the clock of Advance is now, and every
// source known so far counts as seen at now. Until then, event times stood
// in for that clock (or a restored checkpoint's clock of the run before a
// restart), and a backlog's are old enough to make every source look idle
// at the first Advance: the watermark then jumped to its clock and the
// rest of the backlog was late. Replays, whose clock is the events' own
// time, do not call it.
func (c *Correlator) Resume(now time.Time) {
	if now.After(c.proc) {
		c.proc = now
	}
	c.clocks.seenAt(c.proc)
}

// Settle declares that every source has delivered all its events up to
// now (the end of a replay or of a test's inputs) and moves the watermark
// there, then advances like Advance.
func (c *Correlator) Settle(now time.Time, emit func(Incident)) {
	if now.After(c.proc) {
		c.proc = now
	}
	if now.After(c.watermark) {
		c.watermark = now
	}
	c.Advance(now, emit)
}

// wakeDue wakes every group whose time is at or before the watermark, in
// order of time (then rule id and group key).
func (c *Correlator) wakeDue() {
	c.waking = true
	for len(c.timers) > 0 && !c.timers[0].due.After(c.watermark) {
		g := c.timers.pop()
		c.wake(g)
	}
	c.waking = false
}

// wake runs the time-driven part of one group at the watermark.
func (c *Correlator) wake(g *group) {
	rs := g.rs
	r := rs.rule
	if rs.groups[g.Key] != g {
		return // dropped since
	}
	now := c.watermark
	if r.Absence != nil {
		c.absenceDeadlines(g, now)
	}
	if g.TL != nil {
		c.runTimeline(g, now)
		g.evict(g.TL.EvalAt.Add(-r.Window))
	} else {
		g.evict(now.Add(-r.Window))
		if g.Incident != nil {
			quiet := !now.Before(g.LastMatch.Add(r.ResolveAfter))
			if quiet && !c.holds(g) {
				c.resolve(g, now)
			} else {
				c.evaluate(g, now, nil)
			}
		}
	}
	if !c.dropIfDead(g) {
		c.schedule(g)
	}
}

// absenceDeadlines establishes the absence of the oldest wait whose
// deadline the watermark has passed, and fires.
func (c *Correlator) absenceDeadlines(g *group, now time.Time) {
	st := g.Abs
	a := g.rs.rule.Absence
	n := 0
	for n < len(st.Await) && !st.Await[n].Add(a.Within).After(now) {
		n++
	}
	if n == 0 {
		return
	}
	if st.From.IsZero() {
		st.From, st.At = st.Await[0], st.Await[0].Add(a.Within)
	}
	st.Await = st.Await[n:]
	if len(st.Await) == 0 {
		st.Await = nil
	}
	if g.Incident == nil {
		c.fire(g, st.At, nil)
	}
}

// runTimeline follows the condition of a rule with for or keep_firing_for
// from where it was left to now, at each time it can change.
func (c *Correlator) runTimeline(g *group, now time.Time) {
	r := g.rs.rule
	tl := g.TL
	for i := 0; i < 1_000_000; i++ {
		t := c.nextCritical(g, tl.EvalAt)
		if t.IsZero() || t.After(now) {
			break
		}
		tl.EvalAt = t
		holds := c.holdsAt(g, t)
		if holds {
			if tl.Active.IsZero() {
				tl.Active = t
			}
			tl.Inactive = time.Time{}
		} else {
			tl.Active = time.Time{}
			if g.Incident != nil && tl.Inactive.IsZero() {
				tl.Inactive = t
			}
		}
		switch {
		case g.Incident == nil && holds && !t.Before(tl.Active.Add(r.For)) && !g.Suppressed:
			c.fire(g, t, nil)
		case g.Incident != nil && !holds && r.KeepFiringFor > 0 && !t.Before(tl.Inactive.Add(r.KeepFiringFor)):
			c.resolve(g, t)
		case g.Incident != nil && !holds && r.KeepFiringFor == 0 && !t.Before(g.LastMatch.Add(r.ResolveAfter)):
			c.resolve(g, t)
		}
	}
	if tl.EvalAt.Before(now) {
		tl.EvalAt = now
	}
	if g.Incident != nil {
		c.evaluate(g, now, nil) // pending updates
	}
}

// nextCritical returns the first time after t at which the condition or
// the incident of a timeline group can change: an entry enters or leaves
// the window, for or keep_firing_for or the quiet period runs out.
func (c *Correlator) nextCritical(g *group, t time.Time) time.Time {
	r := g.rs.rule
	tl := g.TL
	var best time.Time
	consider := func(x time.Time) {
		if x.After(t) && (best.IsZero() || x.Before(best)) {
			best = x
		}
	}
	tn := t.UnixNano()
	w := int64(r.Window)
	for i := range g.Entries {
		e := g.Entries[i].T
		if e > tn {
			consider(time.Unix(0, e).UTC())
			break // entries are in time order: later ones come later
		}
	}
	for i := range g.Entries {
		if e := g.Entries[i].T + w + 1; e > tn {
			consider(time.Unix(0, e).UTC())
			break
		}
	}
	if g.Incident == nil && !tl.Active.IsZero() && !g.Suppressed {
		consider(tl.Active.Add(r.For))
	}
	if g.Incident != nil && !tl.Inactive.IsZero() {
		if r.KeepFiringFor > 0 {
			consider(tl.Inactive.Add(r.KeepFiringFor))
		} else {
			consider(g.LastMatch.Add(r.ResolveAfter))
		}
	}
	return best
}

// dropIfDead forgets g when nothing is left of it; it reports whether it
// did.
func (c *Correlator) dropIfDead(g *group) bool {
	if g.Incident != nil || len(g.Entries) > 0 {
		return false
	}
	if g.Abs != nil && (len(g.Abs.Await) > 0 || !g.Abs.From.IsZero()) {
		return false
	}
	if g.carries() || c.keepClosed(g) {
		return false
	}
	if g.hidx >= 0 {
		c.timers.remove(g)
	}
	g.Suppressed = false
	if g.rs.groups[g.Key] == g {
		delete(g.rs.groups, g.Key)
	}
	c.touch(g)
	return true
}

// schedule sets when g must be woken next.
func (c *Correlator) schedule(g *group) {
	c.touch(g) // scheduled after every change (events, wake-ups, releases)
	r := g.rs.rule
	var due time.Time
	// During wake-ups, times the watermark has passed were looked at
	// already: only an event or a later time can change the group now.
	// After an event, they are looked at on the next Advance.
	consider := func(x time.Time) {
		if !x.IsZero() && (!c.waking || x.After(c.watermark)) && (due.IsZero() || x.Before(due)) {
			due = x
		}
	}
	if g.TL != nil {
		// The timeline has its own position: times up to the watermark
		// it has not reached yet are due at once.
		if t := c.nextCritical(g, g.TL.EvalAt); !t.IsZero() {
			due = t
		}
		if g.Incident != nil && g.Pending {
			consider(g.Incident.UpdatedAt.Add(c.opts.UpdateInterval))
		}
	} else if g.Incident != nil {
		t := g.LastMatch.Add(r.ResolveAfter)
		consider(t)
		if !t.After(c.watermark) && c.waking && len(g.Entries) > 0 && r.Absence == nil {
			// Quiet, but the condition held: look again once the oldest
			// entry has left the window.
			consider(g.Entries[0].time().Add(r.Window + time.Nanosecond))
		}
		if g.Pending {
			consider(g.Incident.UpdatedAt.Add(c.opts.UpdateInterval))
		}
	} else if len(g.Entries) > 0 {
		consider(g.newest().Add(r.Window + time.Nanosecond))
	}
	if g.Closed != nil {
		consider(g.Closed.UpdatedAt.Add(closedKeep)) // forgotten then (actions.go)
	}
	if g.Abs != nil && len(g.Abs.Await) > 0 {
		if d := g.Abs.Await[0].Add(r.Absence.Within); due.IsZero() || d.Before(due) {
			due = d // even when passed: a late event's deadline is taken at the next wake-up
		}
	}
	switch {
	case due.IsZero():
		if g.hidx >= 0 {
			c.timers.remove(g)
		}
	case g.hidx >= 0 && !due.Before(g.due):
		// Later than planned: the wake-up at the planned time reschedules.
	case g.hidx >= 0:
		g.due = due
		c.timers.fix(g)
	default:
		g.due = due
		c.timers.push(g)
	}
}

// Flush emits the pending evidence of every firing incident as an
// `updated` change regardless of the update interval (end of a replay, or
// shutdown), so the last change shows the final count.
func (c *Correlator) Flush(emit func(Incident)) {
	c.emitFn = emit
	c.resolveRetired()
	for _, id := range c.sortedRuleIDs() {
		rs := c.rules[id]
		for _, key := range slices.Sorted(maps.Keys(rs.groups)) {
			g := rs.groups[key]
			if g.Incident == nil || !g.Pending {
				continue
			}
			g.Incident.Status = StatusUpdated
			if g.LastMatch.After(g.Incident.UpdatedAt) {
				g.Incident.UpdatedAt = g.LastMatch
			}
			g.Incident.Seq++
			c.emit(g, nil)
		}
	}
	c.drain()
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

// OpenCounts counts the open incidents by rule id and severity, without
// copying them (the metrics take it every second, with tens of thousands
// open in a large fleet).
func (c *Correlator) OpenCounts() map[[2]string]int {
	out := map[[2]string]int{}
	for _, rs := range c.rules {
		for _, g := range rs.groups {
			if in := g.Incident; in != nil {
				out[[2]string{in.Rule, in.Severity}]++
			}
		}
	}
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

// resolveRetired sends the resolution of the incidents of changed or
// removed rules (see SetRules), at the watermark.
func (c *Correlator) resolveRetired() {
	if len(c.retired) == 0 || c.emitFn == nil {
		return
	}
	retired := c.retired
	c.retired = nil
	for _, in := range retired {
		now := c.watermark
		if now.Before(in.UpdatedAt) {
			now = in.UpdatedAt
		}
		in.markResolved(now)
		in.Summary += " (resolved because the rule was changed or removed)"
		c.send(in)
	}
	c.drain()
}
