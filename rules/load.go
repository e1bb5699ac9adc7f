package rules

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Severities lists the valid rule severities, least severe first.
var Severities = []string{"info", "warning", "error", "critical"}

// DefaultSeverity is the severity of a rule that names none.
const DefaultSeverity = "warning"

var (
	absenceKeys = []string{"after", "expect", "within"}

	ruleIDRe   = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
	selNameRe  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	listNameRe = selNameRe
)

// LoadDir loads the rule files of dir: *.yaml and *.yml in name order,
// except *_test.yaml and *_test.yml (rule tests). A directory without rule
// files gives an empty set.
func LoadDir(dir string) (*Set, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	var paths []string
	for _, e := range entries {
		if e.IsDir() || !isRuleFile(e.Name()) {
			continue
		}
		paths = append(paths, filepath.Join(dir, e.Name()))
	}
	sort.Strings(paths)
	return LoadFiles(paths...)
}

// isRuleFile reports whether a file name is a rule file (not a rule test,
// not hidden, not an editor's temporary file).
func isRuleFile(name string) bool {
	if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "#") || strings.HasPrefix(name, "~") {
		return false
	}
	ext := filepath.Ext(name)
	if ext != ".yaml" && ext != ".yml" {
		return false
	}
	return !strings.HasSuffix(strings.TrimSuffix(name, ext), "_test")
}

// LoadFiles loads the given rule files into one set, with the overrides
// they hold applied. All errors of all files are returned at once (joined
// *PosError, in file order and by position); on error no set is returned.
func LoadFiles(paths ...string) (*Set, error) {
	return LoadOverlay(paths)
}

// LoadOverlay loads the rule files paths like LoadFiles, then applies the
// overrides: of each overlay file on top of them (a rule test that tunes
// the rules for its cases). An overlay's other keys are not read; an
// overlay's override replaces what the rule files' overrides set.
func LoadOverlay(paths []string, overlays ...string) (*Set, error) {
	var ins []input
	for i, p := range append(append([]string(nil), paths...), overlays...) {
		data, err := os.ReadFile(p)
		ins = append(ins, input{name: p, data: data, err: err, overlay: i >= len(paths)})
	}
	l := newLoader()
	rs, disabled := l.run(ins)
	if len(l.errs) > 0 {
		return nil, l.joined()
	}
	s := newSet(rs, paths)
	s.disabled = disabled
	return s, nil
}

// ParseFile parses and compiles the rules of one file; name is used in
// positions. Its overrides apply to its own rules. It returns every error
// of the file at once (joined *PosError) together with the rules that
// compiled (disabled ones left out).
func ParseFile(name string, data []byte) ([]*Rule, error) {
	l := newLoader()
	rs, _ := l.run([]input{{name: name, data: data}})
	if len(l.errs) > 0 {
		return rs, l.joined()
	}
	return rs, nil
}

// input is one file to load.
type input struct {
	name    string
	data    []byte
	err     error // reading it
	overlay bool
}

func newLoader() *loader { return &loader{order: map[string]int{}} }

// run loads the inputs: phase 1 of every file, the overrides, phase 2 of
// every rule, then what rules say about each other.
func (l *loader) run(ins []input) (rules, disabled []*Rule) {
	var docs []*ruleDoc
	var ovs []*overrideDoc
	for i, in := range ins {
		f := &fileCtx{name: in.name, idx: i, lines: strings.Split(string(in.data), "\n"),
			lists: map[string][]string{}, macros: map[string]*Macro{}}
		if in.overlay {
			f.layer = 1
		}
		if _, seen := l.order[in.name]; !seen {
			l.order[in.name] = i
		}
		if in.err != nil {
			l.errs = append(l.errs, &PosError{File: in.name, Msg: in.err.Error()})
			continue
		}
		if d := l.decodeFile(f, in.data); d != nil {
			docs = append(docs, d.rules...)
			ovs = append(ovs, d.overrides...)
		}
	}
	byID := map[string]*ruleDoc{}
	for _, d := range docs {
		if d.id != "" && byID[d.id] == nil {
			byID[d.id] = d
		}
	}
	l.applyOverrides(byID, ovs)
	first := map[string]*Rule{}
	var all []*Rule
	for _, d := range docs {
		r := l.buildRule(d)
		if r == nil {
			continue
		}
		if f, dup := first[r.ID]; dup {
			l.errAt(d.node.f, r.Line, r.Col, r.ID, "duplicate rule id (also defined at %s:%d:%d)", f.File, f.Line, f.Col)
			continue
		}
		first[r.ID] = r
		all = append(all, r)
		if d.disabled.ok() {
			r.disabled = &Origin{Part: "enabled", File: d.disabled.f.name, Line: d.disabled.Line, Col: d.disabled.Column, Override: true}
			disabled = append(disabled, r)
		} else {
			rules = append(rules, r)
		}
	}
	l.errs = append(l.errs, checkRefs(all, first)...)
	return rules, disabled
}

