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
	topKeys       = []string{"rules", "lists", "macros"}
	ruleKeys      = []string{"id", "title", "summary", "severity", "escalate", "runbook", "labels", "match", "correlate", "resolve", "for", "keep_firing_for", "inhibited_by"}
	escalateKeys  = []string{"count", "severity"}
	correlateKeys = []string{"by", "window", "when", "sequence", "absence"}
	resolveKeys   = []string{"after"}
	sequenceKeys  = []string{"within", "by", "steps"}
	stepKeys      = []string{"match", "by"}
	absenceKeys   = []string{"after", "expect", "within"}

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

// LoadFiles loads the given rule files into one set. All errors of all
// files are returned at once (joined *PosError); on error no set is
// returned.
func LoadFiles(paths ...string) (*Set, error) {
	var errs []error
	var all []*Rule
	first := map[string]*Rule{}
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, &PosError{File: path, Msg: err.Error()})
			continue
		}
		rules, err := ParseFile(path, data)
		if err != nil {
			errs = append(errs, err)
		}
		for _, r := range rules {
			if f, dup := first[r.ID]; dup {
				// Within one file ParseFile reported it already.
				if f.File != r.File {
					errs = append(errs, &PosError{File: r.File, Line: r.Line, Col: r.Col, Rule: r.ID,
						Msg: fmt.Sprintf("duplicate rule id (also defined at %s:%d:%d)", f.File, f.Line, f.Col)})
				}
				continue
			}
			first[r.ID] = r
			all = append(all, r)
		}
	}
	errs = append(errs, checkRefs(all, first)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return newSet(all, paths), nil
}

// ParseFile parses and compiles the rules of one file; name is used in
// positions. It returns every error of the file at once (joined *PosError)
// together with the rules that compiled.
func ParseFile(name string, data []byte) ([]*Rule, error) {
	p := &fileParser{name: name, lines: strings.Split(string(data), "\n")}
	rules := p.parse(data)
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool {
			a, b := p.errs[i].(*PosError), p.errs[j].(*PosError)
			if a.Line != b.Line {
				return a.Line < b.Line
			}
			return a.Col < b.Col
		})
		return rules, errors.Join(p.errs...)
	}
	return rules, nil
}

type fileParser struct {
	name   string
	lines  []string
	errs   []error
	lists  map[string][]string
	macros map[string]*Macro
}

func (p *fileParser) errAt(line, col int, rule, format string, args ...any) {
	p.errs = append(p.errs, &PosError{File: p.name, Line: line, Col: col, Rule: rule, Msg: fmt.Sprintf(format, args...)})
}

func (p *fileParser) errf(n *yaml.Node, rule, format string, args ...any) {
	p.errAt(n.Line, n.Column, rule, format, args...)
}

var yamlLineRe = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (p *fileParser) parse(data []byte) []*Rule {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file
		}
		p.yamlError(err)
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errf(&extra, "", "a rule file holds one YAML document; put all rules under one rules: list")
	} else if !errors.Is(err, io.EOF) {
		p.yamlError(err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	root := deref(doc.Content[0])
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		p.errf(root, "", "expected a mapping with rules: (and optionally lists:)")
		return nil
	}
	var rulesNode, macrosNode *yaml.Node
	p.lists = map[string][]string{}
	p.macros = map[string]*Macro{}
	p.mapping(root, "", topKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "rules":
			rulesNode = v
		case "lists":
			p.parseLists(v)
		case "macros":
			macrosNode = v
		}
	})
	if macrosNode != nil {
		// After the lists, wherever they are in the file: macros use them.
		p.parseMacros(macrosNode)
	}
	if rulesNode == nil {
		return nil
	}
	if rulesNode.Kind == yaml.ScalarNode && rulesNode.Tag == "!!null" {
		return nil
	}
	if rulesNode.Kind != yaml.SequenceNode {
		p.errf(rulesNode, "", "rules: expected a list of rules")
		return nil
	}
	items := rulesNode.Content
	if len(items) > MaxRulesPerFile {
		p.errf(items[MaxRulesPerFile], "", "too many rules in one file (%d; the limit is %d)", len(items), MaxRulesPerFile)
		items = items[:MaxRulesPerFile]
	}
	var out []*Rule
	seen := map[string]*Rule{}
	for i, item := range items {
		r := p.parseRule(deref(item), i+1)
		if r == nil {
			continue
		}
		if f, dup := seen[r.ID]; dup {
			p.errAt(r.Line, r.Col, r.ID, "duplicate rule id (also defined at %s:%d:%d)", f.File, f.Line, f.Col)
			continue
		}
		seen[r.ID] = r
		out = append(out, r)
	}
	return out
}

