package rules

import (
	"fmt"
	"sort"

	"gopkg.in/yaml.v3"
)

// Overrides tune a rule defined in another file (the bundled rules, say)
// without copying it:
//
//	overrides:
//	  - rule: nomad.task.crash_loop
//	    enabled: false                 # take the rule out
//	    severity: critical
//	    labels: {team: payments}       # merged into the rule's labels
//	    correlate:
//	      window: 20m
//	      params: {restarts: 3}        # only params the rule declares
//	      sequence: {within: 45m}      # absence: {within: ...} likewise
//	    resolve: {after: 1h}
//	    for: 2m
//	    keep_firing_for: 10m
//	    exceptions:                    # events these match are not the rule's
//	      batch_jobs: fields.job != nil && fields.job startsWith "batch-"
//
// Overrides are applied to the rules' phase-1 documents before phase 2
// validates them, so a value an override sets is checked like the rule's
// own, with the override's position, and derived values (a window that
// follows the sequence, resolve.after that follows the window) follow it.
// Two overrides setting the same part of one rule are an error naming
// both; an overlay (the overrides of a rule test) is a layer above the
// rule files and replaces what they set.

// MaxExceptions bounds the exceptions of one rule.
const MaxExceptions = 64

// overridable lists what an override can set, for messages.
const overridable = "enabled, severity, labels, correlate.window, correlate.params, correlate.sequence.within, " +
	"correlate.absence.within, resolve.after, for, keep_firing_for and exceptions"

// overrideDoc is one item of overrides:.
type overrideDoc struct {
	Rule          yn `yaml:"rule"`
	Enabled       yn `yaml:"enabled"`
	Severity      yn `yaml:"severity"`
	Labels        yn `yaml:"labels"`
	Correlate     yn `yaml:"correlate"`
	Resolve       yn `yaml:"resolve"`
	For           yn `yaml:"for"`
	KeepFiringFor yn `yaml:"keep_firing_for"`
	Exceptions    yn `yaml:"exceptions"`

	node   yn
	target string // the rule id, when valid
	corr   struct {
		Window   yn `yaml:"window"`
		Params   yn `yaml:"params"`
		Sequence yn `yaml:"sequence"`
		Absence  yn `yaml:"absence"`
	}
	seqWithin, absWithin yn
	res                  resolveDoc
	labels, params, excs []entry
}

// overrideHint explains why a key of a rule cannot be in an override.
func overrideHint(key string) string {
	switch key {
	case "id":
		return "an override names its rule with rule:, not id:"
	case "when":
		return "when cannot be overridden: set the thresholds it reads as params.<name> (correlate.params), or add exceptions"
	case "title", "summary", "escalate", "runbook", "match", "inhibited_by",
		"by", "steps", "after", "expect":
		return fmt.Sprintf("%s cannot be overridden (an override sets %s); to change what a rule matches add exceptions, or copy the rule under a new id", key, overridable)
	}
	return ""
}

// decodeOverrides is phase 1 of a file's overrides:.
func (l *loader) decodeOverrides(d *fileDoc) {
	n := d.Overrides
	for _, it := range l.fileList(n, "overrides", "overrides: expected a list of overrides ({rule: <id>, ...})") {
		if o := l.decodeOverride(n.sub(it)); o != nil {
			d.overrides = append(d.overrides, o)
		}
	}
}

