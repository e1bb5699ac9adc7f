package rules

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Limits on operator input.
const (
	// MaxExprLen bounds the source of a selector or when expression (bytes).
	MaxExprLen = 4096
	// MaxExprNodes bounds the AST of a selector or when expression.
	MaxExprNodes = 500
	// MaxRegexpLen bounds a regular expression literal used with matches.
	MaxRegexpLen = 1024
	// MaxRulesPerFile bounds the rules of one file.
	MaxRulesPerFile = 500
	// MaxSelectors is the most selectors a rule can have (one bit each in a
	// uint64 mask).
	MaxSelectors = 64
)

// env is what a selector sees: a view of one ingest.Event. Its fields alias
// the event's, so building it costs a few word copies and no allocation.
type env struct {
	ID     string              `expr:"id"`
	Time   time.Time           `expr:"time"`
	Node   string              `expr:"node"`
	NodeID string              `expr:"node_id"`
	Source string              `expr:"source"`
	Kind   string              `expr:"kind"`
	Level  string              `expr:"level"`
	Msg    string              `expr:"msg"`
	Fields map[string]any      `expr:"fields"`
	Lists  map[string][]string `expr:"lists"`
}

func (e *env) set(ev *ingest.Event) {
	e.ID, e.Time, e.Node, e.NodeID = ev.ID, ev.Time, ev.Node, ev.NodeID
	e.Source, e.Kind, e.Level, e.Msg, e.Fields = ev.Source, ev.Kind, ev.Level, ev.Msg, ev.Fields
}

// envNames are the identifiers of env that depend on the event.
var envNames = map[string]bool{
	"id": true, "time": true, "node": true, "node_id": true, "source": true,
	"kind": true, "level": true, "msg": true, "fields": true, "$env": true,
}

// program is a compiled selector with what the loader learnt from its AST.
type program struct {
	p *vm.Program
	// fieldRefs are the names X of every fields.X the expression reads;
	// dynamic is set when it indexes fields with a computed key.
	fieldRefs []string
	dynamic   bool
	// constant is set when the expression reads nothing of the event.
	constant bool
	regexps  []regexpRef
	lists    []string // names of the lists it uses
	macros   []string // names of the macros it uses
	state    *selState
}

type regexpRef struct {
	pattern           string
	line, col         int // within the expression (1-based line, 0-based col)
	fileLine, fileCol int // in the rule file
}

// selState holds the run-time counters of one selector.
type selState struct {
	errors atomic.Uint64
	logged atomic.Bool
}

// predOp is the string operation of a pred.
type predOp uint8

const (
	opEq predOp = iota
	opPrefix
	opSuffix
	opContains
)

var opNames = [...]string{opEq: "==", opPrefix: "startsWith", opSuffix: "endsWith", opContains: "contains"}

// pred is one plain-string test on an event path that a selector implies.
type pred struct {
	path  string // event path: a top-level name or fields.<name>
	field string // <name> for fields.<name>, else ""
	op    predOp
	fold  bool // applies to lower(path)
	lit   string
}

func (p pred) String() string {
	s := p.path
	if p.fold {
		s = "lower(" + s + ")"
	}
	return fmt.Sprintf("%s %s %q", s, opNames[p.op], p.lit)
}

// literal is one need of a selector: at least one of its preds holds for
// every event the selector matches.
type literal struct {
	any []pred
}

func (l literal) String() string {
	parts := make([]string, len(l.any))
	for i, p := range l.any {
		parts[i] = p.String()
	}
	return strings.Join(parts, " || ")
}

// sourceOnly reports whether the need is "source is one of ...".
func (l literal) sourceOnly() bool {
	for _, p := range l.any {
		if p.path != "source" || p.op != opEq || p.fold {
			return false
		}
	}
	return len(l.any) > 0
}

func (l literal) key() string {
	ps := make([]string, len(l.any))
	for i, p := range l.any {
		ps[i] = p.String()
	}
	sort.Strings(ps)
	return strings.Join(ps, "\x00")
}

// exprError is an error inside an expression, located within it.
type exprError struct {
	line, col int // 1-based line, 0-based column in the expression; 0 line: unknown
	msg       string
}