func (p *fileParser) yamlError(err error) {
	msg := err.Error()
	for _, line := range strings.Split(msg, "\n") {
		line = strings.TrimSpace(line)
		if m := yamlLineRe.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			p.errAt(n, 1, "", "invalid YAML: %s", m[2])
			continue
		}
		if line != "" && line != "yaml: unmarshal errors:" {
			p.errAt(0, 0, "", "invalid YAML: %s", strings.TrimPrefix(line, "yaml: "))
		}
	}
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

// mapping iterates a mapping node, reporting unknown and repeated keys.
func (p *fileParser) mapping(n *yaml.Node, rule string, known []string, fn func(key string, k, v *yaml.Node)) {
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		key := k.Value
		if k.Kind != yaml.ScalarNode {
			p.errf(k, rule, "expected a plain key")
			continue
		}
		if k.Tag == "!!merge" {
			p.errf(k, rule, "YAML merge keys (<<) are not supported")
			continue
		}
		if !contains(known, key) {
			msg := fmt.Sprintf("unknown key %q", key)
			if s := suggest(key, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			} else {
				msg += " (known keys: " + strings.Join(known, ", ") + ")"
			}
			p.errf(k, rule, "%s", msg)
			continue
		}
		if seen[key] {
			p.errf(k, rule, "key %q given twice", key)
			continue
		}
		seen[key] = true
		fn(key, k, v)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// scalar returns the string value of a scalar node ("" for null).
func (p *fileParser) scalar(n *yaml.Node, rule, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		p.errf(n, rule, "%s: expected a single value", what)
		return "", false
	}
	if n.Tag == "!!null" {
		return "", true
	}
	return n.Value, true
}

func (p *fileParser) parseLists(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		p.errf(n, "", "lists: expected a mapping of list names to lists of strings")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		if !listNameRe.MatchString(k.Value) {
			p.errf(k, "", "lists: invalid list name %q (letters, digits and _)", k.Value)
			continue
		}
		if _, dup := p.lists[k.Value]; dup {
			p.errf(k, "", "lists: list %q given twice", k.Value)
			continue
		}
		if v.Kind != yaml.SequenceNode {
			p.errf(v, "", "lists: %s: expected a list of strings", k.Value)
			continue
		}
		items := []string{}
		for _, it := range v.Content {
			it = deref(it)
			if it.Kind != yaml.ScalarNode || it.Tag == "!!null" {
				p.errf(it, "", "lists: %s: expected a string", k.Value)
				continue
			}
			items = append(items, it.Value)
		}
		p.lists[k.Value] = items
	}
}