// joined sorts the errors by file (in load order) and position and joins
// them.
func (l *loader) joined() error {
	sort.SliceStable(l.errs, func(i, j int) bool {
		a, b := l.errs[i], l.errs[j]
		if a.File != b.File {
			return l.order[a.File] < l.order[b.File]
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	errs := make([]error, len(l.errs))
	for i, e := range l.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// exprPos maps a position inside the value of scalar node n (1-based line,
// 0-based column in the value; line 0: unknown) to a file position.
func (f *fileCtx) exprPos(n *yaml.Node, value string, line, col int) (int, int) {
	if line <= 0 {
		return n.Line, n.Column
	}
	switch n.Style {
	case yaml.LiteralStyle, yaml.FoldedStyle:
		// Content starts on the line after the indicator, indented.
		first := n.Line + 1
		indent := -1
		for l := first; l <= len(f.lines); l++ {
			text := f.lines[l-1]
			if strings.TrimSpace(text) == "" {
				continue
			}
			indent = len(text) - len(strings.TrimLeft(text, " "))
			break
		}
		if indent < 0 {
			return n.Line, n.Column
		}
		if n.Style == yaml.FoldedStyle && line > 1 {
			return n.Line, n.Column
		}
		return first + line - 1, indent + 1 + col
	default:
		if line > 1 || n.Line < 1 || n.Line > len(f.lines) {
			return n.Line, n.Column
		}
		// Walk the source of the scalar to account for quotes and escapes.
		text := f.lines[n.Line-1]
		start := runeIndexToByte(text, n.Column-1)
		if start < 0 {
			return n.Line, n.Column + col
		}
		src := text[start:]
		off := 0 // runes of the source consumed
		i := 0   // byte index into src
		switch n.Style {
		case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
			i, off = 1, 1
		}
		for k := 0; k < col && i < len(src); k++ {
			switch {
			case n.Style == yaml.DoubleQuotedStyle && src[i] == '\\':
				w := 2
				if i+1 < len(src) {
					switch src[i+1] {
					case 'x':
						w = 4
					case 'u':
						w = 6
					case 'U':
						w = 10
					}
				}
				i += w
				off += w
			case n.Style == yaml.SingleQuotedStyle && src[i] == '\'':
				i += 2
				off += 2
			default:
				_, w := utf8.DecodeRuneInString(src[i:])
				i += w
				off++
			}
		}
		return n.Line, n.Column + off
	}
}

func runeIndexToByte(s string, runes int) int {
	if runes < 0 {
		return -1
	}
	n := 0
	for i := range s {
		if n == runes {
			return i
		}
		n++
	}
	if n == runes {
		return len(s)
	}
	return -1
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
	if r.When != nil {
		def.When = strings.TrimSpace(r.When.Expr)
	}
	b, _ := json.Marshal(def)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Hash returns a stable content hash of the rule's normalized definition
// (sha256, hex). Rules with equal hashes behave alike; the correlator keeps
// the state of rules whose hash did not change across a reload.
func (r *Rule) Hash() string { return r.hash }

// parseEscalate reads escalate: a list of {count, severity} steps with
// increasing counts.
func (p *fileParser) parseEscalate(v *yaml.Node, name string) []Escalation {
	v = deref(v)
	if v.Kind != yaml.SequenceNode {
		p.errf(v, name, "escalate: expected a list of {count, severity}")
		return nil
	}
	var out []Escalation
	for _, it := range v.Content {
		it = deref(it)
		if it.Kind != yaml.MappingNode {
			p.errf(it, name, "escalate: expected {count: N, severity: S}")
			continue
		}
		var e Escalation
		ok := true
		p.mapping(it, name, escalateKeys, func(key string, k, v *yaml.Node) {
			s, good := p.scalar(v, name, "escalate."+key)
			if !good {
				ok = false
				return
			}
			switch key {
			case "count":
				n, err := strconv.Atoi(s)
				if err != nil || n < 1 {
					p.errf(v, name, "escalate.count: %q is not a positive integer", s)
					ok = false
					return
				}
				e.Count = n
			case "severity":
				if !contains(Severities, s) {
					p.errf(v, name, "escalate.severity: invalid severity %q (want one of %s)", s, strings.Join(Severities, ", "))
					ok = false
					return
				}
				e.Severity = s
			}
		})
		if !ok {
			continue
		}
		if e.Count == 0 || e.Severity == "" {
			p.errf(it, name, "escalate: each step needs count and severity")
			continue
		}
		if len(out) > 0 && e.Count <= out[len(out)-1].Count {
			p.errf(it, name, "escalate: counts must increase (%d after %d)", e.Count, out[len(out)-1].Count)
			continue
		}
		out = append(out, e)
	}
	return out
}

// parseMacros reads macros: named boolean expressions that selectors of the
// file use by name. A macro may use lists and the macros defined above it.
func (p *fileParser) parseMacros(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		p.errf(n, "", "macros: expected a mapping of macro names to expressions")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || !selNameRe.MatchString(k.Value) {
			p.errf(k, "", "macros: invalid macro name %q (letters, digits and _, not starting with a digit)", k.Value)
			continue
		}
		if reservedName(k.Value) {
			p.errf(k, "", "macros: %q is a name of the event or a built-in function; choose another name", k.Value)
			continue
		}
		if _, dup := p.macros[k.Value]; dup {
			p.errf(k, "", "macros: macro %q given twice", k.Value)
			continue
		}
		src, ok := p.scalar(v, "", "macros."+k.Value)
		if !ok {
			continue
		}
		m := &Macro{Name: k.Value, Expr: src}
		m.Line, m.Col = p.exprPos(v, src, 1, 0)
		// Check it alone, with the macros above it.
		_, _, errs := compileSelector(src, p.lists, p.macros)
		for _, e := range errs {
			l, c := p.exprPos(v, src, e.line, e.col)
			p.errAt(l, c, "", "macro %s: %s", k.Value, e.msg)
		}
		if len(errs) > 0 {
			// Still define it, so that selectors using it get no second error.
			m.Expr = "false"
		}
		p.macros[k.Value] = m
	}
}

// parseInhibit reads inhibited_by: a list of rule ids.
func (p *fileParser) parseInhibit(n *yaml.Node, rule string, r *Rule) []string {
	var items []*yaml.Node
	switch {
	case n.Kind == yaml.SequenceNode:
		items = n.Content
	case n.Kind == yaml.ScalarNode && n.Tag != "!!null":
		items = []*yaml.Node{n}
	case n.Kind == yaml.ScalarNode:
		return nil
	default:
		p.errf(n, rule, "inhibited_by: expected a list of rule ids")
		return nil
	}
	var out []string
	for _, it := range items {
		it = deref(it)
		s, ok := p.scalar(it, rule, "inhibited_by")
		if !ok {
			continue
		}
		switch {
		case !ruleIDRe.MatchString(s):
			p.errf(it, rule, "inhibited_by: invalid rule id %q", s)
			continue
		case s == rule:
			p.errf(it, rule, "inhibited_by: a rule cannot inhibit itself")
			continue
		case contains(out, s):
			p.errf(it, rule, "inhibited_by: %q given twice", s)
			continue
		}
		out = append(out, s)
		r.inhibitPos = append(r.inhibitPos, [2]int{it.Line, it.Column})
	}
	return out
}

// selectorRef resolves a selector name used by sequence or absence. A name
// that is in match but failed to compile gives no second error.
func (p *fileParser) selectorRef(n *yaml.Node, rule, what string, r *Rule, matchNode *yaml.Node) (int, bool) {
	name, ok := p.scalar(n, rule, what)
	if !ok {
		return 0, false
	}
	if i := r.SelectorIndex(name); i >= 0 {
		return i, true
	}
	var names []string
	if matchNode != nil && matchNode.Kind == yaml.MappingNode {
		for i := 0; i < len(matchNode.Content); i += 2 {
			if matchNode.Content[i].Value == name {
				return 0, false // reported where it is defined
			}
			names = append(names, matchNode.Content[i].Value)
		}
	}
	msg := fmt.Sprintf("%s: unknown selector %q", what, name)
	if sug := suggest(name, names); sug != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", sug)
	} else if len(names) > 0 {
		msg += " (selectors: " + strings.Join(names, ", ") + ")"
	}
	p.errf(n, rule, "%s", msg)
	return 0, false
}

// parseSequence reads correlate.sequence:
//
//	sequence:
//	  within: 10m              # the last step at most this long after the first
//	  by: [fields.alloc_id]    # optional join key of every step
//	  steps:
//	    - restarting           # a selector name
//	    - {match: exhausted, by: [fields.alloc_id]}   # or a step with its own join key
func (p *fileParser) parseSequence(n *yaml.Node, rule string, r *Rule, matchNode *yaml.Node) *Sequence {
	if n.Kind != yaml.MappingNode {
		p.errf(n, rule, "correlate.sequence: expected a mapping with within, steps and optionally by")
		return nil
	}
	sq := &Sequence{Line: n.Line, Col: n.Column}
	var stepsNode *yaml.Node
	var defBy []string
	ok := true
	p.mapping(n, rule, sequenceKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "within":
			d, good := p.duration(v, rule, "correlate.sequence.within")
			sq.Within, ok = d, ok && good
		case "by":
			defBy = p.parseBy(v, rule)
		case "steps":
			stepsNode = v
		}
	})
	if sq.Within == 0 && ok {
		p.errf(n, rule, "correlate.sequence: missing within (the longest time from the first step to the last)")
		ok = false
	}
	if stepsNode == nil {
		p.errf(n, rule, "correlate.sequence: missing steps")
		return nil
	}
	if stepsNode.Kind != yaml.SequenceNode || len(stepsNode.Content) < 2 {
		p.errf(stepsNode, rule, "correlate.sequence.steps: expected a list of at least two steps (selector names, or {match, by})")
		return nil
	}
	for i, it := range stepsNode.Content {
		it = deref(it)
		st := SeqStep{Line: it.Line, Col: it.Column, By: defBy}
		what := fmt.Sprintf("correlate.sequence.steps[%d]", i)
		switch it.Kind {
		case yaml.ScalarNode:
			sel, good := p.selectorRef(it, rule, what, r, matchNode)
			st.Selector, ok = sel, ok && good
		case yaml.MappingNode:
			var matchN *yaml.Node
			p.mapping(it, rule, stepKeys, func(key string, k, v *yaml.Node) {
				switch key {
				case "match":
					matchN = v
				case "by":
					st.By = p.parseBy(v, rule)
				}
			})
			if matchN == nil {
				p.errf(it, rule, "%s: missing match (a selector name)", what)
				ok = false
				continue
			}
			sel, good := p.selectorRef(matchN, rule, what+".match", r, matchNode)
			st.Selector, ok = sel, ok && good
		default:
			p.errf(it, rule, "%s: expected a selector name or {match, by}", what)
			ok = false
			continue
		}
		sq.Steps = append(sq.Steps, st)
	}
	for _, st := range sq.Steps {
		if len(st.By) > 0 && sq.JoinLen == 0 {
			sq.JoinLen = len(st.By)
		}
	}
	for i, st := range sq.Steps {
		if len(st.By) != sq.JoinLen {
			p.errAt(st.Line, st.Col, rule, "correlate.sequence.steps[%d]: every step needs a join key of %d paths (by), like the others", i, sq.JoinLen)
			ok = false
		}
	}
	if !ok {
		return nil
	}
	return sq
}

// parseAbsence reads correlate.absence: {after: A, expect: B, within: T}.
func (p *fileParser) parseAbsence(n *yaml.Node, rule string, r *Rule, matchNode *yaml.Node) *Absence {
	if n.Kind != yaml.MappingNode {
		p.errf(n, rule, "correlate.absence: expected a mapping with after, expect and within")
		return nil
	}
	a := &Absence{Line: n.Line, Col: n.Column}
	ok := true
	var have [3]bool
	p.mapping(n, rule, absenceKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "after":
			sel, good := p.selectorRef(v, rule, "correlate.absence.after", r, matchNode)
			a.After, ok, have[0] = sel, ok && good, true
		case "expect":
			sel, good := p.selectorRef(v, rule, "correlate.absence.expect", r, matchNode)
			a.Expect, ok, have[1] = sel, ok && good, true
		case "within":
			d, good := p.duration(v, rule, "correlate.absence.within")
			a.Within, ok, have[2] = d, ok && good, true
		}
	})
	for i, key := range absenceKeys {
		if !have[i] {
			p.errf(n, rule, "correlate.absence: missing %s", key)
			ok = false
		}
	}
	if ok && a.After == a.Expect {
		p.errf(n, rule, "correlate.absence: after and expect name the same selector")
		ok = false
	}
	if !ok {
		return nil
	}
	return a
}

