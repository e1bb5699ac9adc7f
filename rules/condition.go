package rules

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Condition is a rule's compiled `when`: a boolean expr-lang expression over
// the window aggregates of one group, with the functions
//
//	count("selector") int                 events the selector matched
//	distinct("selector", "path") int      distinct values of an event path
//	                                      among them
//
// and the value functions latest, rate and predict (values.go).
//
// Selector names and paths must be string literals; they are resolved to
// indexes at load time. Without an explicit `when`, the condition holds when
// any selector matched at least once. A Condition is safe for concurrent use.
type Condition struct {
	// Expr is the source ("" for the default condition).
	Expr string
	// Line and Col locate the expression in its file (0 for the default).
	Line, Col int

	prog *vm.Program
	nsel int
	uses []bool // by selector index: referenced by count or distinct
	vms  sync.Pool
	// values are the (selector, path) pairs latest, rate and predict
	// read (values.go).
	values []ValueRef
}

// condEnv is the compile-time environment of a condition: no variables,
// only the count and distinct functions.
type condEnv struct{}

var errNoAggregates = errors.New("condition evaluated without aggregates")

func countFn(params ...any) (any, error) {
	a, ok := params[0].(Aggregates)
	if !ok {
		return nil, errNoAggregates
	}
	return a.Count(params[1].(int)), nil
}

func distinctFn(params ...any) (any, error) {
	a, ok := params[0].(Aggregates)
	if !ok {
		return nil, errNoAggregates
	}
	return a.Distinct(params[1].(int), params[2].(string)), nil
}

// Eval reports whether the condition holds for agg.
func (c *Condition) Eval(agg Aggregates) (bool, error) {
	if agg == nil {
		return false, errNoAggregates
	}
	if c.prog == nil {
		for i := 0; i < c.nsel; i++ {
			if agg.Count(i) > 0 {
				return true, nil
			}
		}
		return false, nil
	}
	m, _ := c.vms.Get().(*vm.VM)
	if m == nil {
		m = &vm.VM{}
	}
	out, err := m.Run(c.prog, agg)
	c.vms.Put(m)
	if err != nil {
		return false, err
	}
	b, _ := out.(bool)
	return b, nil
}

// Uses reports whether the condition refers to the selector at index sel
// (the default condition refers to all).
func (c *Condition) Uses(sel int) bool {
	if c.prog == nil {
		return sel >= 0 && sel < c.nsel
	}
	return sel >= 0 && sel < len(c.uses) && c.uses[sel]
}

// String returns the source of the condition.
func (c *Condition) String() string {
	if c.prog == nil {
		names := "any selector"
		return names + " matched at least once"
	}
	return c.Expr
}

// condPatcher validates count()/distinct() calls and rewrites them to
// count($env, index) / distinct($env, index, path).
type condPatcher struct {
	src       string
	names     []string
	params    map[string]any
	errs      []exprError
	distincts []DistinctRef
	values    []ValueRef
	uses      []bool
	done      map[*ast.CallNode]bool
}

func (p *condPatcher) errorAt(n ast.Node, format string, args ...any) {
	l, c := positionOf(p.src, startOf(n))
	p.errs = append(p.errs, exprError{line: l, col: c, msg: fmt.Sprintf(format, args...)})
}

func (p *condPatcher) selector(n ast.Node, fn string) (int, bool) {
	s, ok := n.(*ast.StringNode)
	if !ok {
		p.errorAt(n, "%s: the selector name must be a string literal", fn)
		return 0, false
	}
	for i, name := range p.names {
		if name == s.Value {
			return i, true
		}
	}
	msg := fmt.Sprintf("%s: unknown selector %q", fn, s.Value)
	if sug := suggest(s.Value, p.names); sug != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", sug)
	} else if len(p.names) > 0 {
		msg += " (selectors: " + strings.Join(p.names, ", ") + ")"
	}
	p.errorAt(n, "%s", msg)
	return 0, false
}

func (p *condPatcher) Visit(node *ast.Node) {
	if m, ok := (*node).(*ast.MemberNode); ok {
		if id, ok := m.Node.(*ast.IdentifierNode); ok && id.Value == "params" {
			p.param(node, m)
		}
		return
	}
	call, ok := (*node).(*ast.CallNode)
	if !ok || p.done[call] {
		return
	}
	id, ok := call.Callee.(*ast.IdentifierNode)
	if !ok {
		return
	}
	env := &ast.IdentifierNode{Value: "$env"}
	env.SetLocation(call.Location())
	switch id.Value {
	case "count":
		if len(call.Arguments) != 1 {
			p.errorAt(call, "count takes one argument: the selector name")
			return
		}
		sel, ok := p.selector(call.Arguments[0], "count")
		if !ok {
			return
		}
		p.uses[sel] = true
		idx := &ast.IntegerNode{Value: sel}
		idx.SetLocation(call.Arguments[0].Location())
		call.Arguments = []ast.Node{env, idx}
	case "distinct":
		if len(call.Arguments) != 2 {
			p.errorAt(call, "distinct takes two arguments: the selector name and an event path")
			return
		}
		sel, ok := p.selector(call.Arguments[0], "distinct")
		field, fok := call.Arguments[1].(*ast.StringNode)
		if !fok {
			p.errorAt(call.Arguments[1], "distinct: the event path must be a string literal")
			return
		}
		if !ingest.ValidPath(field.Value) {
			p.errorAt(field, "distinct: invalid event path %q (want id, node, node_id, source, kind, level, msg or fields.<name>)", field.Value)
			return
		}
		if !ok {
			return
		}
		p.uses[sel] = true
		ref := DistinctRef{Selector: sel, Field: field.Value}
		found := false
		for _, d := range p.distincts {
			found = found || d == ref
		}
		if !found {
			p.distincts = append(p.distincts, ref)
		}
		idx := &ast.IntegerNode{Value: sel}
		idx.SetLocation(call.Arguments[0].Location())
		call.Arguments = []ast.Node{env, idx, field}
	case "latest", "rate", "predict":
		p.valueCall(call, id.Value, env)
	default:
		return
	}
	p.done[call] = true
}

// compileCondition compiles a `when` expression against the selector names
// and the rule's params (which become constants).
func compileCondition(src string, names []string, params map[string]any) (*Condition, []DistinctRef, []exprError) {
	c := &Condition{Expr: src, nsel: len(names)}
	if strings.TrimSpace(src) == "" {
		return c, nil, nil
	}
	if len(src) > MaxExprLen {
		return nil, nil, []exprError{{msg: fmt.Sprintf("expression is %d bytes long; the limit is %d", len(src), MaxExprLen)}}
	}
	p := &condPatcher{src: src, names: names, params: params, uses: make([]bool, len(names)), done: map[*ast.CallNode]bool{}}
	prog, err := expr.Compile(src,
		expr.Env(condEnv{}),
		expr.AsBool(),
		expr.MaxNodes(MaxExprNodes),
		expr.DisableBuiltin("now"),
		expr.Function("count", countFn, new(func(any, int) int)),
		expr.Function("distinct", distinctFn, new(func(any, int, string) int)),
		latestFunc, rateFunc, predictFunc,
		expr.Patch(p),
	)
	if len(p.errs) > 0 {
		return nil, nil, p.errs
	}
	if err != nil {
		return nil, nil, []exprError{fromExprErr(src, err)}
	}
	c.prog = prog
	c.uses = p.uses
	c.values = p.values
	return c, p.distincts, nil
}
