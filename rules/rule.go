// Package rules loads, validates and compiles the operator-edited rule files
// of rules.d/: selectors (expr-lang boolean expressions over an Event),
// grouping, windows, the `when` condition over window aggregates, resolve
// settings and title/summary templates.
package rules

import (
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Rule is one compiled rule. It is immutable after loading and shared by
// every correlator goroutine.
type Rule struct {
	ID       string
	Title    string // text/template source
	Summary  string // text/template source
	Severity string // info, warning, error, critical
	// Escalate raises the severity as an incident's count grows.
	Escalate []Escalation
	Runbook  string
	Labels   map[string]string

	// Selectors in file order; their index is the selector's bit in masks.
	Selectors []*Selector
	// By lists the event paths (see ingest.Event.Lookup) that form the group key.
	By []string
	// Window is the sliding window of the aggregates in event time.
	Window time.Duration
	// When is the compiled condition over the window's aggregates.
	When *Condition
	// ResolveAfter is the quiet period after the last matching event after
	// which a firing incident resolves (when the condition no longer holds).
	ResolveAfter time.Duration
	// Distincts lists the (selector, field) pairs that `when` uses in
	// distinct(); the correlator keeps their values per window entry.
	Distincts []DistinctRef
	// Sequence, when set, requires its steps to occur in order within its
	// span (in addition to When).
	Sequence *Sequence
	// Absence, when set, makes the rule fire when an event of one selector
	// is not followed by an event of another within a time, decided on the
	// event-time watermark. When is not used then.
	Absence *Absence
	// For is how long the condition must hold (in event time) before the
	// incident fires (Prometheus `for`); 0 fires at once.
	For time.Duration
	// KeepFiringFor keeps a firing incident open for this long after the
	// condition stopped holding (Prometheus `keep_firing_for`); when set it
	// decides resolution instead of ResolveAfter's quiet period.
	KeepFiringFor time.Duration
	// InhibitedBy lists rule ids: while an incident of one of them is open
	// for a node, this rule does not fire for that node.
	InhibitedBy []string
	// Actions are the actions the rule names (actions.go); its incidents
	// carry them for an action executor.
	Actions []string
	// ResolveGiven reports whether resolve.after was given explicitly.
	ResolveGiven bool
	// Params are the named thresholds When reads as params.<name>
	// (correlate.params), with the values in effect: int or float64. An
	// override can set them.
	Params map[string]any
	// Exceptions keep events from the rule: an event one of them matches
	// counts for none of its selectors. Overrides add them.
	Exceptions []*Exception

	// File and Line locate the rule in its file.
	File string
	Line int
	// Col is the column of the rule's first key.
	Col int

	tmpl  *templates
	lists map[string][]string // the lists of the rule's file
	hash  string
	// position of resolve.after when given (for lint; in an override's
	// file when an override set it)
	resolveFile             string
	resolveLine, resolveCol int
	// positions of other keys (for lint): window, inhibited_by items
	windowFile            string
	windowLine, windowCol int
	inhibitPos            [][2]int
	macros                map[string]*Macro // the macros of the rule's file
	// origins say where each part came from; disabled is the override
	// that took the rule out of its set (nil: it is in).
	origins  []Origin
	disabled *Origin
}

// Sequence is an ordered sequence of selector matches (EQL's sequence):
// step i+1 must occur at or after step i, and the last step within Within
// of the first. Steps with By must agree on the values of their paths (the
// join key), e.g. the same fields.alloc_id.
type Sequence struct {
	Steps  []SeqStep
	Within time.Duration
	// JoinLen is the number of join paths every step with By has (0: none).
	JoinLen   int
	Line, Col int
}

// SeqStep is one step of a sequence.
type SeqStep struct {
	Selector int      // index into Rule.Selectors
	By       []string // join paths of this step (len JoinLen, or none)
	Line     int
	Col      int
}

// Absence is "After not followed by Expect within Within" per group.
type Absence struct {
	After, Expect int // selector indexes
	Within        time.Duration
	Line, Col     int
}

// Macro is a named, reusable piece of selector expression (`macros:` of a
// rule file); selectors use it by its name.
type Macro struct {
	Name      string
	Expr      string
	Line, Col int
}

// TimeDriven reports whether the rule needs the correlator to evaluate it
// as event time passes (for, keep_firing_for), not only on events.
func (r *Rule) TimeDriven() bool { return r.For > 0 || r.KeepFiringFor > 0 }

// JoinKey returns the join key of ev for a sequence step: the values of the
// step's By paths joined with 0x1f ("" when the sequence has no join keys).
func (s *Sequence) JoinKey(step int, ev *ingest.Event) string {
	if s == nil || s.JoinLen == 0 || step < 0 || step >= len(s.Steps) {
		return ""
	}
	by := s.Steps[step].By
	if len(by) == 0 {
		return ""
	}
	n := 0
	vals := make([]string, len(by))
	for i, p := range by {
		vals[i], _ = ev.LookupFirst(p)
		n += len(vals[i]) + 1
	}
	b := make([]byte, 0, n)
	for i, v := range vals {
		if i > 0 {
			b = append(b, 0x1f)
		}
		b = append(b, v...)
	}
	return string(b)
}

// Escalation is one step of severity escalation: from Count matching
// events on, the incident has Severity.
type Escalation struct {
	Count    int
	Severity string
}

// SeverityAt returns the rule's severity for an incident of count events.
func (r *Rule) SeverityAt(count int) string {
	sev := r.Severity
	for _, e := range r.Escalate {
		if count >= e.Count {
			sev = e.Severity
		}
	}
	return sev
}

// DistinctRef is one distinct(selector, field) use of a condition.
type DistinctRef struct {
	Selector int    // index into Rule.Selectors
	Field    string // event path
}

// Selector is one named, compiled match expression.
type Selector struct {
	Name string
	Expr string
	// Line and Col locate the expression in its file.
	Line, Col int

	prog  program
	needs []literal // conditions every match must satisfy; checked before expr
	lists map[string][]string
}

// Aggregates is what the correlator exposes to a `when` condition for one
// group: counts and distinct values per selector within the window.
type Aggregates interface {
	// Count returns how many events matched the selector at index sel.
	Count(sel int) int
	// Distinct returns how many distinct values the event path field took
	// among the events that matched the selector at index sel.
	Distinct(sel int, field string) int
}

// AppendGroupKey appends the group key of ev (see GroupKey) to b without
// building the group's values.
func (r *Rule) AppendGroupKey(b []byte, ev *ingest.Event) []byte {
	for i, p := range r.By {
		if i > 0 {
			b = append(b, 0x1f)
		}
		v, _ := ev.LookupFirst(p)
		b = append(b, p...)
		b = append(b, '=')
		b = append(b, v...)
	}
	return b
}

// GroupKey returns the group values of ev for the rule's By paths and a key
// string that identifies the group. Absent paths give empty values. A path
// may list alternatives, "fields.prev_node|node": the first present one counts.
func (r *Rule) GroupKey(ev *ingest.Event) (key string, group map[string]string) {
	group = make(map[string]string, len(r.By))
	for _, p := range r.By {
		group[p], _ = ev.LookupFirst(p)
	}
	return r.GroupKeyOf(group), group
}

// GroupKeyOf returns the key string of the group with the given values of
// the rule's By paths (a missing one is empty), as GroupKey does.
func (r *Rule) GroupKeyOf(group map[string]string) string {
	n := 0
	for _, p := range r.By {
		n += len(p) + len(group[p]) + 2
	}
	b := make([]byte, 0, n)
	for i, p := range r.By {
		if i > 0 {
			b = append(b, 0x1f)
		}
		b = append(b, p...)
		b = append(b, '=')
		b = append(b, group[p]...)
	}
	return string(b)
}