func (l *loader) decodeOverride(n yn) *overrideDoc {
	if n.Kind != yaml.MappingNode {
		l.errf(n, "", "overrides: expected an override (a mapping with rule: <id> and what to change)")
		return nil
	}
	o := &overrideDoc{}
	n.ov = o
	o.node = n
	// The target first, so that every error can name the rule.
	for i := 0; i+1 < len(n.Content); i += 2 {
		if v := deref(n.Content[i+1]); n.Content[i].Value == "rule" && v.Kind == yaml.ScalarNode && ruleIDRe.MatchString(v.Value) {
			o.target = v.Value
		}
	}
	rule := o.target
	l.decodeKeys(n, rule, o, overrideHint)
	switch {
	case !o.Rule.ok():
		l.errf(n, "", "override: missing rule (the id of the rule to change)")
		return nil
	case o.target == "":
		if s, ok := l.scalar(o.Rule, "", "override: rule"); ok {
			l.errf(o.Rule, "", "override: invalid rule id %q", s)
		}
		return nil
	}
	l.decodeOverrideCorrelate(o)
	l.decodeResolve(o.Resolve, rule, &o.res, overrideHint)
	o.labels = l.decodeLabels(o.Labels, rule)
	if o.Exceptions.ok() {
		o.excs = l.decodeExceptions(o.Exceptions, rule)
	}
	if !o.Enabled.ok() && !o.Severity.ok() && len(o.labels) == 0 && !o.corr.Window.ok() && len(o.params) == 0 &&
		!o.seqWithin.ok() && !o.absWithin.ok() && !o.res.After.ok() && !o.For.ok() && !o.KeepFiringFor.ok() && len(o.excs) == 0 {
		l.errf(n, rule, "override: it changes nothing (an override sets %s)", overridable)
		return nil
	}
	return o
}

func (l *loader) decodeOverrideCorrelate(o *overrideDoc) {
	n, rule := o.Correlate, o.target
	if !n.ok() {
		return
	}
	if n.Kind != yaml.MappingNode {
		l.errf(n, rule, "correlate: expected a mapping with window, params, sequence or absence")
		return
	}
	l.decodeKeys(n, rule, &o.corr, overrideHint)
	if o.corr.Params.ok() {
		o.params = l.entries(o.corr.Params, rule, "correlate.params", "correlate.params: expected a mapping of names to numbers", "param")
	}
	within := func(n yn, what string) yn {
		if !n.ok() {
			return yn{}
		}
		if n.Kind != yaml.MappingNode {
			l.errf(n, rule, "correlate.%s: expected a mapping with within", what)
			return yn{}
		}
		var doc struct {
			Within yn `yaml:"within"`
		}
		l.decodeKeys(n, rule, &doc, overrideHint)
		return doc.Within
	}
	o.seqWithin = within(o.corr.Sequence, "sequence")
	o.absWithin = within(o.corr.Absence, "absence")
}

// decodeExceptions reads exceptions: a mapping of names to expressions.
func (l *loader) decodeExceptions(n yn, rule string) []entry {
	return l.namedEntries(n, rule, "exceptions", "exceptions: expected a mapping of names to expressions (like match)", "exception")
}

// applier applies the overrides of one load to the rule documents.
type applier struct {
	l *loader
	// claims: rule id and part → the node that set it.
	claims map[string]yn
}

// applyOverrides changes the documents of byID (the first document of
// each id) as the overrides say, in load order.
func (l *loader) applyOverrides(byID map[string]*ruleDoc, ovs []*overrideDoc) {
	a := &applier{l: l, claims: map[string]yn{}}
	for _, o := range ovs {
		d := byID[o.target]
		if d == nil {
			ids := make([]string, 0, len(byID))
			for id := range byID {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			msg := fmt.Sprintf("override: unknown rule %q", o.target)
			if sug := suggest(o.target, ids); sug != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", sug)
			}
			l.errf(o.Rule, "", "%s", msg)
			continue
		}
		nerr := len(l.errs)
		a.apply(o, d)
		if len(l.errs) > nerr {
			d.bad = true
		}
	}
}