// positionOf converts a rune offset of src to a 1-based line and 0-based column.
func positionOf(src string, runeOff int) (line, col int) {
	line = 1
	n := 0
	for _, r := range src {
		if n == runeOff {
			break
		}
		if r == '\n' {
			line++
			col = 0
		} else {
			col++
		}
		n++
	}
	return line, col
}

func fromExprErr(src string, err error) exprError {
	var fe *file.Error
	if errors.As(err, &fe) {
		msg := fe.Message
		if fe.Line == 0 && fe.Column == 0 && fe.From == 0 && fe.To == 0 {
			return exprError{msg: msg}
		}
		if fe.Line == 0 {
			l, c := positionOf(src, fe.From)
			return exprError{line: l, col: c, msg: msg}
		}
		return exprError{line: fe.Line, col: fe.Column, msg: msg}
	}
	msg := err.Error()
	if i := strings.Index(msg, "\n"); i >= 0 {
		msg = msg[:i]
	}
	return exprError{msg: msg}
}

// selectorOptions are the expr options every selector is compiled with.
func selectorOptions() []expr.Option {
	return []expr.Option{
		expr.Env(env{}),
		expr.AsBool(),
		expr.MaxNodes(MaxExprNodes),
		// Time is an argument: rules see event time only.
		expr.DisableBuiltin("now"),
	}
}

// compileSelector compiles src and derives its needs. lists and macros are
// those of the rule's file.
func compileSelector(src string, lists map[string][]string, macros map[string]*Macro) (program, []literal, []exprError) {
	if len(src) > MaxExprLen {
		return program{}, nil, []exprError{{msg: fmt.Sprintf("expression is %d bytes long; the limit is %d", len(src), MaxExprLen)}}
	}
	if strings.TrimSpace(src) == "" {
		return program{}, nil, []exprError{{msg: "empty expression"}}
	}
	tree, err := parser.Parse(src)
	if err != nil {
		return program{}, nil, []exprError{fromExprErr(src, err)}
	}
	prog := program{state: &selState{}}
	used := map[string]bool{}
	if err := expandMacros(&tree.Node, macros, used, 0); err != nil {
		l, c := positionOf(src, err.at)
		return program{}, nil, []exprError{{line: l, col: c, msg: err.msg}}
	}
	prog.macros = sortedKeys(used)
	errs := inspect(src, tree.Node, lists, &prog)
	if len(errs) > 0 {
		return program{}, nil, errs
	}
	opts := selectorOptions()
	if len(used) > 0 {
		opts = append(opts, expr.Patch(&macroPatcher{macros: macros}))
	}
	p, err := expr.Compile(src, opts...)
	if err != nil {
		return program{}, nil, []exprError{fromExprErr(src, err)}
	}
	prog.p = p
	needs := dedupNeeds(implied(tree.Node, lists))
	return prog, needs, nil
}

