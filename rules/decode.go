package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// Loading runs in two phases, as Prometheus' model/rulefmt does. Phase 1
// (this file) decodes every file into tagged structs whose fields keep
// their YAML nodes, and with them their positions: fileDoc, ruleDoc,
// correlateDoc, ... Overrides then change those documents (override.go).
// Phase 2 (validate.go) validates and compiles each effective rule section
// by section; every error names the file, line and column of the node the
// value came from, which for an overridden part is the override's.

// fileCtx is one file being loaded: what positions and expressions in it
// need.
type fileCtx struct {
	name   string
	idx    int // load order
	lines  []string
	lists  map[string][]string
	macros map[string]*Macro
	// layer is 0 for rule files and 1 for overlays (the overrides of a
	// rule test), which apply on top of the rule files.
	layer int
}

// yn is a YAML node with the file it was read from and, when an override
// gave it, that override. The zero yn is an absent key.
type yn struct {
	*yaml.Node
	f  *fileCtx
	ov *overrideDoc
}

func (n yn) ok() bool { return n.Node != nil }

// null reports whether n is given as null (or empty).
func (n yn) null() bool {
	return n.Node != nil && n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// sub returns the child c of n, in n's file.
func (n yn) sub(c *yaml.Node) yn { return yn{Node: deref(c), f: n.f, ov: n.ov} }

// entry is one key of a mapping whose keys are names (labels, params,
// exceptions): the key node and the value node.
type entry struct {
	key, val yn
	// decl is, for a param an override sets, the rule's own value.
	decl yn
}

func (e entry) name() string { return e.key.Value }

// fileDoc is phase 1's view of a rule file.
type fileDoc struct {
	Rules     yn `yaml:"rules"`
	Lists     yn `yaml:"lists"`
	Macros    yn `yaml:"macros"`
	Overrides yn `yaml:"overrides"`

	rules     []*ruleDoc
	overrides []*overrideDoc
}

// ruleDoc is one rule as written, every key a node. The field order is
// the order "known keys" lists them in.
type ruleDoc struct {
	ID            yn `yaml:"id"`
	Title         yn `yaml:"title"`
	Summary       yn `yaml:"summary"`
	Severity      yn `yaml:"severity"`
	Escalate      yn `yaml:"escalate"`
	Runbook       yn `yaml:"runbook"`
	Labels        yn `yaml:"labels"`
	Match         yn `yaml:"match"`
	Correlate     yn `yaml:"correlate"`
	Resolve       yn `yaml:"resolve"`
	For           yn `yaml:"for"`
	KeepFiringFor yn `yaml:"keep_firing_for"`
	InhibitedBy   yn `yaml:"inhibited_by"`
	Actions       yn `yaml:"actions"`

	node yn
	nth  int
	name string // the id, or "#N", for messages
	id   string // the id when it is valid
	// bad is set when phase 1 or an override reported an error for it.
	bad  bool
	corr *correlateDoc // nil unless correlate is a mapping
	res  resolveDoc
	// labels, params and exceptions after the overrides: per name.
	labels, params, exceptions []entry
	// disabled is the enabled: false that took the rule out.
	disabled yn
	enabled  yn // an override's enabled: true
}

// correlateDoc is a rule's correlate section.
type correlateDoc struct {
	By       yn `yaml:"by"`
	Window   yn `yaml:"window"`
	When     yn `yaml:"when"`
	Sequence yn `yaml:"sequence"`
	Absence  yn `yaml:"absence"`
	Params   yn `yaml:"params"`

	seq *sequenceDoc // nil unless sequence is a mapping
	abs *absenceDoc  // nil unless absence is a mapping
}

type sequenceDoc struct {
	Within yn `yaml:"within"`
	By     yn `yaml:"by"`
	Steps  yn `yaml:"steps"`
}

type absenceDoc struct {
	After  yn `yaml:"after"`
	Expect yn `yaml:"expect"`
	Within yn `yaml:"within"`
}

type resolveDoc struct {
	After yn `yaml:"after"`
}

// loader collects the errors of one load.
type loader struct {
	errs  []*PosError
	order map[string]int // file name → load order
}

func (l *loader) errAt(f *fileCtx, line, col int, rule, format string, args ...any) {
	l.errs = append(l.errs, &PosError{File: f.name, Line: line, Col: col, Rule: rule, Msg: fmt.Sprintf(format, args...)})
}

func (l *loader) errf(n yn, rule, format string, args ...any) {
	l.errAt(n.f, n.Line, n.Column, rule, format, args...)
}

// decodeFile is phase 1 of one file. Lists and macros are read at once:
// the file's expressions need them. An overlay (a rule test) gives only
// its overrides: its other keys belong to its reader.
func (l *loader) decodeFile(f *fileCtx, data []byte) *fileDoc {
	root := l.parseYAML(f, data)
	if root.Node == nil {
		return nil
	}
	if root.null() {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		l.errf(root, "", "expected a mapping with rules: (and optionally lists:)")
		return nil
	}
	d := &fileDoc{}
	if f.layer > 0 {
		for i := 0; i+1 < len(root.Content); i += 2 {
			if root.Content[i].Value == "overrides" {
				d.Overrides = root.sub(root.Content[i+1])
			}
		}
	} else {
		l.decodeKeys(root, "", d, nil)
	}
	if d.Lists.ok() {
		l.parseLists(d.Lists)
	}
	if d.Macros.ok() {
		// After the lists, wherever they are in the file: macros use them.
		l.parseMacros(d.Macros)
	}
	if d.Rules.ok() && !d.Rules.null() {
		l.decodeRules(d)
	}
	if d.Overrides.ok() && !d.Overrides.null() {
		l.decodeOverrides(d)
	}
	return d
}

// parseYAML parses the one document of a file; an empty file gives no node.
func (l *loader) parseYAML(f *fileCtx, data []byte) yn {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) {
			l.yamlError(f, data, err)
		}
		return yn{}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		l.errf(yn{Node: &extra, f: f}, "", "a rule file holds one YAML document; put all rules under one rules: list")
	} else if !errors.Is(err, io.EOF) {
		l.yamlError(f, data, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return yn{}
	}
	return yn{Node: deref(doc.Content[0]), f: f}
}