// reservedName reports whether name is taken by the selector environment or
// a built-in function of expr.
func reservedName(name string) bool {
	if envNames[name] || name == "lists" || name == "true" || name == "false" || name == "nil" {
		return true
	}
	switch name {
	case "len", "all", "none", "any", "one", "filter", "map", "count", "sum", "find", "findIndex",
		"findLast", "findLastIndex", "groupBy", "sortBy", "reduce", "lower", "upper", "trim",
		"trimPrefix", "trimSuffix", "split", "splitAfter", "replace", "repeat", "indexOf",
		"lastIndexOf", "hasPrefix", "hasSuffix", "max", "min", "abs", "ceil", "floor", "round",
		"int", "float", "string", "type", "toJSON", "fromJSON", "toBase64", "fromBase64", "now",
		"duration", "date", "timezone", "first", "last", "get", "take", "keys", "values", "toPairs",
		"fromPairs", "sort", "concat", "flatten", "uniq", "join", "reverse", "bitand", "bitor",
		"bitxor", "bitnand", "bitnot", "bitshl", "bitshr", "bitushr", "median", "mean", "in",
		"matches", "contains", "startsWith", "endsWith", "not", "and", "or", "let", "if", "else":
		return true
	}
	return false
}

// checkRefs checks what rules say about other rules: inhibited_by names
// loaded rules.
func checkRefs(all []*Rule, byID map[string]*Rule) []error {
	var errs []error
	for _, r := range all {
		for i, id := range r.InhibitedBy {
			if byID[id] != nil {
				continue
			}
			ids := make([]string, 0, len(byID))
			for k := range byID {
				ids = append(ids, k)
			}
			sort.Strings(ids)
			msg := fmt.Sprintf("inhibited_by: unknown rule %q", id)
			if sug := suggest(id, ids); sug != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", sug)
			}
			e := &PosError{File: r.File, Line: r.Line, Col: r.Col, Rule: r.ID, Msg: msg}
			if i < len(r.inhibitPos) {
				e.Line, e.Col = r.inhibitPos[i][0], r.inhibitPos[i][1]
			}
			errs = append(errs, e)
		}
	}
	return errs
}