func (a *applier) apply(o *overrideDoc, d *ruleDoc) {
	if o.Enabled.ok() {
		a.enabled(o, d)
	}
	if o.Severity.ok() && a.claim(o, "severity", o.Severity) {
		d.Severity = o.Severity
	}
	for _, e := range o.labels {
		if a.claim(o, "labels."+e.name(), e.key) {
			d.labels = setEntry(d.labels, e)
		}
	}
	a.correlate(o, d)
	if o.res.After.ok() && a.claim(o, "resolve.after", o.res.After) {
		d.res.After = o.res.After
	}
	if o.For.ok() && a.claim(o, "for", o.For) {
		d.For = o.For
	}
	if o.KeepFiringFor.ok() && a.claim(o, "keep_firing_for", o.KeepFiringFor) {
		d.KeepFiringFor = o.KeepFiringFor
	}
	for _, e := range o.excs {
		if a.claim(o, "exceptions."+e.name(), e.key) {
			d.exceptions = setEntry(d.exceptions, e)
		}
	}
	if len(d.exceptions) > MaxExceptions {
		a.l.errf(d.exceptions[MaxExceptions].key, o.target, "exceptions: too many exceptions (%d; the limit is %d)", len(d.exceptions), MaxExceptions)
	}
}

func (a *applier) enabled(o *overrideDoc, d *ruleDoc) {
	n := o.Enabled
	var on bool
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&on) != nil {
		a.l.errf(n, o.target, "enabled: expected true or false, not %q", n.Value)
		return
	}
	if !a.claim(o, "enabled", n) {
		return
	}
	if on {
		d.enabled, d.disabled = n, yn{}
	} else {
		d.disabled = n
	}
}

func (a *applier) correlate(o *overrideDoc, d *ruleDoc) {
	if !o.corr.Window.ok() && len(o.params) == 0 && !o.seqWithin.ok() && !o.absWithin.ok() {
		return
	}
	if d.corr == nil {
		a.l.errf(o.Correlate, o.target, "correlate: the rule has no correlate section to change")
		return
	}
	if n := o.corr.Window; n.ok() && a.claim(o, "correlate.window", n) {
		d.corr.Window = n
	}
	for _, e := range o.params {
		i := entryIndex(d.params, e.name())
		if i < 0 {
			a.unknownParam(o, d, e)
			continue
		}
		if a.claim(o, "correlate.params."+e.name(), e.val) {
			d.params[i].val = e.val
		}
	}
	if n := o.seqWithin; n.ok() {
		if d.corr.seq == nil {
			a.l.errf(o.corr.Sequence, o.target, "correlate.sequence: the rule has no sequence")
		} else if a.claim(o, "correlate.sequence.within", n) {
			d.corr.seq.Within = n
		}
	}
	if n := o.absWithin; n.ok() {
		if d.corr.abs == nil {
			a.l.errf(o.corr.Absence, o.target, "correlate.absence: the rule has no absence")
		} else if a.claim(o, "correlate.absence.within", n) {
			d.corr.abs.Within = n
		}
	}
}

func (a *applier) unknownParam(o *overrideDoc, d *ruleDoc, e entry) {
	var names []string
	for _, p := range d.params {
		names = append(names, p.name())
	}
	msg := fmt.Sprintf("correlate.params: the rule has no param %q", e.name()) +
		paramHint(e.name(), names, "it has no params; its thresholds are in its when")
	a.l.errf(e.key, o.target, "%s", msg)
}

// claim records that o sets part of its rule; a second override of the
// same layer setting it is an error naming both places.
func (a *applier) claim(o *overrideDoc, part string, n yn) bool {
	key := o.target + "\x00" + part
	if prev, ok := a.claims[key]; ok && prev.f.layer == n.f.layer {
		a.l.errf(n, o.target, "override: %s is set twice (also at %s:%d:%d); set it in one place", part, prev.f.name, prev.Line, prev.Column)
		return false
	}
	a.claims[key] = n
	return true
}

func entryIndex(es []entry, name string) int {
	for i, e := range es {
		if e.name() == name {
			return i
		}
	}
	return -1
}

// setEntry replaces the entry of e's name, or appends e.
func setEntry(es []entry, e entry) []entry {
	if i := entryIndex(es, e.name()); i >= 0 {
		out := append([]entry(nil), es...)
		out[i] = e
		return out
	}
	return append(append([]entry(nil), es...), e)
}