// fileList returns the items of a file's list of rules or overrides (what),
// MaxRulesPerFile at most; notList is the error when n is not a list.
func (l *loader) fileList(n yn, what, notList string) []*yaml.Node {
	if n.Kind != yaml.SequenceNode {
		l.errf(n, "", "%s", notList)
		return nil
	}
	items := n.Content
	if len(items) > MaxRulesPerFile {
		l.errf(n.sub(items[MaxRulesPerFile]), "", "too many %s in one file (%d; the limit is %d)", what, len(items), MaxRulesPerFile)
		items = items[:MaxRulesPerFile]
	}
	return items
}

// namedEntries is entries with names checked (letters, digits and _):
// key names the mapping, noun one entry.
func (l *loader) namedEntries(n yn, rule, key, notMapping, noun string) []entry {
	var out []entry
	for _, e := range l.entries(n, rule, key, notMapping, noun) {
		if !selNameRe.MatchString(e.name()) {
			l.errf(e.key, rule, "%s: invalid %s name %q (letters, digits and _, not starting with a digit)", key, noun, e.name())
			continue
		}
		out = append(out, e)
	}
	return out
}

func (l *loader) decodeRules(d *fileDoc) {
	n := d.Rules
	for i, it := range l.fileList(n, "rules", "rules: expected a list of rules") {
		if rd := l.decodeRule(n.sub(it), i+1); rd != nil {
			d.rules = append(d.rules, rd)
		}
	}
}

