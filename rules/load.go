package rules

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
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
// Files are named with forward slashes on every system (Rule.File,
// PosError.File, Set.Files), so that a file has one name on Windows too.
func LoadFiles(paths ...string) (*Set, error) {
	return LoadOverlay(paths)
}

// LoadOverlay loads the rule files paths like LoadFiles, then applies the
// overrides: of each overlay file on top of them (a rule test that tunes
// the rules for its cases). An overlay's other keys are not read; an
// overlay's override replaces what the rule files' overrides set.
func LoadOverlay(paths []string, overlays ...string) (*Set, error) {
	var ins []input
	var names []string
	for i, p := range append(append([]string(nil), paths...), overlays...) {
		data, err := os.ReadFile(p)
		ins = append(ins, input{name: filepath.ToSlash(p), data: data, err: err, overlay: i >= len(paths)})
		if i < len(paths) {
			names = append(names, filepath.ToSlash(p))
		}
	}
	return load(ins, names)
}

// load loads the inputs into a set of the named files.
func load(ins []input, names []string) (*Set, error) {
	l := newLoader()
	rs, disabled := l.run(ins)
	if len(l.errs) > 0 {
		return nil, l.joined()
	}
	s := newSet(rs, names)
	s.disabled = disabled
	return s, nil
}

// File is a rule file by name and content: what LoadData loads, as the
// correlator hands its rules to the sidecars' edge filters through NATS.
type File struct {
	// Name is the file's name with forward slashes (Set.Files).
	Name string `json:"name"`
	// Data is the file's content.
	Data []byte `json:"data"`
}

// LoadData loads rule files given by content into one set, like LoadFiles
// loads them from disk (same names, errors and overrides).
func LoadData(files ...File) (*Set, error) {
	ins := make([]input, len(files))
	names := make([]string, len(files))
	for i, f := range files {
		ins[i] = input{name: filepath.ToSlash(f.Name), data: f.Data}
		names[i] = ins[i].name
	}
	return load(ins, names)
}

// ParseFile parses and compiles the rules of one file; name, with forward
// slashes as LoadFiles gives it, is used in positions. Its overrides apply
// to its own rules. It returns every error of the file at once (joined
// *PosError) together with the rules that compiled (disabled ones left
// out).
func ParseFile(name string, data []byte) ([]*Rule, error) {
	l := newLoader()
	rs, _ := l.run([]input{{name: filepath.ToSlash(name), data: data}})
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
	// Rules that failed to load are still defined: no second error for
	// the rules naming them.
	known := map[string]bool{}
	for _, d := range docs {
		if d.id != "" {
			known[d.id] = true
		}
	}
	l.errs = append(l.errs, checkRefs(all, known)...)
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
// defined rules (a disabled one included: it then never inhibits, which
// lint says).
func checkRefs(all []*Rule, known map[string]bool) []*PosError {
	var errs []*PosError
	for _, r := range all {
		for i, id := range r.InhibitedBy {
			if known[id] {
				continue
			}
			ids := make([]string, 0, len(known))
			for k := range known {
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
