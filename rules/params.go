package rules

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser/lexer"
	"gopkg.in/yaml.v3"
)

// MaxParams bounds the params of one rule.
const MaxParams = 32

// Params are a rule's named thresholds (correlate.params): numbers its
// `when` reads as params.<name>, which an override can set without
// touching the condition:
//
//	correlate:
//	  params: {restarts: 2}
//	  when: count("restarting") >= params.restarts
//
// At load they become constants of the compiled condition.

// paramHint follows an error about an unknown param name: the param of
// names it was likely meant to be, else the params, else none (when names
// is empty).
func paramHint(name string, names []string, none string) string {
	if sug := suggest(name, names); sug != "" {
		return fmt.Sprintf(" (did you mean %q?)", sug)
	}
	if len(names) > 0 {
		return " (params: " + strings.Join(names, ", ") + ")"
	}
	return " (" + none + ")"
}

// decodeParams is phase 1 of correlate.params.
func (l *loader) decodeParams(n yn, rule string) []entry {
	out := l.namedEntries(n, rule, "correlate.params", "correlate.params: expected a mapping of names to numbers", "param")
	for i := range out {
		out[i].decl = out[i].val
	}
	if len(out) > MaxParams {
		l.errf(n, rule, "correlate.params: too many params (%d; the limit is %d)", len(out), MaxParams)
		out = out[:MaxParams]
	}
	return out
}

// params is phase 2 of correlate.params: each value is a number; a value
// an override set has the type of the rule's own (an integer stays one).
func (b *ruleBuilder) params() {
	if len(b.d.params) == 0 {
		return
	}
	b.r.Params = map[string]any{}
	for _, e := range b.d.params {
		b.origin("correlate.params."+e.name(), e.val)
		what := "correlate.params." + e.name()
		v, ok := b.number(e.val, what)
		if ok && e.val.Node != e.decl.Node {
			if _, isInt := v.(int); !isInt {
				if def, good := parseNumber(e.decl); good {
					if _, declInt := def.(int); declInt {
						b.errf(e.val, "%s: expected an integer, as the rule's own value %s is", what, e.decl.Value)
						ok = false
					}
				}
			} else if def, good := parseNumber(e.decl); good {
				if _, declFloat := def.(float64); declFloat {
					v = float64(v.(int))
				}
			}
		}
		if !ok {
			v = 0 // known, so that when gives no second error
		}
		b.r.Params[e.name()] = v
	}
}

func (b *ruleBuilder) number(n yn, what string) (any, bool) {
	if v, ok := parseNumber(n); ok {
		return v, true
	}
	b.errf(n, "%s: expected a number, not %q", what, n.Value)
	return nil, false
}

// parseNumber reads an int or a finite float of a YAML scalar.
func parseNumber(n yn) (any, bool) {
	if !n.ok() || n.Kind != yaml.ScalarNode {
		return nil, false
	}
	switch n.Tag {
	case "!!int":
		var i int
		if err := n.Decode(&i); err == nil {
			return i, true
		}
	case "!!float":
		f, err := strconv.ParseFloat(n.Value, 64)
		if err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
			return f, true
		}
	}
	return nil, false
}

// paramText formats a param's value as the condition's source would.
func paramText(v any) string {
	switch x := v.(type) {
	case int:
		return strconv.Itoa(x)
	case float64:
		s := strconv.FormatFloat(x, 'g', -1, 64)
		if !strings.ContainsAny(s, ".eE") {
			s += ".0"
		}
		return s
	}
	return fmt.Sprint(v)
}

// paramNode is the constant a param becomes in a compiled condition.
func paramNode(v any) ast.Node {
	switch x := v.(type) {
	case float64:
		return &ast.FloatNode{Value: x}
	case int:
		return &ast.IntegerNode{Value: x}
	}
	return &ast.NilNode{}
}

// param resolves params.<name> in a condition (called by condPatcher).
func (p *condPatcher) param(node *ast.Node, m *ast.MemberNode) {
	prop, ok := m.Property.(*ast.StringNode)
	if !ok || m.Optional || m.Method {
		p.errorAt(m, "params must be named literally (params.<name>)")
		return
	}
	v, ok := p.params[prop.Value]
	if !ok {
		names := make([]string, 0, len(p.params))
		for k := range p.params {
			names = append(names, k)
		}
		sort.Strings(names)
		msg := fmt.Sprintf("unknown param %q", prop.Value) +
			paramHint(prop.Value, names, "the rule has no params: give them in correlate.params")
		p.errorAt(m, "%s", msg)
		return
	}
	ast.Patch(node, paramNode(v))
}

// substituteParams returns src with every params.<name> replaced by the
// value's text: the condition as it runs. A rule whose thresholds became
// params keeps the hash (and so its state across the upgrade) while the
// values equal the numbers it had.
func substituteParams(src string, params map[string]any) string {
	if len(params) == 0 || !strings.Contains(src, "params") {
		return src
	}
	toks, err := lexer.Lex(file.NewSource(src))
	if err != nil {
		return src
	}
	runes := []rune(src)
	var b strings.Builder
	last := 0
	for i := 0; i+2 < len(toks); i++ {
		t := toks[i]
		if !t.Is(lexer.Identifier, "params") || !toks[i+1].Is(lexer.Operator, ".") || toks[i+2].Kind != lexer.Identifier {
			continue
		}
		if i > 0 && toks[i-1].Kind == lexer.Operator && (toks[i-1].Value == "." || toks[i-1].Value == "?.") {
			continue // a member of something else
		}
		v, ok := params[toks[i+2].Value]
		if !ok || t.From < last || toks[i+2].To > len(runes) {
			continue
		}
		b.WriteString(string(runes[last:t.From]))
		b.WriteString(paramText(v))
		last = toks[i+2].To
		i += 2
	}
	b.WriteString(string(runes[last:]))
	return b.String()
}
