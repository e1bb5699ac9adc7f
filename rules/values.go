package rules

import (
	"math"
	"strconv"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Value functions of a `when` condition read the values an event path
// takes in the events a selector matched, where count and distinct only
// count them:
//
//	latest("selector", "path") any        the value in the newest such event
//	                                      (kept after the event left the
//	                                      window: a gauge); nil when none
//	rate("selector", "path") any          per-second slope of the numeric
//	                                      values in the window (least
//	                                      squares, as PromQL's deriv);
//	                                      nil with fewer than two samples
//	predict("selector", "path", "1h") any the value that line reaches the
//	                                      given time after the newest
//	                                      sample (PromQL's predict_linear)
//
// Numbers may come as JSON numbers or as numeric text (hclog fields), which
// latest returns as a number; a value that is no number is no sample of
// rate and predict. Use ?? for the nil case:
//
//	when: (latest("load", "fields.running") ?? 0) >= params.ratio * params.allocs_at_default
//	when: (predict("pool", "fields.nonpaged_bytes", "2h") ?? 0) > params.limit_bytes

// ValueRef is one (selector, event path) pair the condition reads values
// of; the correlator keeps its value with each window entry.
type ValueRef struct {
	Selector int    // index into Rule.Selectors
	Field    string // event path
	// Latest is set when latest() reads it: its newest value outlives the
	// window (the correlator keeps the group for it).
	Latest bool
}

// ValueAggregates is implemented by aggregates that keep the values of
// Condition.Values (the correlator's do).
type ValueAggregates interface {
	// Latest returns the value of ref i in the newest event that carried
	// it, in the window or before (nil when none did).
	Latest(i int) any
	// Samples returns the numeric values of ref i in the window with their
	// event times in seconds, oldest first.
	Samples(i int) (t, v []float64)
}

// Values returns the value references of the condition, in the order the
// value functions index them.
func (c *Condition) Values() []ValueRef {
	if c == nil {
		return nil
	}
	return c.values
}

// ValueRefs is Rule.When.Values().
func (r *Rule) ValueRefs() []ValueRef { return r.When.Values() }

// Number reads a value as a number: Go numbers, and text that parses as
// one. ok is false for anything else (nil, booleans, other text, NaN).
func Number(v any) (float64, bool) {
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case float32:
		f = float64(x)
	case int:
		f = float64(x)
	case int64:
		f = float64(x)
	case int32:
		f = float64(x)
	case uint64:
		f = float64(x)
	case uint32:
		f = float64(x)
	case uint:
		f = float64(x)
	case string:
		p, err := strconv.ParseFloat(x, 64)
		if err != nil {
			return 0, false
		}
		f = p
	default:
		return 0, false
	}
	return f, !math.IsNaN(f) && !math.IsInf(f, 0)
}

// LookupValue returns the value of an event path with its type (a field's
// number stays a number); ok is false when absent.
func LookupValue(ev *ingest.Event, path string) (any, bool) {
	if len(path) > 7 && path[:7] == "fields." {
		v, ok := ev.Fields[path[7:]]
		return v, ok && v != nil
	}
	return ev.Lookup(path)
}

// Regression fits the least-squares line through the samples: the value
// at the newest sample's time and the slope per second. ok is false with
// fewer than two samples at distinct times.
func Regression(t, v []float64) (at, slope float64, ok bool) {
	n := len(t)
	if n < 2 || len(v) != n {
		return 0, 0, false
	}
	last := t[n-1]
	var st, sv float64
	for i := range t {
		st += t[i] - last
		sv += v[i]
	}
	mt, mv := st/float64(n), sv/float64(n)
	var num, den float64
	for i := range t {
		dt := t[i] - last - mt
		num += dt * (v[i] - mv)
		den += dt * dt
	}
	if den == 0 {
		return 0, 0, false
	}
	slope = num / den
	return mv + slope*(0-mt), slope, true
}

func latestFn(params ...any) (any, error) {
	a, ok := params[0].(ValueAggregates)
	if !ok {
		return nil, nil
	}
	v := a.Latest(params[1].(int))
	if s, ok := v.(string); ok {
		// Numeric text (hclog fields are text) reads as the number.
		if f, ok := Number(s); ok {
			return f, nil
		}
	}
	return v, nil
}

