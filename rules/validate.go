package rules

import (
	"fmt"
	"strconv"
	"strings"
	"text/template"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/klaxon-dev/klaxon/ingest"
)

// ruleBuilder is phase 2 of one rule: it validates and compiles the
// sections of an effective rule document into a Rule.
type ruleBuilder struct {
	l    *loader
	d    *ruleDoc
	r    *Rule
	name string
}

// buildRule validates and compiles d. It returns nil when the rule has
// errors (reported to l).
func (l *loader) buildRule(d *ruleDoc) *Rule {
	f := d.node.f
	b := &ruleBuilder{l: l, d: d, name: d.name, r: &Rule{
		File: f.name, Line: d.node.Line, Col: d.node.Column, Severity: DefaultSeverity,
		By: []string{"node"}, lists: f.lists, macros: f.macros,
	}}
	nerr := len(l.errs)
	b.meta()
	b.match()
	b.correlate()
	b.timing()
	b.exceptions()
	b.templates()
	b.templateValues()
	b.actions()
	if d.bad || len(l.errs) > nerr || b.r.ID == "" {
		return nil
	}
	b.r.hash = b.r.computeHash()
	return b.r
}

func (b *ruleBuilder) errf(n yn, format string, args ...any) {
	b.l.errf(n, b.name, format, args...)
}

// meta: id, title, summary, severity, escalate, runbook, labels and
// inhibited_by.
func (b *ruleBuilder) meta() {
	d, r, l := b.d, b.r, b.l
	r.ID = d.id
	b.origin("id", d.ID)
	if !d.ID.ok() {
		b.errf(d.node, "missing id")
	}
	if s, ok := b.text(d.Title, "title"); ok {
		r.Title = s
	}
	if s, ok := b.text(d.Summary, "summary"); ok {
		r.Summary = s
	}
	if s, ok := b.text(d.Runbook, "runbook"); ok {
		r.Runbook = s
	}
	b.note("severity", DefaultSeverity)
	if d.Severity.ok() {
		b.origin("severity", d.Severity)
		if s, ok := l.scalar(d.Severity, b.name, "severity"); ok {
			if sev, good := b.severity(d.Severity, s); good {
				r.Severity = sev
			}
		}
	}
	if d.Escalate.ok() {
		b.origin("escalate", d.Escalate)
		r.Escalate = b.parseEscalate(d.Escalate)
	}
	if d.Labels.ok() || len(d.labels) > 0 {
		r.Labels = b.labels()
	}
	if d.InhibitedBy.ok() {
		b.origin("inhibited_by", d.InhibitedBy)
		r.InhibitedBy = b.parseInhibit(d.InhibitedBy)
	}
	if d.disabled.ok() {
		b.origin("enabled", d.disabled)
	} else if d.enabled.ok() {
		b.origin("enabled", d.enabled)
	}
}

// text reads an optional single-value key (title, summary, runbook).
func (b *ruleBuilder) text(n yn, what string) (string, bool) {
	if !n.ok() {
		return "", false
	}
	b.origin(what, n)
	return b.l.scalar(n, b.name, what)
}

func (b *ruleBuilder) severity(n yn, s string) (string, bool) {
	if contains(Severities, s) {
		return s, true
	}
	msg := fmt.Sprintf("invalid severity %q (want one of %s)", s, strings.Join(Severities, ", "))
	if sug := suggest(s, Severities); sug != "" {
		msg = fmt.Sprintf("invalid severity %q (did you mean %q?)", s, sug)
	}
	b.errf(n, "%s", msg)
	return "", false
}

// labels: the rule's labels merged with those overrides set.
func (b *ruleBuilder) labels() map[string]string {
	if b.d.Labels.null() && len(b.d.labels) == 0 {
		return nil
	}
	out := map[string]string{}
	for _, e := range b.d.labels {
		b.origin("labels."+e.name(), e.key)
		if s, ok := b.l.scalar(e.val, b.name, "labels."+e.name()); ok {
			out[e.name()] = s
		}
	}
	return out
}