// parseRule parses one rule mapping; nth is its 1-based index in the file.
func (p *fileParser) parseRule(n *yaml.Node, nth int) *Rule {
	if n.Kind != yaml.MappingNode {
		p.errf(n, fmt.Sprintf("#%d", nth), "expected a rule (a mapping with id, match, correlate, ...)")
		return nil
	}
	r := &Rule{File: p.name, Line: n.Line, Col: n.Column, Severity: DefaultSeverity, By: []string{"node"}, lists: p.lists, macros: p.macros}
	name := fmt.Sprintf("#%d", nth)
	// The id first, so that every error can name the rule.
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "id" {
			v := deref(n.Content[i+1])
			if v.Kind == yaml.ScalarNode && v.Value != "" {
				name = v.Value
			}
		}
	}
	nerr := len(p.errs)
	var matchNode, correlateNode, titleNode, summaryNode *yaml.Node
	var windowNode, whenNode, afterNode, sequenceNode, absenceNode, forNode, keepNode *yaml.Node
	p.mapping(n, name, ruleKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "id":
			s, ok := p.scalar(v, name, "id")
			if !ok {
				return
			}
			if !ruleIDRe.MatchString(s) {
				p.errf(v, name, "invalid rule id %q (letters, digits, _ and -, in dot-separated parts)", s)
				return
			}
			r.ID = s
		case "title":
			if s, ok := p.scalar(v, name, "title"); ok {
				r.Title, titleNode = s, v
			}
		case "summary":
			if s, ok := p.scalar(v, name, "summary"); ok {
				r.Summary, summaryNode = s, v
			}
		case "severity":
			s, ok := p.scalar(v, name, "severity")
			if !ok {
				return
			}
			if !contains(Severities, s) {
				msg := fmt.Sprintf("invalid severity %q (want one of %s)", s, strings.Join(Severities, ", "))
				if sug := suggest(s, Severities); sug != "" {
					msg = fmt.Sprintf("invalid severity %q (did you mean %q?)", s, sug)
				}
				p.errf(v, name, "%s", msg)
				return
			}
			r.Severity = s
		case "escalate":
			r.Escalate = p.parseEscalate(v, name)
		case "runbook":
			if s, ok := p.scalar(v, name, "runbook"); ok {
				r.Runbook = s
			}
		case "labels":
			r.Labels = p.parseLabels(v, name)
		case "match":
			matchNode = v
		case "for":
			forNode = v
		case "keep_firing_for":
			keepNode = v
		case "inhibited_by":
			r.InhibitedBy = p.parseInhibit(v, name, r)
		case "correlate":
			correlateNode = v
			if v.Kind != yaml.MappingNode {
				p.errf(v, name, "correlate: expected a mapping with by, window and when")
				return
			}
			p.mapping(v, name, correlateKeys, func(key string, k, v *yaml.Node) {
				switch key {
				case "by":
					r.By = p.parseBy(v, name)
				case "window":
					windowNode = v
				case "when":
					whenNode = v
				case "sequence":
					sequenceNode = v
				case "absence":
					absenceNode = v
				}
			})
		case "resolve":
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				return
			}
			if v.Kind != yaml.MappingNode {
				p.errf(v, name, "resolve: expected a mapping with after")
				return
			}
			p.mapping(v, name, resolveKeys, func(key string, k, v *yaml.Node) {
				afterNode = v
			})
		}
	})
	if r.ID == "" && !hasKey(n, "id") {
		p.errf(n, name, "missing id")
	}
	// Selectors.
	if matchNode == nil {
		p.errf(n, name, "missing match (named selectors)")
	} else {
		p.parseMatch(matchNode, name, r)
	}
	// Sequence and absence (they need the selectors).
	if sequenceNode != nil {
		r.Sequence = p.parseSequence(sequenceNode, name, r, matchNode)
	}
	if absenceNode != nil {
		r.Absence = p.parseAbsence(absenceNode, name, r, matchNode)
		if sequenceNode != nil {
			p.errf(absenceNode, name, "correlate: a rule has either sequence or absence, not both")
		}
		if whenNode != nil {
			p.errf(whenNode, name, "correlate.when: a rule with absence takes no when (it fires when the expected event is missing)")
		}
	}
	// Window.
	switch {
	case windowNode != nil:
		if d, ok := p.duration(windowNode, name, "correlate.window"); ok {
			r.Window = d
			r.windowLine, r.windowCol = windowNode.Line, windowNode.Column
		}
	case r.Sequence != nil:
		r.Window = r.Sequence.Within
	case r.Absence != nil:
		r.Window = r.Absence.Within
	case sequenceNode != nil || absenceNode != nil:
		// Their errors are reported already.
	case correlateNode != nil && correlateNode.Kind == yaml.MappingNode:
		p.errf(correlateNode, name, "missing correlate.window")
	case correlateNode == nil:
		p.errf(n, name, "missing correlate (with at least window)")
	}
	r.ResolveAfter = r.Window
	if r.Absence != nil {
		// An absence resolves when the expected event arrives.
		r.ResolveAfter = 0
	}
	if afterNode != nil {
		if d, ok := p.duration(afterNode, name, "resolve.after"); ok {
			r.ResolveAfter = d
			r.ResolveGiven = true
			r.resolveLine, r.resolveCol = afterNode.Line, afterNode.Column
		}
	}
	if forNode != nil {
		if d, ok := p.duration(forNode, name, "for"); ok {
			r.For = d
		}
		if absenceNode != nil {
			p.errf(forNode, name, "for: an absence rule waits by itself (absence.within); it takes no for")
		}
	}
	if keepNode != nil {
		if d, ok := p.duration(keepNode, name, "keep_firing_for"); ok {
			r.KeepFiringFor = d
		}
		if afterNode != nil {
			p.errf(keepNode, name, "keep_firing_for: give either keep_firing_for or resolve.after, not both")
		}
	}
	// Condition. When a selector failed to compile the rule is dropped,
	// but its name still counts as known (no second error for it).
	names := make([]string, len(r.Selectors))
	for i, s := range r.Selectors {
		names[i] = s.Name
	}
	if matchNode != nil && matchNode.Kind == yaml.MappingNode && len(matchNode.Content)/2 != len(names) {
		names = names[:0]
		for i := 0; i < len(matchNode.Content); i += 2 {
			names = append(names, matchNode.Content[i].Value)
		}
	}
	if whenNode != nil {
		src, ok := p.scalar(whenNode, name, "correlate.when")
		if ok {
			c, distincts, errs := compileCondition(src, names)
			for _, e := range errs {
				l, col := p.exprPos(whenNode, src, e.line, e.col)
				p.errAt(l, col, name, "correlate.when: %s", e.msg)
			}
			if c != nil {
				c.Line, c.Col = p.exprPos(whenNode, src, 1, 0)
				r.When = c
				r.Distincts = distincts
			}
		}
	} else {
		r.When = &Condition{nsel: len(r.Selectors)}
	}
	// Templates.
	r.tmpl = &templates{}
	r.tmpl.title = p.template(titleNode, name, "title", r.Title)
	r.tmpl.summary = p.template(summaryNode, name, "summary", r.Summary)
	if len(p.errs) > nerr || r.ID == "" {
		return nil
	}
	r.hash = r.computeHash()
	return r
}

