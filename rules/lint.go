package rules

import (
	"fmt"
	"sort"
	"strings"

	"github.com/expr-lang/expr/ast"

	"github.com/klaxon-dev/klaxon/ingest"
)

// knownSources are the values of Event.Source.
var knownSources = []string{ingest.SourceNomadLog, ingest.SourceNomadEvent, ingest.SourceWinEvt, ingest.SourceIncident, ingest.SourceNodeFact, ingest.SourceAction}

// streamFields are the fields the event-stream decoder (ingest/nomadevents)
// sets; a selector of source nomad.event reading another field never sees
// it. rules' tests check the list against the decoder's output.
var streamFields = map[string]bool{
	"address": true, "alloc_id": true, "blocked_eval": true, "client_description": true,
	"client_status": true, "datacenter": true, "deployment_id": true, "desired_description": true,
	"desired_status": true, "drain": true, "driver_error": true, "eligibility": true, "eval_id": true,
	"exit_code": true, "failed": true, "failed_task_groups": true, "job": true, "kill_reason": true,
	"last_event": true, "msg": true, "namespace": true, "node_class": true, "node_pool": true,
	"oom_killed": true, "port": true, "prev_client_status": true, "prev_node": true,
	"prev_node_id": true, "prev_status": true, "previous_alloc": true, "queued": true,
	"replaces_node": true, "restart_reason": true, "service": true, "signal": true, "status": true,
	"status_description": true, "stop": true, "task": true, "task_group": true, "triggered_by": true,
	"type": true, "unique_hostname": true, "version": true, "from_index": true, "to_index": true,
	"kernel": true, "running": true, "prev_running": true, "job_meta": true,
}

// incidentFields are the fields of the events of source klaxon.incident
// (besides the group values).
var incidentFields = map[string]bool{"status": true, "severity": true, "count": true, "incident_id": true, "title": true, "group": true}

// Finding is one lint finding.
type Finding struct {
	File      string
	Line, Col int
	Rule      string
	Severity  string // warning or error
	Msg       string
}

// String formats the finding as "file:line:col: severity: rule <id>: msg".
func (f Finding) String() string {
	return fmt.Sprintf("%s:%d:%d: %s: rule %s: %s", f.File, f.Line, f.Col, f.Severity, f.Rule, f.Msg)
}