// match: the named selectors, compiled with the lists and macros of the
// rule's file.
func (b *ruleBuilder) match() {
	n, r := b.d.Match, b.r
	if !n.ok() {
		b.errf(b.d.node, "missing match (named selectors)")
		return
	}
	if n.Kind != yaml.MappingNode {
		b.errf(n, "match: expected a mapping of selector names to expressions")
		return
	}
	if len(n.Content) == 0 {
		b.errf(n, "match: at least one selector is required")
		return
	}
	if len(n.Content)/2 > MaxSelectors {
		b.errf(n, "match: too many selectors (%d; the limit is %d)", len(n.Content)/2, MaxSelectors)
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.sub(n.Content[i]), n.sub(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || !selNameRe.MatchString(k.Value) {
			b.errf(k, "match: invalid selector name %q (letters, digits and _, not starting with a digit)", k.Value)
			continue
		}
		if seen[k.Value] {
			b.errf(k, "match: selector %q given twice", k.Value)
			continue
		}
		seen[k.Value] = true
		b.origin("match."+k.Value, v)
		if sel := b.compileSel(v, "match."+k.Value, "selector "+k.Value, k.Value); sel != nil {
			r.Selectors = append(r.Selectors, sel)
		}
	}
}

// compileSel compiles the expression of n (a selector or an exception)
// with the lists and macros of n's file; key names it in YAML, what in
// messages about the expression.
func (b *ruleBuilder) compileSel(n yn, key, what, name string) *Selector {
	f := n.f
	src, ok := b.l.scalar(n, b.name, key)
	if !ok {
		return nil
	}
	sel := &Selector{Name: name, Expr: src, lists: f.lists}
	sel.Line, sel.Col = f.exprPos(n.Node, src, 1, 0)
	prog, needs, errs := compileSelector(src, f.lists, f.macros)
	for _, e := range errs {
		l, c := f.exprPos(n.Node, src, e.line, e.col)
		b.l.errAt(f, l, c, b.name, "%s: %s", what, e.msg)
	}
	if len(errs) > 0 {
		return nil
	}
	for i := range prog.regexps {
		re := &prog.regexps[i]
		re.fileLine, re.fileCol = f.exprPos(n.Node, src, re.line, re.col)
	}
	sel.prog, sel.needs = prog, needs
	return sel
}

// correlate: by, params, sequence, absence, window and when.
func (b *ruleBuilder) correlate() {
	d, r := b.d, b.r
	c := d.corr
	if c == nil {
		c = &correlateDoc{}
	}
	b.note("correlate.by", "[node]")
	if c.By.ok() {
		b.origin("correlate.by", c.By)
		r.By = b.parseBy(c.By)
	}
	b.params()
	// Sequence and absence (they need the selectors).
	if c.Sequence.ok() {
		r.Sequence = b.parseSequence(c)
	}
	if c.Absence.ok() {
		r.Absence = b.parseAbsence(c)
		if c.Sequence.ok() {
			b.errf(c.Absence, "correlate: a rule has either sequence or absence, not both")
		}
		if c.When.ok() {
			b.errf(c.When, "correlate.when: a rule with absence takes no when (it fires when the expected event is missing)")
		}
	}
	b.window(c)
	b.when(c.When)
}

// window: correlate.window, else the span of the sequence or absence.
func (b *ruleBuilder) window(c *correlateDoc) {
	d, r := b.d, b.r
	switch {
	case !d.Correlate.ok():
		b.errf(d.node, "missing correlate (with at least window)")
	case c.Window.ok():
		if dur, ok := b.duration(c.Window, "correlate.window"); ok {
			r.Window = dur
			r.windowFile, r.windowLine, r.windowCol = c.Window.f.name, c.Window.Line, c.Window.Column
		}
	case r.Sequence != nil:
		r.Window = r.Sequence.Within
		b.note("correlate.window", "as correlate.sequence.within")
	case r.Absence != nil:
		r.Window = r.Absence.Within
		b.note("correlate.window", "as correlate.absence.within")
	case c.Sequence.ok() || c.Absence.ok():
		// Their errors are reported already.
	case d.corr != nil:
		b.errf(d.Correlate, "missing correlate.window")
	}
}

// when: the condition over the window's aggregates, with the rule's params.
func (b *ruleBuilder) when(n yn) {
	r := b.r
	if !n.ok() {
		r.When = &Condition{nsel: len(r.Selectors)}
		return
	}
	b.origin("correlate.when", n)
	src, ok := b.l.scalar(n, b.name, "correlate.when")
	if !ok {
		return
	}
	c, distincts, errs := compileCondition(src, b.selectorNames(), r.Params)
	for _, e := range errs {
		l, col := n.f.exprPos(n.Node, src, e.line, e.col)
		b.l.errAt(n.f, l, col, b.name, "correlate.when: %s", e.msg)
	}
	if c != nil {
		c.Line, c.Col = n.f.exprPos(n.Node, src, 1, 0)
		r.When = c
		r.Distincts = distincts
	}
}

// selectorNames are the names a condition may use. When a selector failed
// to compile the rule is dropped, but its name still counts as known (no
// second error for it).
func (b *ruleBuilder) selectorNames() []string {
	r, m := b.r, b.d.Match
	names := make([]string, len(r.Selectors))
	for i, s := range r.Selectors {
		names[i] = s.Name
	}
	if m.ok() && m.Kind == yaml.MappingNode && len(m.Content)/2 != len(names) {
		names = names[:0]
		for i := 0; i < len(m.Content); i += 2 {
			names = append(names, m.Content[i].Value)
		}
	}
	return names
}

// timing: resolve.after, for and keep_firing_for.
func (b *ruleBuilder) timing() {
	d, r := b.d, b.r
	r.ResolveAfter = r.Window
	b.note("resolve.after", "as the window")
	if r.Absence != nil {
		// An absence resolves when the expected event arrives.
		r.ResolveAfter = 0
		b.note("resolve.after", "0, an absence resolves when the expected event arrives")
	}
	after := d.res.After
	if after.ok() {
		if dur, ok := b.duration(after, "resolve.after"); ok {
			r.ResolveAfter = dur
			r.ResolveGiven = true
			r.resolveFile, r.resolveLine, r.resolveCol = after.f.name, after.Line, after.Column
		}
	}
	if n := d.For; n.ok() {
		if dur, ok := b.duration(n, "for"); ok {
			r.For = dur
		}
		if d.corr != nil && d.corr.Absence.ok() {
			b.errf(n, "for: an absence rule waits by itself (absence.within); it takes no for")
		}
	}
	if n := d.KeepFiringFor; n.ok() {
		if dur, ok := b.duration(n, "keep_firing_for"); ok {
			r.KeepFiringFor = dur
		}
		switch {
		case after.ok() && after.ov != nil && n.ov == nil:
			// An override added the one the rule had not: say it there.
			b.errf(after, "resolve.after: give either keep_firing_for or resolve.after, not both")
		case after.ok():
			b.errf(n, "keep_firing_for: give either keep_firing_for or resolve.after, not both")
		}
	}
}

// templates: title and summary.
func (b *ruleBuilder) templates() {
	r := b.r
	r.tmpl = &templates{}
	r.tmpl.title = b.template(b.d.Title, "title", r.Title)
	r.tmpl.summary = b.template(b.d.Summary, "summary", r.Summary)
}

func (b *ruleBuilder) template(n yn, what, src string) *template.Template {
	if !n.ok() || src == "" {
		return nil
	}
	t, line, msg := parseTemplate(what, src)
	if t != nil {
		return t
	}
	l, c := n.f.exprPos(n.Node, src, line, 0)
	if line == 0 {
		l, c = n.Line, n.Column
	}
	b.l.errAt(n.f, l, c, b.name, "%s: bad template: %s", what, msg)
	return nil
}

// listItems returns the items of a list of scalars given as a list or as
// one scalar (none for null); false for another kind of node.
func listItems(n yn) ([]*yaml.Node, bool) {
	switch {
	case n.Kind == yaml.SequenceNode:
		return n.Content, true
	case n.Kind == yaml.ScalarNode && n.Tag != "!!null":
		return []*yaml.Node{n.Node}, true
	case n.Kind == yaml.ScalarNode:
		return nil, true
	}
	return nil, false
}

// eachScalar calls fn with the scalar items of n; the others are reported
// under key.
func (b *ruleBuilder) eachScalar(n yn, items []*yaml.Node, key string, fn func(it yn, s string)) {
	for _, it := range items {
		it := n.sub(it)
		if s, ok := b.l.scalar(it, b.name, key); ok {
			fn(it, s)
		}
	}
}

func (b *ruleBuilder) parseBy(n yn) []string {
	items, ok := listItems(n)
	if !ok {
		b.errf(n, "correlate.by: expected a list of event paths")
		return []string{"node"}
	}
	out := []string{}
	b.eachScalar(n, items, "correlate.by", func(it yn, s string) {
		if !ingest.ValidPaths(s) {
			msg := fmt.Sprintf("correlate.by: invalid event path %q (want id, node, node_id, source, kind, level, msg or fields.<name>)", s)
			if sug := suggest(s, []string{"id", "node", "node_id", "source", "kind", "level", "msg"}); sug != "" {
				msg = fmt.Sprintf("correlate.by: invalid event path %q (did you mean %q?)", s, sug)
			}
			b.errf(it, "%s", msg)
			return
		}
		if contains(out, s) {
			b.errf(it, "correlate.by: %q given twice", s)
			return
		}
		out = append(out, s)
	})
	return out
}

// duration reads the positive duration n of the part what, and records
// where it came from.
func (b *ruleBuilder) duration(n yn, what string) (time.Duration, bool) {
	b.origin(what, n)
	s, ok := b.l.scalar(n, b.name, what)
	if !ok {
		return 0, false
	}
	d, err := ParseDuration(s)
	if err != nil {
		b.errf(n, "%s: bad duration %q (want e.g. 90s, 15m, 2h, 1d)", what, s)
		return 0, false
	}
	if d <= 0 {
		b.errf(n, "%s: the duration must be positive, not %q", what, s)
		return 0, false
	}
	return d, true
}

// parseEscalate reads escalate: a list of {count, severity} steps with
// increasing counts.
func (b *ruleBuilder) parseEscalate(v yn) []Escalation {
	if v.Kind != yaml.SequenceNode {
		b.errf(v, "escalate: expected a list of {count, severity}")
		return nil
	}
	var out []Escalation
	for _, it := range v.Content {
		it := v.sub(it)
		if it.Kind != yaml.MappingNode {
			b.errf(it, "escalate: expected {count: N, severity: S}")
			continue
		}
		var doc struct {
			Count    yn `yaml:"count"`
			Severity yn `yaml:"severity"`
		}
		b.l.decodeKeys(it, b.name, &doc, nil)
		e, ok := b.escalation(doc.Count, doc.Severity)
		if !ok {
			continue
		}
		if e.Count == 0 || e.Severity == "" {
			b.errf(it, "escalate: each step needs count and severity")
			continue
		}
		if len(out) > 0 && e.Count <= out[len(out)-1].Count {
			b.errf(it, "escalate: counts must increase (%d after %d)", e.Count, out[len(out)-1].Count)
			continue
		}
		out = append(out, e)
	}
	return out
}

func (b *ruleBuilder) escalation(count, sev yn) (Escalation, bool) {
	var e Escalation
	ok := true
	if count.ok() {
		s, good := b.l.scalar(count, b.name, "escalate.count")
		n, err := strconv.Atoi(s)
		switch {
		case !good:
			ok = false
		case err != nil || n < 1:
			b.errf(count, "escalate.count: %q is not a positive integer", s)
			ok = false
		default:
			e.Count = n
		}
	}
	if sev.ok() {
		s, good := b.l.scalar(sev, b.name, "escalate.severity")
		switch {
		case !good:
			ok = false
		case !contains(Severities, s):
			b.errf(sev, "escalate.severity: invalid severity %q (want one of %s)", s, strings.Join(Severities, ", "))
			ok = false
		default:
			e.Severity = s
		}
	}
	return e, ok
}

// parseInhibit reads inhibited_by: a list of rule ids.
func (b *ruleBuilder) parseInhibit(n yn) []string {
	items, ok := listItems(n)
	if !ok {
		b.errf(n, "inhibited_by: expected a list of rule ids")
		return nil
	}
	var out []string
	b.eachScalar(n, items, "inhibited_by", func(it yn, s string) {
		switch {
		case !ruleIDRe.MatchString(s):
			b.errf(it, "inhibited_by: invalid rule id %q", s)
		case s == b.name:
			b.errf(it, "inhibited_by: a rule cannot inhibit itself")
		case contains(out, s):
			b.errf(it, "inhibited_by: %q given twice", s)
		default:
			out = append(out, s)
			b.r.inhibitPos = append(b.r.inhibitPos, [2]int{it.Line, it.Column})
		}
	})
	return out
}
