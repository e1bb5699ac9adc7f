package rules

import (
	"bytes"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// EffectiveYAML returns the rule as it runs, overrides applied, as a rule
// file would hold it; every value has a comment saying where it came from
// ("file:line:col", "override at file:line:col" or "default: ...").
// `klaxon rules lint` prints it for every rule an override changed.
func (r *Rule) EffectiveYAML() string {
	e := &effective{r: r, m: &yaml.Node{Kind: yaml.MappingNode}}
	e.meta()
	e.selectors()
	e.correlate()
	e.timing()
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(e.m); err != nil {
		return "# " + err.Error() + "\n"
	}
	enc.Close()
	return b.String()
}

type effective struct {
	r *Rule
	m *yaml.Node
}

func str(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	if strings.Contains(strings.TrimRight(s, "\n"), "\n") {
		n.Style = yaml.LiteralStyle
	}
	return n
}

func num(v any) *yaml.Node {
	tag := "!!int"
	if _, ok := v.(float64); ok {
		tag = "!!float"
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: paramText(v)}
}

func flowList(items []string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, s := range items {
		n.Content = append(n.Content, str(s))
	}
	return n
}

// add appends key: val to m with the origin of part as the comment.
func (e *effective) add(m *yaml.Node, key string, val *yaml.Node, part string) {
	if o, ok := e.r.OriginOf(part); ok {
		val.LineComment = o.String()
	}
	m.Content = append(m.Content, str(key), val)
}

// section appends key: {} to m and returns the inner mapping.
func (e *effective) section(m *yaml.Node, key string) *yaml.Node {
	inner := &yaml.Node{Kind: yaml.MappingNode}
	m.Content = append(m.Content, str(key), inner)
	return inner
}

func (e *effective) meta() {
	r, m := e.r, e.m
	e.add(m, "id", str(r.ID), "id")
	if _, ok := r.OriginOf("enabled"); ok {
		_, off := r.DisabledBy()
		e.add(m, "enabled", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(!off)}, "enabled")
	}
	for _, kv := range [][2]string{{"title", r.Title}, {"summary", r.Summary}} {
		if kv[1] != "" {
			e.add(m, kv[0], str(kv[1]), kv[0])
		}
	}
	e.add(m, "severity", str(r.Severity), "severity")
	if len(r.Escalate) > 0 {
		steps := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, st := range r.Escalate {
			step := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
			step.Content = append(step.Content, str("count"), num(st.Count), str("severity"), str(st.Severity))
			steps.Content = append(steps.Content, step)
		}
		e.add(m, "escalate", steps, "escalate")
	}
	if r.Runbook != "" {
		e.add(m, "runbook", str(r.Runbook), "runbook")
	}
	if len(r.Labels) > 0 {
		labels := e.section(m, "labels")
		for _, k := range sortedKeys(r.Labels) {
			e.add(labels, k, str(r.Labels[k]), "labels."+k)
		}
	}
	if len(r.InhibitedBy) > 0 {
		e.add(m, "inhibited_by", flowList(r.InhibitedBy), "inhibited_by")
	}
	if len(r.Actions) > 0 {
		e.add(m, "actions", flowList(r.Actions), "actions")
	}
}

func (e *effective) selectors() {
	r := e.r
	match := e.section(e.m, "match")
	for _, s := range r.Selectors {
		e.add(match, s.Name, str(strings.TrimSpace(s.Expr)), "match."+s.Name)
	}
	if len(r.Exceptions) > 0 {
		excs := e.section(e.m, "exceptions")
		for _, x := range r.Exceptions {
			e.add(excs, x.Name, str(strings.TrimSpace(x.Expr)), "exceptions."+x.Name)
		}
	}
}

func (e *effective) correlate() {
	r := e.r
	c := e.section(e.m, "correlate")
	e.add(c, "by", flowList(r.By), "correlate.by")
	e.add(c, "window", str(Duration(r.Window).String()), "correlate.window")
	if len(r.Params) > 0 {
		params := e.section(c, "params")
		for _, k := range sortedKeys(r.Params) {
			e.add(params, k, num(r.Params[k]), "correlate.params."+k)
		}
	}
	if sq := r.Sequence; sq != nil {
		seq := e.section(c, "sequence")
		e.add(seq, "within", str(Duration(sq.Within).String()), "correlate.sequence.within")
		steps := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, st := range sq.Steps {
			name := r.Selectors[st.Selector].Name
			if len(st.By) == 0 {
				steps.Content = append(steps.Content, str(name))
				continue
			}
			step := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
			step.Content = append(step.Content, str("match"), str(name), str("by"), flowList(st.By))
			steps.Content = append(steps.Content, step)
		}
		e.add(seq, "steps", steps, "correlate.sequence")
	}
	if a := r.Absence; a != nil {
		abs := e.section(c, "absence")
		e.add(abs, "after", str(r.Selectors[a.After].Name), "correlate.absence")
		e.add(abs, "expect", str(r.Selectors[a.Expect].Name), "correlate.absence")
		e.add(abs, "within", str(Duration(a.Within).String()), "correlate.absence.within")
	}
	if r.Absence == nil && r.When != nil && strings.TrimSpace(r.When.Expr) != "" {
		e.add(c, "when", str(strings.TrimSpace(r.When.Expr)), "correlate.when")
	}
}

func (e *effective) timing() {
	r := e.r
	if r.KeepFiringFor == 0 && (r.Absence == nil || r.ResolveGiven) {
		res := e.section(e.m, "resolve")
		e.add(res, "after", str(Duration(r.ResolveAfter).String()), "resolve.after")
	}
	if r.For > 0 {
		e.add(e.m, "for", str(Duration(r.For).String()), "for")
	}
	if r.KeepFiringFor > 0 {
		e.add(e.m, "keep_firing_for", str(Duration(r.KeepFiringFor).String()), "keep_firing_for")
	}
}
