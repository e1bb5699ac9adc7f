package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
)

// excDef is an exception in a rule's hash: its expression with the lists
// it uses and the macros it expands.
type excDef struct {
	Name, Expr string
	Lists      [][]string `json:",omitempty"`
	Macros     []string   `json:",omitempty"`
}

// computeHash hashes the normalized definition of the rule: everything that
// changes what it matches, groups, counts or renders, but not where it is.
func (r *Rule) computeHash() string {
	type sel struct{ Name, Expr string }
	def := struct {
		ID, Title, Summary, Severity, Runbook string
		Labels                                map[string]string
		Selectors                             []sel
		Lists                                 map[string][]string
		By                                    []string
		Window, ResolveAfter                  int64
		When                                  string
		Escalate                              []Escalation
		Macros                                map[string]string
		Sequence                              *Sequence
		Absence                               *Absence
		For, KeepFiringFor                    int64
		InhibitedBy                           []string
		// Exceptions are left out when there are none: the hashes of
		// rules without them stay those of earlier versions.
		Exceptions []excDef `json:",omitempty"`
	}{
		ID: r.ID, Title: r.Title, Summary: r.Summary, Severity: r.Severity, Runbook: r.Runbook,
		Labels: r.Labels, By: r.By, Window: int64(r.Window), ResolveAfter: int64(r.ResolveAfter),
		Lists: map[string][]string{}, Escalate: r.Escalate, Macros: map[string]string{},
		For: int64(r.For), KeepFiringFor: int64(r.KeepFiringFor), InhibitedBy: r.InhibitedBy,
	}
	if r.Sequence != nil {
		sq := *r.Sequence
		sq.Line, sq.Col = 0, 0
		sq.Steps = make([]SeqStep, len(r.Sequence.Steps))
		for i, st := range r.Sequence.Steps {
			sq.Steps[i] = SeqStep{Selector: st.Selector, By: st.By}
		}
		def.Sequence = &sq
	}
	if r.Absence != nil {
		a := *r.Absence
		a.Line, a.Col = 0, 0
		def.Absence = &a
	}
	for _, s := range r.Selectors {
		def.Selectors = append(def.Selectors, sel{s.Name, strings.TrimSpace(s.Expr)})
		for _, l := range s.prog.lists {
			def.Lists[l] = r.lists[l]
		}
		for _, m := range s.prog.macros {
			if mac := r.macros[m]; mac != nil {
				def.Macros[m] = strings.TrimSpace(mac.Expr)
			}
		}
	}
	for _, e := range r.Exceptions {
		x := excDef{Name: e.Name, Expr: strings.TrimSpace(e.Expr)}
		for _, l := range e.sel.prog.lists {
			x.Lists = append(x.Lists, e.sel.lists[l])
		}
		for _, m := range e.sel.prog.macros {
			if mac := e.macros[m]; mac != nil {
				x.Macros = append(x.Macros, m+"="+strings.TrimSpace(mac.Expr))
			}
		}
		def.Exceptions = append(def.Exceptions, x)
	}
	if r.When != nil {
		// As it runs: params are constants. A threshold turned into a
		// param with the same value keeps the hash.
		def.When = strings.TrimSpace(substituteParams(r.When.Expr, r.Params))
	}
	b, _ := json.Marshal(def)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Hash returns a stable content hash of the rule's normalized definition
// (sha256, hex). Rules with equal hashes behave alike; the correlator keeps
// the state of rules whose hash did not change across a reload.
func (r *Rule) Hash() string { return r.hash }