// Lint reports questionable rule definitions. Errors: a window shorter
// than a sequence's span, selectors that can never match (contradicting
// literals, a source klaxon never produces), rules inhibiting each other,
// an exception that always holds. Warnings: selectors neither `when`,
// sequence nor absence uses, constant selectors, fields the event stream
// never sets, chained rules naming unknown or disabled rules, selectors
// without any literal prefilter, a resolve period shorter than the window,
// a missing runbook, costly regular expressions, params `when` does not
// read and exceptions that exclude nothing. Load errors (unknown keys,
// functions, selectors, duplicate ids) are not findings: loading fails on
// them.
func Lint(set *Set) []Finding {
	var out []Finding
	for _, r := range set.Rules {
		lt := &linter{set: set, r: r}
		lt.rule()
		for i, s := range r.Selectors {
			lt.selector(i, s)
		}
		lt.params()
		lt.exceptions()
		out = append(out, lt.out...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].File == out[j].File && out[i].Line == out[j].Line && out[i].Col == out[j].Col {
			return false
		}
		a, b := out[i], out[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	return out
}

// linter collects the findings of one rule.
type linter struct {
	set *Set
	r   *Rule
	out []Finding
}

func (lt *linter) add(line, col int, format string, args ...any) {
	lt.addIn(lt.r.File, "warning", line, col, format, args...)
}

func (lt *linter) addErr(line, col int, format string, args ...any) {
	lt.addIn(lt.r.File, "error", line, col, format, args...)
}

func (lt *linter) addIn(file, severity string, line, col int, format string, args ...any) {
	lt.out = append(lt.out, Finding{File: file, Line: line, Col: col, Rule: lt.r.ID, Severity: severity, Msg: fmt.Sprintf(format, args...)})
}

// rule: findings about the rule as a whole.
func (lt *linter) rule() {
	r, set := lt.r, lt.set
	if r.Runbook == "" {
		lt.add(r.Line, r.Col, "no runbook: tell the on-call engineer what to do")
	}
	if sq := r.Sequence; sq != nil && r.Window < sq.Within {
		f, l, c := r.windowFile, r.windowLine, r.windowCol
		if l == 0 {
			f, l, c = r.File, sq.Line, sq.Col
		}
		lt.addIn(f, "error", l, c, "the window (%s) is shorter than the sequence's span (within %s): steps that far apart are evicted before the sequence completes",
			Duration(r.Window), Duration(sq.Within))
	}
	for i, id := range r.InhibitedBy {
		l, c := r.Line, r.Col
		if i < len(r.inhibitPos) {
			l, c = r.inhibitPos[i][0], r.inhibitPos[i][1]
		}
		if d := set.DisabledRule(id); d != nil {
			lt.add(l, c, "inhibited_by: rule %s is disabled (%s): it never inhibits", id, d.disabled)
			continue
		}
		if o := set.Rule(id); o != nil && contains(o.InhibitedBy, r.ID) {
			lt.addErr(l, c, "rules %s and %s inhibit each other: whichever fires first silences the other", r.ID, id)
		}
	}
	if r.Absence == nil && r.ResolveAfter < r.Window && r.KeepFiringFor == 0 {
		f, l, c := r.resolveFile, r.resolveLine, r.resolveCol
		if l == 0 {
			f, l, c = r.File, r.Line, r.Col
		}
		lt.addIn(f, "warning", l, c, "resolve.after (%s) is shorter than the window (%s): the incident may resolve while the window still holds its evidence",
			Duration(r.ResolveAfter), Duration(r.Window))
	}
}

// selector: findings about the selector at index i.
func (lt *linter) selector(i int, s *Selector) {
	r, set := lt.r, lt.set
	if !r.usesSelector(i) {
		by := "when"
		switch {
		case r.Absence != nil:
			by = "absence"
		case r.Sequence != nil && (r.When == nil || r.When.prog == nil):
			by = "the sequence"
		case r.Sequence != nil:
			by = "when or the sequence"
		}
		lt.add(s.Line, s.Col, "selector %s is not used by %s (it only adds evidence)", s.Name, by)
	}
	if why := neverMatches(s.needs); why != "" {
		lt.addErr(s.Line, s.Col, "selector %s can never match: %s", s.Name, why)
	}
	if sources := requiredSources(s.needs); len(sources) == 1 && sources[0] == ingest.SourceNomadEvent && !s.prog.dynamic {
		for _, f := range s.prog.fieldRefs {
			if !streamFields[f] {
				msg := fmt.Sprintf("selector %s reads fields.%s, which events of source nomad.event never have", s.Name, f)
				if sug := suggest(f, sortedKeys(streamFields)); sug != "" {
					msg += fmt.Sprintf(" (did you mean fields.%s?)", sug)
				}
				lt.add(s.Line, s.Col, "%s", msg)
			}
		}
	}
	for _, k := range incidentKinds(s.needs) {
		switch d := set.DisabledRule(k); {
		case d != nil:
			lt.add(s.Line, s.Col, "selector %s matches incidents of rule %q, which is disabled (%s)", s.Name, k, d.disabled)
		case set.Rule(k) == nil:
			lt.add(s.Line, s.Col, "selector %s matches incidents of rule %q, which is not loaded", s.Name, k)
		case k == r.ID:
			lt.add(s.Line, s.Col, "selector %s matches the rule's own incidents, which a rule never sees (no loops)", s.Name)
		}
	}
	if s.prog.constant {
		lt.add(s.Line, s.Col, "selector %s is %s: it does not read the event", s.Name, constantWhat(s))
	} else if len(s.needs) == 0 {
		lt.add(s.Line, s.Col, "selector %s has no literal need (like source == \"...\" or msg contains \"...\"): expr runs for every event", s.Name)
	}
	for _, re := range s.prog.regexps {
		if why := costlyRegexp(re.pattern); why != "" {
			lt.add(re.fileLine, re.fileCol, "selector %s: costly regular expression: %s", s.Name, why)
		}
	}
}

// constantWhat says what a constant selector always is.
func constantWhat(s *Selector) string {
	if b, ok := s.prog.p.Node().(*ast.BoolNode); ok {
		return fmt.Sprintf("always %v", b.Value)
	}
	return "constant"
}

// params: a param `when` does not read changes nothing.
func (lt *linter) params() {
	r := lt.r
	if len(r.Params) == 0 {
		return
	}
	src := ""
	if r.When != nil {
		src = r.When.Expr
	}
	for _, name := range sortedKeys(r.Params) {
		if substituteParams(src, map[string]any{name: 0}) != src {
			continue
		}
		o, _ := r.OriginOf("correlate.params." + name)
		file, l, c := o.File, o.Line, o.Col
		if file == "" {
			file, l, c = r.File, r.Line, r.Col
		}
		lt.addIn(file, "warning", l, c, "param %s is not used by when: setting it changes nothing", name)
	}
}

// exceptions: an exception that always holds silences the rule; one that
// can never hold, or only for sources none of the selectors matches,
// excludes nothing.
func (lt *linter) exceptions() {
	r := lt.r
	for _, e := range r.Exceptions {
		s := e.sel
		if s.prog.constant {
			if constantWhat(s) == "always true" {
				lt.addIn(e.File, "error", e.Line, e.Col, "exception %s is always true: the rule can never fire (to turn a rule off, use enabled: false)", e.Name)
			} else {
				lt.addIn(e.File, "warning", e.Line, e.Col, "exception %s is %s: it excludes nothing", e.Name, constantWhat(s))
			}
			continue
		}
		if why := neverMatches(s.needs); why != "" {
			lt.addIn(e.File, "warning", e.Line, e.Col, "exception %s can never match (%s): it excludes nothing", e.Name, why)
			continue
		}
		srcs := requiredSources(s.needs)
		if srcs == nil {
			continue
		}
		overlap := false
		for _, sel := range r.Selectors {
			ss := requiredSources(sel.needs)
			for _, src := range srcs {
				overlap = overlap || ss == nil || contains(ss, src)
			}
		}
		if !overlap {
			lt.addIn(e.File, "warning", e.Line, e.Col, "exception %s requires source %s, which none of the rule's selectors matches: it excludes nothing", e.Name, quoteAll(srcs))
		}
	}
}

// usesSelector reports whether the rule's condition (when, sequence or
// absence) refers to the selector at index i.
func (r *Rule) usesSelector(i int) bool {
	if a := r.Absence; a != nil {
		return i == a.After || i == a.Expect
	}
	if sq := r.Sequence; sq != nil {
		for _, st := range sq.Steps {
			if st.Selector == i {
				return true
			}
		}
		if r.When == nil || r.When.prog == nil {
			return false
		}
	}
	return r.When == nil || r.When.Uses(i)
}

// eqValues returns, per event path, the values a need allows when it is a
// plain equality (or list membership) on one path; ok is false otherwise.
func eqValues(l literal) (path string, vals []string, ok bool) {
	for i, p := range l.any {
		if p.op != opEq || p.fold {
			return "", nil, false
		}
		if i > 0 && p.path != path {
			return "", nil, false
		}
		path = p.path
		vals = append(vals, p.lit)
	}
	return path, vals, len(vals) > 0
}

// neverMatches explains why no event can satisfy every need, or "".
func neverMatches(needs []literal) string {
	allowed := map[string][]string{}
	for _, l := range needs {
		for _, p := range l.any {
			if c := prepare(p); c.never && len(l.any) == 1 {
				return fmt.Sprintf("lower(%s) is compared with %q, which has upper-case letters", p.path, p.lit)
			}
		}
		path, vals, ok := eqValues(l)
		if !ok {
			continue
		}
		if prev, seen := allowed[path]; seen {
			var both []string
			for _, v := range vals {
				if contains(prev, v) {
					both = append(both, v)
				}
			}
			if len(both) == 0 {
				return fmt.Sprintf("%s must equal %s and %s at once", path, quoteAll(prev), quoteAll(vals))
			}
			vals = both
		}
		allowed[path] = vals
	}
	if srcs, ok := allowed["source"]; ok {
		known := false
		for _, s := range srcs {
			known = known || contains(knownSources, s)
		}
		if !known {
			return fmt.Sprintf("source %s is none of %s", quoteAll(srcs), strings.Join(knownSources, ", "))
		}
	}
	return ""
}

func quoteAll(vals []string) string {
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = fmt.Sprintf("%q", v)
	}
	if len(q) == 1 {
		return q[0]
	}
	return "one of " + strings.Join(q, ", ")
}

// requiredSources returns the sources a selector requires (nil: any).
func requiredSources(needs []literal) []string {
	for _, l := range needs {
		if path, vals, ok := eqValues(l); ok && path == "source" {
			return vals
		}
	}
	return nil
}

// incidentKinds returns the rule ids a selector of source klaxon.incident
// requires as kind (nil when it requires none or is not such a selector).
func incidentKinds(needs []literal) []string {
	srcs := requiredSources(needs)
	if len(srcs) != 1 || srcs[0] != ingest.SourceIncident {
		return nil
	}
	for _, l := range needs {
		if path, vals, ok := eqValues(l); ok && path == "kind" {
			return vals
		}
	}
	return nil
}
