package rules

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// parseSequence reads correlate.sequence:
//
//	sequence:
//	  within: 10m              # the last step at most this long after the first
//	  by: [fields.alloc_id]    # optional join key of every step
//	  steps:
//	    - restarting           # a selector name
//	    - {match: exhausted, by: [fields.alloc_id]}   # or a step with its own join key
func (b *ruleBuilder) parseSequence(c *correlateDoc) *Sequence {
	if c.seq == nil {
		return nil // not a mapping: reported in phase 1
	}
	n, doc := c.Sequence, c.seq
	b.origin("correlate.sequence", n)
	sq := &Sequence{Line: n.Line, Col: n.Column}
	var defBy []string
	ok := true
	if doc.Within.ok() {
		d, good := b.duration(doc.Within, "correlate.sequence.within")
		sq.Within, ok = d, good
	}
	if doc.By.ok() {
		defBy = b.parseBy(doc.By)
	}
	if sq.Within == 0 && ok {
		b.errf(n, "correlate.sequence: missing within (the longest time from the first step to the last)")
		ok = false
	}
	if !doc.Steps.ok() {
		b.errf(n, "correlate.sequence: missing steps")
		return nil
	}
	steps, good := b.seqSteps(doc.Steps, defBy)
	sq.Steps, ok = steps, ok && good
	for _, st := range sq.Steps {
		if len(st.By) > 0 && sq.JoinLen == 0 {
			sq.JoinLen = len(st.By)
		}
	}
	for i, st := range sq.Steps {
		if len(st.By) != sq.JoinLen {
			b.l.errAt(n.f, st.Line, st.Col, b.name, "correlate.sequence.steps[%d]: every step needs a join key of %d paths (by), like the others", i, sq.JoinLen)
			ok = false
		}
	}
	if !ok {
		return nil
	}
	return sq
}

// seqSteps reads correlate.sequence.steps.
func (b *ruleBuilder) seqSteps(n yn, defBy []string) ([]SeqStep, bool) {
	if n.Kind != yaml.SequenceNode || len(n.Content) < 2 {
		b.errf(n, "correlate.sequence.steps: expected a list of at least two steps (selector names, or {match, by})")
		return nil, false
	}
	var steps []SeqStep
	ok := true
	for i, it := range n.Content {
		it := n.sub(it)
		st := SeqStep{Line: it.Line, Col: it.Column, By: defBy}
		what := fmt.Sprintf("correlate.sequence.steps[%d]", i)
		switch it.Kind {
		case yaml.ScalarNode:
			sel, good := b.selectorRef(it, what)
			st.Selector, ok = sel, ok && good
		case yaml.MappingNode:
			var doc struct {
				Match yn `yaml:"match"`
				By    yn `yaml:"by"`
			}
			b.l.decodeKeys(it, b.name, &doc, nil)
			if doc.By.ok() {
				st.By = b.parseBy(doc.By)
			}
			if !doc.Match.ok() {
				b.errf(it, "%s: missing match (a selector name)", what)
				ok = false
				continue
			}
			sel, good := b.selectorRef(doc.Match, what+".match")
			st.Selector, ok = sel, ok && good
		default:
			b.errf(it, "%s: expected a selector name or {match, by}", what)
			ok = false
			continue
		}
		steps = append(steps, st)
	}
	return steps, ok
}

// parseAbsence reads correlate.absence: {after: A, expect: B, within: T}.
func (b *ruleBuilder) parseAbsence(c *correlateDoc) *Absence {
	if c.abs == nil {
		return nil // not a mapping: reported in phase 1
	}
	n, doc := c.Absence, c.abs
	b.origin("correlate.absence", n)
	a := &Absence{Line: n.Line, Col: n.Column}
	ok := true
	if doc.After.ok() {
		sel, good := b.selectorRef(doc.After, "correlate.absence.after")
		a.After, ok = sel, ok && good
	}
	if doc.Expect.ok() {
		sel, good := b.selectorRef(doc.Expect, "correlate.absence.expect")
		a.Expect, ok = sel, ok && good
	}
	if doc.Within.ok() {
		d, good := b.duration(doc.Within, "correlate.absence.within")
		a.Within, ok = d, ok && good
	}
	for i, have := range []bool{doc.After.ok(), doc.Expect.ok(), doc.Within.ok()} {
		if !have {
			b.errf(n, "correlate.absence: missing %s", absenceKeys[i])
			ok = false
		}
	}
	if ok && a.After == a.Expect {
		b.errf(n, "correlate.absence: after and expect name the same selector")
		ok = false
	}
	if !ok {
		return nil
	}
	return a
}

// selectorRef resolves a selector name used by sequence or absence. A name
// that is in match but failed to compile gives no second error.
func (b *ruleBuilder) selectorRef(n yn, what string) (int, bool) {
	name, ok := b.l.scalar(n, b.name, what)
	if !ok {
		return 0, false
	}
	if i := b.r.SelectorIndex(name); i >= 0 {
		return i, true
	}
	var names []string
	if m := b.d.Match; m.ok() && m.Kind == yaml.MappingNode {
		for i := 0; i < len(m.Content); i += 2 {
			if m.Content[i].Value == name {
				return 0, false // reported where it is defined
			}
			names = append(names, m.Content[i].Value)
		}
	}
	msg := fmt.Sprintf("%s: unknown selector %q", what, name)
	if sug := suggest(name, names); sug != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", sug)
	} else if len(names) > 0 {
		msg += " (selectors: " + strings.Join(names, ", ") + ")"
	}
	b.errf(n, "%s", msg)
	return 0, false
}