// decodeRule is phase 1 of one rule: its keys and sections, and its id
// (overrides find rules by it).
func (l *loader) decodeRule(n yn, nth int) *ruleDoc {
	name := fmt.Sprintf("#%d", nth)
	if n.Kind != yaml.MappingNode {
		l.errf(n, name, "expected a rule (a mapping with id, match, correlate, ...)")
		return nil
	}
	// The id first, so that every error can name the rule.
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "id" {
			if v := deref(n.Content[i+1]); v.Kind == yaml.ScalarNode && v.Value != "" {
				name = v.Value
			}
		}
	}
	d := &ruleDoc{node: n, nth: nth, name: name}
	nerr := len(l.errs)
	l.decodeKeys(n, name, d, nil)
	if d.ID.ok() {
		if s, ok := l.scalar(d.ID, name, "id"); ok {
			if ruleIDRe.MatchString(s) {
				d.id = s
			} else {
				l.errf(d.ID, name, "invalid rule id %q (letters, digits, _ and -, in dot-separated parts)", s)
			}
		}
	}
	if d.Correlate.ok() {
		d.corr = l.decodeCorrelate(d.Correlate, name)
	}
	if !d.Resolve.null() {
		l.decodeResolve(d.Resolve, name, &d.res, nil)
	}
	d.labels = l.decodeLabels(d.Labels, name)
	if d.corr != nil && d.corr.Params.ok() {
		d.params = l.decodeParams(d.corr.Params, name)
	}
	d.bad = len(l.errs) > nerr
	return d
}

// decodeResolve is phase 1 of a rule's or an override's resolve (when
// given); hint explains an unknown key.
func (l *loader) decodeResolve(n yn, rule string, res *resolveDoc, hint func(key string) string) {
	if !n.ok() {
		return
	}
	if n.Kind != yaml.MappingNode {
		l.errf(n, rule, "resolve: expected a mapping with after")
		return
	}
	l.decodeKeys(n, rule, res, hint)
}

// decodeLabels is phase 1 of a rule's or an override's labels (when
// given).
func (l *loader) decodeLabels(n yn, rule string) []entry {
	if !n.ok() {
		return nil
	}
	return l.entries(n, rule, "labels", "labels: expected a mapping of names to values", "label")
}

func (l *loader) decodeCorrelate(n yn, name string) *correlateDoc {
	if n.Kind != yaml.MappingNode {
		l.errf(n, name, "correlate: expected a mapping with by, window and when")
		return nil
	}
	c := &correlateDoc{}
	l.decodeKeys(n, name, c, nil)
	if c.Sequence.ok() {
		if c.Sequence.Kind != yaml.MappingNode {
			l.errf(c.Sequence, name, "correlate.sequence: expected a mapping with within, steps and optionally by")
		} else {
			c.seq = &sequenceDoc{}
			l.decodeKeys(c.Sequence, name, c.seq, nil)
		}
	}
	if c.Absence.ok() {
		if c.Absence.Kind != yaml.MappingNode {
			l.errf(c.Absence, name, "correlate.absence: expected a mapping with after, expect and within")
		} else {
			c.abs = &absenceDoc{}
			l.decodeKeys(c.Absence, name, c.abs, nil)
		}
	}
	return c
}

// entries reads a mapping of names (labels, params, exceptions) into its
// entries: names are plain and given once.
func (l *loader) entries(n yn, rule, what, notMapping, noun string) []entry {
	if n.null() {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		l.errf(n, rule, "%s", notMapping)
		return nil
	}
	var out []entry
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.sub(n.Content[i]), n.sub(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			l.errf(k, rule, "%s: expected a %s name", what, noun)
			continue
		}
		if seen[k.Value] {
			l.errf(k, rule, "%s: %s %q given twice", what, noun, k.Value)
			continue
		}
		seen[k.Value] = true
		out = append(out, entry{key: k, val: v})
	}
	return out
}

// keyFields maps a tagged struct type to its keys, in field order, and the
// index of each key's field.
type keyFields struct {
	keys  []string
	index map[string]int
}

var keyFieldsCache sync.Map // reflect.Type → *keyFields

func fieldsOf(t reflect.Type) *keyFields {
	if kf, ok := keyFieldsCache.Load(t); ok {
		return kf.(*keyFields)
	}
	kf := &keyFields{index: map[string]int{}}
	ynType := reflect.TypeOf(yn{})
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := f.Tag.Get("yaml")
		if key == "" || f.Type != ynType {
			continue
		}
		kf.keys = append(kf.keys, key)
		kf.index[key] = i
	}
	keyFieldsCache.Store(t, kf)
	return kf
}