func hasKey(n *yaml.Node, key string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}

func (p *fileParser) template(n *yaml.Node, rule, what, src string) *template.Template {
	if n == nil || src == "" {
		return nil
	}
	t, line, msg := parseTemplate(what, src)
	if t != nil {
		return t
	}
	l, c := p.exprPos(n, src, line, 0)
	if line == 0 {
		l, c = n.Line, n.Column
	}
	p.errAt(l, c, rule, "%s: bad template: %s", what, msg)
	return nil
}

func (p *fileParser) parseLabels(n *yaml.Node, rule string) map[string]string {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errf(n, rule, "labels: expected a mapping of names to values")
		return nil
	}
	out := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			p.errf(k, rule, "labels: expected a label name")
			continue
		}
		if _, dup := out[k.Value]; dup {
			p.errf(k, rule, "labels: label %q given twice", k.Value)
			continue
		}
		s, ok := p.scalar(v, rule, "labels."+k.Value)
		if !ok {
			continue
		}
		out[k.Value] = s
	}
	return out
}

func (p *fileParser) parseBy(n *yaml.Node, rule string) []string {
	var items []*yaml.Node
	switch {
	case n.Kind == yaml.SequenceNode:
		items = n.Content
	case n.Kind == yaml.ScalarNode && n.Tag != "!!null":
		items = []*yaml.Node{n}
	case n.Kind == yaml.ScalarNode:
		return []string{}
	default:
		p.errf(n, rule, "correlate.by: expected a list of event paths")
		return []string{"node"}
	}
	out := []string{}
	for _, it := range items {
		it = deref(it)
		s, ok := p.scalar(it, rule, "correlate.by")
		if !ok {
			continue
		}
		if !ingest.ValidPaths(s) {
			msg := fmt.Sprintf("correlate.by: invalid event path %q (want id, node, node_id, source, kind, level, msg or fields.<name>)", s)
			if sug := suggest(s, []string{"id", "node", "node_id", "source", "kind", "level", "msg"}); sug != "" {
				msg = fmt.Sprintf("correlate.by: invalid event path %q (did you mean %q?)", s, sug)
			}
			p.errf(it, rule, "%s", msg)
			continue
		}
		if contains(out, s) {
			p.errf(it, rule, "correlate.by: %q given twice", s)
			continue
		}
		out = append(out, s)
	}
	return out
}