// inspect walks the AST of a selector: checks regular expressions and list
// names and records the fields, lists and regexps used.
func inspect(src string, root ast.Node, lists map[string][]string, prog *program) []exprError {
	var errs []exprError
	constant := true
	seenField := map[string]bool{}
	seenList := map[string]bool{}
	walk(root, func(n ast.Node) {
		switch x := n.(type) {
		case *ast.IdentifierNode:
			if envNames[x.Value] {
				constant = false
			}
		case *ast.MemberNode:
			id, ok := x.Node.(*ast.IdentifierNode)
			if !ok {
				return
			}
			prop, isStr := x.Property.(*ast.StringNode)
			switch id.Value {
			case "fields":
				if !isStr {
					prog.dynamic = true
				} else if !seenField[prop.Value] {
					seenField[prop.Value] = true
					prog.fieldRefs = append(prog.fieldRefs, prop.Value)
				}
			case "lists":
				if !isStr {
					l, c := positionOf(src, x.Property.Location().From)
					errs = append(errs, exprError{line: l, col: c, msg: "lists must be named literally (lists.<name>)"})
					return
				}
				if _, ok := lists[prop.Value]; !ok {
					l, c := positionOf(src, x.Property.Location().From)
					msg := fmt.Sprintf("unknown list %q", prop.Value)
					if s := suggest(prop.Value, sortedKeys(lists)); s != "" {
						msg += fmt.Sprintf(" (did you mean %q?)", s)
					}
					errs = append(errs, exprError{line: l, col: c, msg: msg})
					return
				}
				if !seenList[prop.Value] {
					seenList[prop.Value] = true
					prog.lists = append(prog.lists, prop.Value)
				}
			}
		case *ast.BinaryNode:
			if x.Operator != "matches" {
				return
			}
			s, ok := x.Right.(*ast.StringNode)
			if !ok {
				l, c := positionOf(src, startOf(x.Right))
				errs = append(errs, exprError{line: l, col: c, msg: "the pattern of matches must be a string literal"})
				return
			}
			l, c := positionOf(src, s.Location().From)
			if len(s.Value) > MaxRegexpLen {
				errs = append(errs, exprError{line: l, col: c, msg: fmt.Sprintf("regular expression is %d bytes long; the limit is %d", len(s.Value), MaxRegexpLen)})
				return
			}
			if _, err := regexp.Compile(s.Value); err != nil {
				errs = append(errs, exprError{line: l, col: c, msg: "bad regular expression: " + err.Error()})
				return
			}
			prog.regexps = append(prog.regexps, regexpRef{pattern: s.Value, line: l, col: c})
		}
	})
	prog.constant = constant
	sort.Strings(prog.fieldRefs)
	sort.Strings(prog.lists)
	return errs
}

// startOf returns the rune offset where the source of n starts (the
// location of some nodes is their operator or property).
func startOf(n ast.Node) int {
	switch x := n.(type) {
	case *ast.MemberNode:
		return startOf(x.Node)
	case *ast.ChainNode:
		return startOf(x.Node)
	case *ast.BinaryNode:
		return startOf(x.Left)
	}
	return n.Location().From
}

// walk calls fn for every node of the tree, parents first.
func walk(root ast.Node, fn func(ast.Node)) {
	v := &collector{}
	ast.Walk(&root, v)
	for _, n := range v.nodes {
		fn(n)
	}
}

type collector struct{ nodes []ast.Node }

func (c *collector) Visit(n *ast.Node) { c.nodes = append(c.nodes, *n) }

// term recognises an event path, optionally under lower().
func term(n ast.Node) (path, field string, fold, ok bool) {
	switch x := n.(type) {
	case *ast.IdentifierNode:
		switch x.Value {
		case "id", "node", "node_id", "source", "kind", "level", "msg":
			return x.Value, "", false, true
		}
	case *ast.ChainNode:
		return term(x.Node)
	case *ast.MemberNode:
		id, ok := x.Node.(*ast.IdentifierNode)
		if !ok || id.Value != "fields" {
			return "", "", false, false
		}
		if s, ok := x.Property.(*ast.StringNode); ok && s.Value != "" {
			return "fields." + s.Value, s.Value, false, true
		}
	case *ast.BuiltinNode:
		if x.Name == "lower" && len(x.Arguments) == 1 {
			p, f, fold, ok := term(x.Arguments[0])
			if ok && !fold {
				return p, f, true, true
			}
		}
	}
	return "", "", false, false
}

