package rules

import (
	"text/template"
	"text/template/parse"

	"github.com/klaxon-dev/klaxon/ingest"
)

// templateValues registers the latest values the title and summary read
// with {{ index .latest "selector" "path" }} (or $.latest) as value
// references, so that a template can show a gauge that `when` does not
// test: the exhaustion incident names the pressure incident of its node.
// The selector counts as used (it is not only evidence).
func (b *ruleBuilder) templateValues() {
	r := b.r
	if r.tmpl == nil || r.When == nil {
		return
	}
	for _, t := range []struct {
		tm   *template.Template
		n    yn
		what string
	}{{r.tmpl.title, b.d.Title, "title"}, {r.tmpl.summary, b.d.Summary, "summary"}} {
		if t.tm == nil || t.tm.Tree == nil {
			continue
		}
		walkTemplate(t.tm.Tree.Root, func(sel, path string) {
			i := -1
			for k, s := range r.Selectors {
				if s.Name == sel {
					i = k
				}
			}
			switch {
			case i < 0:
				b.errf(t.n, "%s: .latest names selector %q, which the rule does not have", t.what, sel)
				return
			case !ingest.ValidPath(path):
				b.errf(t.n, "%s: .latest %q: invalid event path %q", t.what, sel, path)
				return
			}
			r.When.addLatest(i, path)
		})
	}
}

// addLatest adds a latest value reference (when `when` has none for it)
// and marks its selector used.
func (c *Condition) addLatest(sel int, path string) {
	for k, v := range c.values {
		if v.Selector == sel && v.Field == path {
			c.values[k].Latest = true
			return
		}
	}
	c.values = append(c.values, ValueRef{Selector: sel, Field: path, Latest: true})
	if c.uses != nil && sel < len(c.uses) {
		c.uses[sel] = true
	}
}

// walkTemplate calls fn for every `index .latest "sel" "path"` of a tree.
func walkTemplate(n parse.Node, fn func(sel, path string)) {
	switch x := n.(type) {
	case *parse.ListNode:
		if x == nil {
			return
		}
		for _, c := range x.Nodes {
			walkTemplate(c, fn)
		}
	case *parse.ActionNode:
		walkTemplate(x.Pipe, fn)
	case *parse.IfNode:
		walkBranch(&x.BranchNode, fn)
	case *parse.RangeNode:
		walkBranch(&x.BranchNode, fn)
	case *parse.WithNode:
		walkBranch(&x.BranchNode, fn)
	case *parse.TemplateNode:
		walkTemplate(x.Pipe, fn)
	case *parse.PipeNode:
		if x == nil {
			return
		}
		for _, c := range x.Cmds {
			walkTemplate(c, fn)
		}
	case *parse.CommandNode:
		if len(x.Args) >= 4 {
			if id, ok := x.Args[0].(*parse.IdentifierNode); ok && id.Ident == "index" && isLatest(x.Args[1]) {
				s, ok1 := x.Args[2].(*parse.StringNode)
				p, ok2 := x.Args[3].(*parse.StringNode)
				if ok1 && ok2 {
					fn(s.Text, p.Text)
				}
			}
		}
		for _, a := range x.Args {
			walkTemplate(a, fn)
		}
	}
}

func walkBranch(b *parse.BranchNode, fn func(sel, path string)) {
	walkTemplate(b.Pipe, fn)
	walkTemplate(b.List, fn)
	walkTemplate(b.ElseList, fn)
}

// isLatest reports whether n is .latest or $.latest.
func isLatest(n parse.Node) bool {
	switch x := n.(type) {
	case *parse.FieldNode:
		return len(x.Ident) == 1 && x.Ident[0] == "latest"
	case *parse.VariableNode:
		return len(x.Ident) == 2 && x.Ident[0] == "$" && x.Ident[1] == "latest"
	}
	return false
}
