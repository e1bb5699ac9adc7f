package rules

import (
	"fmt"
	"sort"

	"github.com/expr-lang/expr/ast"
)

// Finding is one lint finding.
type Finding struct {
	File      string
	Line, Col int
	Rule      string
	Severity  string // warning or error
	Msg       string
}

// String formats the finding as "file:line:col: severity: rule <id>: msg".
func (f Finding) String() string {
	return fmt.Sprintf("%s:%d:%d: %s: rule %s: %s", f.File, f.Line, f.Col, f.Severity, f.Rule, f.Msg)
}

// Lint reports questionable but valid rule definitions: selectors that
// `when` never uses, constant selectors, selectors that can never match,
// selectors without any literal prefilter, a resolve period shorter than the
// window, a missing runbook and costly regular expressions.
func Lint(set *Set) []Finding {
	var out []Finding
	for _, r := range set.Rules {
		add := func(line, col int, format string, args ...any) {
			out = append(out, Finding{File: r.File, Line: line, Col: col, Rule: r.ID, Severity: "warning", Msg: fmt.Sprintf(format, args...)})
		}
		if r.Runbook == "" {
			add(r.Line, r.Col, "no runbook: tell the on-call engineer what to do")
		}
		if r.ResolveAfter < r.Window {
			l, c := r.resolveLine, r.resolveCol
			if l == 0 {
				l, c = r.Line, r.Col
			}
			add(l, c, "resolve.after (%s) is shorter than the window (%s): the incident may resolve while the window still holds its evidence",
				Duration(r.ResolveAfter), Duration(r.Window))
		}
		for i, s := range r.Selectors {
			if r.When != nil && r.When.prog != nil && !r.When.Uses(i) {
				add(s.Line, s.Col, "selector %s is not used by when (it only adds evidence)", s.Name)
			}
			if s.prog.constant {
				what := "constant"
				if b, ok := s.prog.p.Node().(*ast.BoolNode); ok {
					what = fmt.Sprintf("always %v", b.Value)
				}
				add(s.Line, s.Col, "selector %s is %s: it does not read the event", s.Name, what)
			} else if len(s.needs) == 0 {
				add(s.Line, s.Col, "selector %s has no literal need (like source == \"...\" or msg contains \"...\"): expr runs for every event", s.Name)
			}
			for _, l := range s.needs {
				for _, p := range l.any {
					c := prepare(p)
					if c.never && len(l.any) == 1 {
						add(s.Line, s.Col, "selector %s can never match: lower(%s) is compared with %q, which has upper-case letters", s.Name, p.path, p.lit)
					}
				}
			}
			for _, re := range s.prog.regexps {
				if why := costlyRegexp(re.pattern); why != "" {
					add(re.fileLine, re.fileCol, "selector %s: costly regular expression: %s", s.Name, why)
				}
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	return out
}
