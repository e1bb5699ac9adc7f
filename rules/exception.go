package rules

import (
	"fmt"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Exception keeps events from a rule, as Falco's exceptions do: an event
// that an exception matches counts for none of the rule's selectors.
// Exceptions are expr selectors (compiled, type-checked and bounded like
// the rule's own), named, and added by overrides. They only narrow what a
// rule matches: the selector index and MayMatchRaw never take their
// literals as something a rule needs.
type Exception struct {
	Name string
	Expr string
	// File, Line and Col locate the expression (in the override's file).
	File      string
	Line, Col int

	sel    *Selector
	macros map[string]*Macro // of the override's file
}

// Eval reports whether the exception matches ev (for tests and tools).
func (e *Exception) Eval(ev *ingest.Event) (bool, error) { return e.sel.Eval(ev) }

// Needs describes the plain-string conditions every event the exception
// matches satisfies (the index checks them before running expr).
func (e *Exception) Needs() []string { return e.sel.Needs() }

// Errors returns how many times the exception failed at run time (each
// counted as no match: the event is not excluded).
func (e *Exception) Errors() uint64 { return e.sel.Errors() }

// exceptions: phase 2 of the exceptions overrides gave the rule, compiled
// with the lists and macros of the override's file.
func (b *ruleBuilder) exceptions() {
	for i, e := range b.d.exceptions {
		if i >= MaxExceptions {
			break // reported when the overrides were applied
		}
		key := "exceptions." + e.name()
		b.origin(key, e.val)
		sel := b.compileSel(e.val, key, "exception "+e.name(), e.name())
		if sel == nil {
			continue
		}
		b.r.Exceptions = append(b.r.Exceptions, &Exception{
			Name: e.name(), Expr: sel.Expr, File: e.val.f.name, Line: sel.Line, Col: sel.Col, sel: sel, macros: e.val.f.macros,
		})
	}
}

// Origin says where a part of an effective rule was defined.
type Origin struct {
	// Part names it as an override would: "severity", "labels.team",
	// "correlate.window", "correlate.params.restarts", "exceptions.batch".
	Part      string
	File      string
	Line, Col int
	// Override is set when an override gave the part.
	Override bool
	// Default says where the value comes from when no file gave it
	// ("the window", ...); File is then "".
	Default string
}

// String formats the origin as "file:line:col", "override at
// file:line:col" or "default: ...".
func (o Origin) String() string {
	switch {
	case o.File == "":
		return "default: " + o.Default
	case o.Override:
		return fmt.Sprintf("override at %s:%d:%d", o.File, o.Line, o.Col)
	}
	return fmt.Sprintf("%s:%d:%d", o.File, o.Line, o.Col)
}

// origin records where part came from (n, when given).
func (b *ruleBuilder) origin(part string, n yn) {
	if !n.ok() {
		return
	}
	b.setOrigin(Origin{Part: part, File: n.f.name, Line: n.Line, Col: n.Column, Override: n.ov != nil})
}

// note records the default a part takes.
func (b *ruleBuilder) note(part, def string) {
	b.setOrigin(Origin{Part: part, Default: def})
}

func (b *ruleBuilder) setOrigin(o Origin) {
	for i := range b.r.origins {
		if b.r.origins[i].Part == o.Part {
			b.r.origins[i] = o
			return
		}
	}
	b.r.origins = append(b.r.origins, o)
}

// Origins returns where each part of the rule was defined, in the order
// the rule reads; parts set by overrides have Override set.
func (r *Rule) Origins() []Origin { return append([]Origin(nil), r.origins...) }

// OriginOf returns the origin of one part.
func (r *Rule) OriginOf(part string) (Origin, bool) {
	for _, o := range r.origins {
		if o.Part == part {
			return o, true
		}
	}
	return Origin{}, false
}

// Overridden reports whether an override changed the rule.
func (r *Rule) Overridden() bool {
	for _, o := range r.origins {
		if o.Override {
			return true
		}
	}
	return false
}