// implied returns needs that hold whenever n evaluates to true. It only
// understands a few shapes; anything else implies nothing.
func implied(n ast.Node, lists map[string][]string) []literal {
	switch x := n.(type) {
	case *ast.BinaryNode:
		switch x.Operator {
		case "&&", "and":
			return append(implied(x.Left, lists), implied(x.Right, lists)...)
		case "||", "or":
			l, r := implied(x.Left, lists), implied(x.Right, lists)
			if len(l) == 0 || len(r) == 0 {
				return nil
			}
			var out []literal
			ls, lok := firstSource(l)
			rs, rok := firstSource(r)
			if lok && rok {
				out = append(out, literal{any: append(append([]pred(nil), ls.any...), rs.any...)})
			}
			lb, rb := best(l), best(r)
			if !(lok && rok && lb.sourceOnly() && rb.sourceOnly()) {
				out = append(out, literal{any: append(append([]pred(nil), lb.any...), rb.any...)})
			}
			return out
		case "==":
			if lit, ok := x.Right.(*ast.StringNode); ok {
				return predNeed(x.Left, opEq, lit.Value)
			}
			if lit, ok := x.Left.(*ast.StringNode); ok {
				return predNeed(x.Right, opEq, lit.Value)
			}
		case "contains", "startsWith", "endsWith":
			lit, ok := x.Right.(*ast.StringNode)
			if !ok {
				return nil
			}
			op := map[string]predOp{"contains": opContains, "startsWith": opPrefix, "endsWith": opSuffix}[x.Operator]
			return predNeed(x.Left, op, lit.Value)
		case "in":
			path, field, fold, ok := term(x.Left)
			if !ok {
				return nil
			}
			var items []string
			switch r := x.Right.(type) {
			case *ast.ArrayNode:
				for _, e := range r.Nodes {
					s, ok := e.(*ast.StringNode)
					if !ok {
						return nil
					}
					items = append(items, s.Value)
				}
			case *ast.MemberNode:
				id, ok := r.Node.(*ast.IdentifierNode)
				name, ok2 := r.Property.(*ast.StringNode)
				if !ok || !ok2 || id.Value != "lists" {
					return nil
				}
				list, ok := lists[name.Value]
				if !ok {
					return nil
				}
				items = list
			default:
				return nil
			}
			if len(items) == 0 {
				return nil
			}
			var l literal
			for _, it := range items {
				l.any = append(l.any, pred{path: path, field: field, op: opEq, fold: fold, lit: it})
			}
			return []literal{l}
		case "matches":
			lit, ok := x.Right.(*ast.StringNode)
			if !ok {
				return nil
			}
			re, err := regexp.Compile(lit.Value)
			if err != nil {
				return nil
			}
			prefix, _ := re.LiteralPrefix()
			if prefix == "" || !utf8.ValidString(prefix) {
				return nil
			}
			return predNeed(x.Left, opContains, prefix)
		}
	}
	return nil
}

func predNeed(n ast.Node, op predOp, lit string) []literal {
	path, field, fold, ok := term(n)
	if !ok || (lit == "" && op != opEq) {
		return nil
	}
	return []literal{{any: []pred{{path: path, field: field, op: op, fold: fold, lit: lit}}}}
}

func firstSource(ls []literal) (literal, bool) {
	for _, l := range ls {
		if l.sourceOnly() {
			return l, true
		}
	}
	return literal{}, false
}

// best picks the need most likely to reject an event: not about the source
// (the index handles that), with few alternatives and long literals.
func best(ls []literal) literal {
	bi, bs := 0, -1<<30
	for i, l := range ls {
		s := 0
		if !l.sourceOnly() {
			s += 1000
		}
		s -= 10 * len(l.any)
		shortest := 1 << 20
		for _, p := range l.any {
			shortest = min(shortest, len(p.lit))
		}
		s += min(shortest, 64)
		if s > bs {
			bi, bs = i, s
		}
	}
	return ls[bi]
}

// dedupNeeds drops repeated needs and needs that are always satisfied
// (an alternative with an empty literal that is not an equality).
func dedupNeeds(ls []literal) []literal {
	seen := map[string]bool{}
	var out []literal
	for _, l := range ls {
		trivial := false
		for _, p := range l.any {
			if p.lit == "" && p.op != opEq {
				trivial = true
			}
		}
		if trivial || len(l.any) == 0 {
			continue
		}
		k := l.key()
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, l)
	}
	return out
}