// decodeKeys reads mapping n into the yn fields of *dst by their yaml tags,
// reporting unknown and repeated keys. hint, when set, explains a key the
// struct does not have (instead of listing the known keys).
func (l *loader) decodeKeys(n yn, rule string, dst any, hint func(key string) string) {
	v := reflect.ValueOf(dst).Elem()
	kf := fieldsOf(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.sub(n.Content[i]), n.sub(n.Content[i+1])
		key := k.Value
		if k.Kind != yaml.ScalarNode {
			l.errf(k, rule, "expected a plain key")
			continue
		}
		if k.Tag == "!!merge" {
			l.errf(k, rule, "YAML merge keys (<<) are not supported")
			continue
		}
		idx, known := kf.index[key]
		if !known {
			l.errf(k, rule, "%s", unknownKey(key, kf.keys, hint))
			continue
		}
		if seen[key] {
			l.errf(k, rule, "key %q given twice", key)
			continue
		}
		seen[key] = true
		v.Field(idx).Set(reflect.ValueOf(val))
	}
}

func unknownKey(key string, known []string, hint func(string) string) string {
	if hint != nil {
		if h := hint(key); h != "" {
			return h
		}
	}
	msg := fmt.Sprintf("unknown key %q", key)
	if s := suggest(key, known); s != "" {
		return msg + fmt.Sprintf(" (did you mean %q?)", s)
	}
	return msg + " (known keys: " + strings.Join(known, ", ") + ")"
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
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
func (l *loader) scalar(n yn, rule, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		l.errf(n, rule, "%s: expected a single value", what)
		return "", false
	}
	if n.Tag == "!!null" {
		return "", true
	}
	return n.Value, true
}

func (l *loader) parseLists(n yn) {
	f := n.f
	if n.null() {
		return
	}
	if n.Kind != yaml.MappingNode {
		l.errf(n, "", "lists: expected a mapping of list names to lists of strings")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.sub(n.Content[i]), n.sub(n.Content[i+1])
		if !listNameRe.MatchString(k.Value) {
			l.errf(k, "", "lists: invalid list name %q (letters, digits and _)", k.Value)
			continue
		}
		if _, dup := f.lists[k.Value]; dup {
			l.errf(k, "", "lists: list %q given twice", k.Value)
			continue
		}
		if v.Kind != yaml.SequenceNode {
			l.errf(v, "", "lists: %s: expected a list of strings", k.Value)
			continue
		}
		items := []string{}
		for _, it := range v.Content {
			it := v.sub(it)
			if it.Kind != yaml.ScalarNode || it.Tag == "!!null" {
				l.errf(it, "", "lists: %s: expected a string", k.Value)
				continue
			}
			items = append(items, it.Value)
		}
		f.lists[k.Value] = items
	}
}

// parseMacros reads macros: named boolean expressions that selectors of the
// file use by name. A macro may use lists and the macros defined above it.
func (l *loader) parseMacros(n yn) {
	f := n.f
	if n.null() {
		return
	}
	if n.Kind != yaml.MappingNode {
		l.errf(n, "", "macros: expected a mapping of macro names to expressions")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.sub(n.Content[i]), n.sub(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || !selNameRe.MatchString(k.Value) {
			l.errf(k, "", "macros: invalid macro name %q (letters, digits and _, not starting with a digit)", k.Value)
			continue
		}
		if reservedName(k.Value) {
			l.errf(k, "", "macros: %q is a name of the event or a built-in function; choose another name", k.Value)
			continue
		}
		if _, dup := f.macros[k.Value]; dup {
			l.errf(k, "", "macros: macro %q given twice", k.Value)
			continue
		}
		src, ok := l.scalar(v, "", "macros."+k.Value)
		if !ok {
			continue
		}
		m := &Macro{Name: k.Value, Expr: src}
		m.Line, m.Col = f.exprPos(v.Node, src, 1, 0)
		// Check it alone, with the macros above it.
		_, _, errs := compileSelector(src, f.lists, f.macros)
		for _, e := range errs {
			ln, c := f.exprPos(v.Node, src, e.line, e.col)
			l.errAt(f, ln, c, "", "macro %s: %s", k.Value, e.msg)
		}
		if len(errs) > 0 {
			// Still define it, so that selectors using it get no second error.
			m.Expr = "false"
		}
		f.macros[k.Value] = m
	}
}
