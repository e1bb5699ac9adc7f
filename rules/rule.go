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

	// File and Line locate the rule in its file.
	File string
	Line int
	// Col is the column of the rule's first key.
	Col int

	tmpl  *templates
	lists map[string][]string // the lists of the rule's file
	hash  string
	// position of resolve.after when given (for lint)
	resolveLine, resolveCol int
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

// GroupKey returns the group values of ev for the rule's By paths and a key
// string that identifies the group. Absent paths give empty values. A path
// may list alternatives, "fields.prev_node|node": the first present one counts.
func (r *Rule) GroupKey(ev *ingest.Event) (key string, group map[string]string) {
	group = make(map[string]string, len(r.By))
	n := 0
	for _, p := range r.By {
		v, _ := ev.LookupFirst(p)
		group[p] = v
		n += len(p) + len(v) + 2
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
	return string(b), group
}