// regressionOf is the regression over the last params[1] samples of the
// aggregates params[0]; false when it is not aggregates or has too few.
func regressionOf(params []any) (at, slope float64, ok bool) {
	a, ok := params[0].(ValueAggregates)
	if !ok {
		return 0, 0, false
	}
	return Regression(a.Samples(params[1].(int)))
}

func rateFn(params ...any) (any, error) {
	if _, slope, ok := regressionOf(params); ok {
		return slope, nil
	}
	return nil, nil
}

func predictFn(params ...any) (any, error) {
	if at, slope, ok := regressionOf(params); ok {
		return at + slope*params[2].(float64), nil
	}
	return nil, nil
}

// The expr options of the value functions.
var (
	latestFunc  = expr.Function("latest", latestFn, new(func(any, int) any))
	rateFunc    = expr.Function("rate", rateFn, new(func(any, int) any))
	predictFunc = expr.Function("predict", predictFn, new(func(any, int, float64) any))
)

// valueCall validates a latest/rate/predict call and rewrites it to
// fn($env, ref) or predict($env, ref, seconds). It reports whether the
// call was one.
func (p *condPatcher) valueCall(call *ast.CallNode, fn string, env ast.Node) bool {
	want := 2
	usage := fn + " takes two arguments: the selector name and an event path"
	if fn == "predict" {
		want = 3
		usage = "predict takes three arguments: the selector name, an event path and how far ahead (\"1h\")"
	}
	if len(call.Arguments) != want {
		p.errorAt(call, "%s", usage)
		return true
	}
	sel, ok := p.selector(call.Arguments[0], fn)
	field, fok := call.Arguments[1].(*ast.StringNode)
	if !fok {
		p.errorAt(call.Arguments[1], "%s: the event path must be a string literal", fn)
		return true
	}
	if !ingest.ValidPath(field.Value) {
		p.errorAt(field, "%s: invalid event path %q (want id, node, node_id, source, kind, level, msg or fields.<name>)", fn, field.Value)
		return true
	}
	var ahead float64
	if fn == "predict" {
		s, sok := call.Arguments[2].(*ast.StringNode)
		var d time.Duration
		var err error
		if sok {
			d, err = ParseDuration(s.Value)
		}
		if !sok || err != nil || d <= 0 {
			p.errorAt(call.Arguments[2], "predict: how far ahead must be a positive duration literal (\"30m\", \"2h\")")
			return true
		}
		ahead = d.Seconds()
	}
	if !ok {
		return true
	}
	p.uses[sel] = true
	ref := -1
	for i, v := range p.values {
		if v.Selector == sel && v.Field == field.Value {
			ref = i
		}
	}
	if ref < 0 {
		ref = len(p.values)
		p.values = append(p.values, ValueRef{Selector: sel, Field: field.Value})
	}
	if fn == "latest" {
		p.values[ref].Latest = true
	}
	idx := &ast.IntegerNode{Value: ref}
	idx.SetLocation(call.Arguments[0].Location())
	args := []ast.Node{env, idx}
	if fn == "predict" {
		sec := &ast.FloatNode{Value: ahead}
		sec.SetLocation(call.Arguments[2].Location())
		args = append(args, sec)
	}
	call.Arguments = args
	return true
}

// RateMap builds the template's .rate: selector name → event path → the
// per-second slope of the window's samples (nil with fewer than two).
func (r *Rule) RateMap(samples func(i int) (t, v []float64)) map[string]map[string]any {
	return r.LatestMap(func(i int) any {
		_, slope, ok := Regression(samples(i))
		if !ok {
			return nil
		}
		return slope
	})
}

// LatestMap builds the template's .latest from the correlator's latest
// values: selector name → event path → value (nil when none), for every
// value reference of the condition.
func (r *Rule) LatestMap(latest func(i int) any) map[string]map[string]any {
	refs := r.ValueRefs()
	if len(refs) == 0 {
		return nil
	}
	m := map[string]map[string]any{}
	for i, ref := range refs {
		name := r.Selectors[ref.Selector].Name
		if m[name] == nil {
			m[name] = map[string]any{}
		}
		m[name][ref.Field] = latest(i)
	}
	return m
}