func (p *fileParser) duration(n *yaml.Node, rule, what string) (time.Duration, bool) {
	s, ok := p.scalar(n, rule, what)
	if !ok {
		return 0, false
	}
	d, err := ParseDuration(s)
	if err != nil {
		p.errf(n, rule, "%s: bad duration %q (want e.g. 90s, 15m, 2h, 1d)", what, s)
		return 0, false
	}
	if d <= 0 {
		p.errf(n, rule, "%s: the duration must be positive, not %q", what, s)
		return 0, false
	}
	return d, true
}

func (p *fileParser) parseMatch(n *yaml.Node, rule string, r *Rule) {
	if n.Kind != yaml.MappingNode {
		p.errf(n, rule, "match: expected a mapping of selector names to expressions")
		return
	}
	if len(n.Content) == 0 {
		p.errf(n, rule, "match: at least one selector is required")
		return
	}
	if len(n.Content)/2 > MaxSelectors {
		p.errf(n, rule, "match: too many selectors (%d; the limit is %d)", len(n.Content)/2, MaxSelectors)
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || !selNameRe.MatchString(k.Value) {
			p.errf(k, rule, "match: invalid selector name %q (letters, digits and _, not starting with a digit)", k.Value)
			continue
		}
		if seen[k.Value] {
			p.errf(k, rule, "match: selector %q given twice", k.Value)
			continue
		}
		seen[k.Value] = true
		src, ok := p.scalar(v, rule, "match."+k.Value)
		if !ok {
			continue
		}
		sel := &Selector{Name: k.Value, Expr: src, lists: p.lists}
		sel.Line, sel.Col = p.exprPos(v, src, 1, 0)
		prog, needs, errs := compileSelector(src, p.lists, p.macros)
		for _, e := range errs {
			l, c := p.exprPos(v, src, e.line, e.col)
			p.errAt(l, c, rule, "selector %s: %s", k.Value, e.msg)
		}
		if len(errs) > 0 {
			continue
		}
		for i := range prog.regexps {
			re := &prog.regexps[i]
			re.fileLine, re.fileCol = p.exprPos(v, src, re.line, re.col)
		}
		sel.prog, sel.needs = prog, needs
		r.Selectors = append(r.Selectors, sel)
	}
}

// exprPos maps a position inside the value of scalar node n (1-based line,
// 0-based column in the value; line 0: unknown) to a file position.
func (p *fileParser) exprPos(n *yaml.Node, value string, line, col int) (int, int) {
	if line <= 0 {
		return n.Line, n.Column
	}
	switch n.Style {
	case yaml.LiteralStyle, yaml.FoldedStyle:
		// Content starts on the line after the indicator, indented.
		first := n.Line + 1
		indent := -1
		for l := first; l <= len(p.lines); l++ {
			text := p.lines[l-1]
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
		if line > 1 || n.Line < 1 || n.Line > len(p.lines) {
			return n.Line, n.Column
		}
		// Walk the source of the scalar to account for quotes and escapes.
		text := p.lines[n.Line-1]
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