// costlyRegexp reports why a pattern is expensive to run on every event, or "".
func costlyRegexp(pattern string) string {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return ""
	}
	first := re
	for first.Op == syntax.OpConcat && len(first.Sub) > 0 {
		first = first.Sub[0]
	}
	for first.Op == syntax.OpCapture && len(first.Sub) > 0 {
		first = first.Sub[0]
	}
	if (first.Op == syntax.OpStar || first.Op == syntax.OpPlus) && len(first.Sub) == 1 &&
		(first.Sub[0].Op == syntax.OpAnyChar || first.Sub[0].Op == syntax.OpAnyCharNotNL) {
		return "it starts with .* (matches are unanchored already; drop it)"
	}
	alt := re
	for alt.Op == syntax.OpCapture && len(alt.Sub) > 0 {
		alt = alt.Sub[0]
	}
	if alt.Op == syntax.OpAlternate && len(alt.Sub) > 8 {
		return fmt.Sprintf("an unanchored alternation of %d branches", len(alt.Sub))
	}
	return ""
}

// Eval evaluates the selector on ev without any prefilter. It is meant for
// tests and tools; the correlator uses Set.Match.
func (s *Selector) Eval(ev *ingest.Event) (bool, error) {
	return s.eval(ev, nil)
}

func (s *Selector) eval(ev *ingest.Event, lists map[string][]string) (bool, error) {
	if s.prog.p == nil {
		return false, fmt.Errorf("selector %s is not compiled", s.Name)
	}
	e := env{Lists: lists}
	if e.Lists == nil {
		e.Lists = s.lists
	}
	e.set(ev)
	out, err := vm.Run(s.prog.p, &e)
	if err != nil {
		return false, err
	}
	b, _ := out.(bool)
	return b, nil
}

// Needs describes the plain-string conditions the loader derived from the
// selector (every match satisfies each of them); for diagnostics.
func (s *Selector) Needs() []string {
	out := make([]string, len(s.needs))
	for i, l := range s.needs {
		out[i] = l.String()
	}
	return out
}

// missingField reports whether an expression error may come from a field
// the event does not have (which counts as no match, not as an error).
func (p *program) missingField(ev *ingest.Event) bool {
	for _, f := range p.fieldRefs {
		if v, ok := ev.Fields[f]; !ok || v == nil {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// maxMacroDepth bounds macros using macros (and catches cycles).
const maxMacroDepth = 8

type macroError struct {
	at  int // rune offset in the selector
	msg string
}

// expandMacros replaces every identifier naming a macro by the macro's
// parsed (and expanded) expression, recording the names used.
func expandMacros(root *ast.Node, macros map[string]*Macro, used map[string]bool, depth int) *macroError {
	if len(macros) == 0 {
		return nil
	}
	v := &macroCollector{macros: macros}
	ast.Walk(root, v)
	for _, n := range v.found {
		id := (*n).(*ast.IdentifierNode)
		m := macros[id.Value]
		if depth >= maxMacroDepth {
			return &macroError{at: id.Location().From, msg: fmt.Sprintf("macro %s: macros nested more than %d deep (do they use each other?)", id.Value, maxMacroDepth)}
		}
		tree, err := parser.Parse(m.Expr)
		if err != nil {
			return &macroError{at: id.Location().From, msg: fmt.Sprintf("macro %s: %v", id.Value, err)}
		}
		if e := expandMacros(&tree.Node, macros, used, depth+1); e != nil {
			e.at = id.Location().From
			return e
		}
		used[id.Value] = true
		loc := id.Location()
		*n = tree.Node
		(*n).SetLocation(loc)
	}
	return nil
}

type macroCollector struct {
	macros map[string]*Macro
	found  []*ast.Node
}

func (c *macroCollector) Visit(n *ast.Node) {
	if id, ok := (*n).(*ast.IdentifierNode); ok && c.macros[id.Value] != nil {
		c.found = append(c.found, n)
	}
}

// macroPatcher expands macros while expr compiles a selector.
type macroPatcher struct{ macros map[string]*Macro }

func (p *macroPatcher) Visit(n *ast.Node) {
	id, ok := (*n).(*ast.IdentifierNode)
	if !ok || p.macros[id.Value] == nil {
		return
	}
	tree, err := parser.Parse(p.macros[id.Value].Expr)
	if err != nil {
		return // reported by expandMacros
	}
	if expandMacros(&tree.Node, p.macros, map[string]bool{}, 1) != nil {
		return
	}
	ast.Patch(n, tree.Node)
}
