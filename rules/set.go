package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/expr-lang/expr/vm"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Set is a loaded, compiled set of rules with the index that matches events
// against all their selectors.
//
// Concurrency: a Set and its rules are immutable after loading; Match,
// MayMatchRaw and every other method are safe for concurrent use (per-call
// scratch state, including the expr VM, comes from a sync.Pool).
type Set struct {
	// Rules sorted by id.
	Rules []*Rule
	// Logger receives selector run-time errors (at most one line per
	// selector). Nil means slog.Default(). Set it before use.
	Logger *slog.Logger

	byID     map[string]*Rule
	files    []string
	ix       *index
	errors   atomic.Uint64
	disabled []*Rule // rules an override took out (enabled: false)
}

func newSet(rules []*Rule, files []string) *Set {
	sort.Slice(rules, func(i, j int) bool { return rules[i].ID < rules[j].ID })
	s := &Set{Rules: rules, byID: make(map[string]*Rule, len(rules)), files: append([]string(nil), files...)}
	for _, r := range rules {
		s.byID[r.ID] = r
	}
	s.ix = buildIndex(rules)
	return s
}

// NewSet builds a set from rules parsed with ParseFile (for tools and
// tests); duplicate ids are the caller's concern: the first one wins.
func NewSet(rules ...*Rule) *Set {
	seen := map[string]bool{}
	var out []*Rule
	var files []string
	for _, r := range rules {
		if seen[r.ID] {
			continue
		}
		seen[r.ID] = true
		out = append(out, r)
		if !contains(files, r.File) {
			files = append(files, r.File)
		}
	}
	return newSet(out, files)
}

// Rule returns the rule with the given id, or nil.
func (s *Set) Rule(id string) *Rule {
	if s == nil {
		return nil
	}
	return s.byID[id]
}

// Disabled returns the rules an override took out of the set (enabled:
// false), sorted by id. They were validated like the others; their
// incidents never fire and they inhibit nothing.
func (s *Set) Disabled() []*Rule {
	if s == nil {
		return nil
	}
	out := append([]*Rule(nil), s.disabled...)
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// DisabledRule returns the disabled rule with the given id, or nil.
func (s *Set) DisabledRule(id string) *Rule {
	if s == nil {
		return nil
	}
	for _, r := range s.disabled {
		if r.ID == id {
			return r
		}
	}
	return nil
}

// DisabledBy returns where an override disabled the rule (ok false when
// the rule is enabled).
func (r *Rule) DisabledBy() (Origin, bool) {
	if r.disabled == nil {
		return Origin{}, false
	}
	return *r.disabled, true
}

// Files returns the files the set was loaded from, in load order.
func (s *Set) Files() []string { return append([]string(nil), s.files...) }

// Errors returns how many selector evaluations failed at run time (each
// counted as no match). A selector reading a field the event lacks is not
// an error.
func (s *Set) Errors() uint64 { return s.errors.Load() }

// Hash returns a content hash of the whole set (its rules' hashes).
func (s *Set) Hash() string {
	h := sha256.New()
	for _, r := range s.Rules {
		h.Write([]byte(r.ID))
		h.Write([]byte{0})
		h.Write([]byte(r.hash))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// SelectorIndex returns the index of the named selector, or -1.
func (r *Rule) SelectorIndex(name string) int {
	for i, s := range r.Selectors {
		if s.Name == name {
			return i
		}
	}
	return -1
}

// path codes of cpred.
const (
	pathID = iota
	pathNode
	pathNodeID
	pathSource
	pathKind
	pathLevel
	pathMsg
	pathField
)

var pathCodes = map[string]uint8{
	"id": pathID, "node": pathNode, "node_id": pathNodeID, "source": pathSource,
	"kind": pathKind, "level": pathLevel, "msg": pathMsg,
}

// cpred is a pred prepared for evaluation.
type cpred struct {
	path  uint8
	op    predOp
	fold  bool
	never bool // lower(x) compared with a literal holding upper case
	slow  bool // fold with a non-ASCII literal: always via strings.ToLower
	ki    bool // fold literal has k or i (see foldSpecial)
	field string
	fid   int32 // index of field among the fields preds look at
	lit   string
}

func prepare(p pred) cpred {
	c := cpred{op: p.op, fold: p.fold, field: p.field, lit: p.lit}
	if p.field != "" {
		c.path = pathField
	} else {
		c.path = pathCodes[p.path]
	}
	if p.fold {
		for i := 0; i < len(p.lit); i++ {
			b := p.lit[i]
			switch {
			case b >= 0x80:
				c.slow = true
			case b >= 'A' && b <= 'Z':
				c.never = true
			case b == 'k' || b == 'i':
				c.ki = true
			}
		}
		if c.slow {
			c.never = false
		}
	}
	return c
}

func (c *cpred) cost() int {
	n := int(c.op)
	if c.fold {
		n += 2
	}
	if c.path == pathField {
		n++
	}
	return n
}

// selEntry is one selector in the index.
type selEntry struct {
	rule    int32
	bit     uint8
	r       *Rule
	sel     *Selector
	clauses [][]int32 // needs besides the source: each any-of pred ids
	sources []string  // nil: any source
	exc     *Exception
}

// index matches events against all selectors of a set.
type index struct {
	preds    []cpred
	sels     []selEntry
	bySource map[string][]int32
	generic  []int32
	raw      rawIndex
	pool     sync.Pool
	evals    []ruleEval // per rule, by index in Set.Rules
	// exc holds the exceptions per rule (by index in Set.Rules). They are
	// not selectors: their needs only spare expr runs of the exception,
	// and the raw index never sees them (an exception only narrows).
	exc [][]selEntry
}

// ruleEval counts the expr work spent on one rule's selectors.
type ruleEval struct {
	n     atomic.Uint64
	nanos atomic.Int64
}

// RuleEval is the selector work spent on one rule: evaluations that reached
// expr (the index turns most events away before) and their total time.
type RuleEval struct {
	Evaluations uint64
	Time        time.Duration
}

// EvalStats returns the selector work per rule id, every rule included.
func (s *Set) EvalStats() map[string]RuleEval {
	out := make(map[string]RuleEval, len(s.Rules))
	for i, r := range s.Rules {
		var e RuleEval
		if s.ix != nil && i < len(s.ix.evals) {
			e = RuleEval{Evaluations: s.ix.evals[i].n.Load(), Time: time.Duration(s.ix.evals[i].nanos.Load())}
		}
		out[r.ID] = e
	}
	return out
}

type scratch struct {
	vm    vm.VM
	env   env
	gen   uint32
	stamp []uint32
	val   []bool
	// The fields preds look at, looked up once per event (several preds
	// often test one field): fstamp[fid] == gen when fval/fkind hold it.
	fstamp []uint32
	fval   []string
	fkind  []uint8
}

// Kinds of a looked-up field value.
const (
	fieldAbsent uint8 = iota
	fieldString
	fieldOther // not a string: left to expr
)

func buildIndex(rules []*Rule) *index {
	ix := &index{bySource: map[string][]int32{}, evals: make([]ruleEval, len(rules))}
	ids := map[pred]int32{}
	fids := map[string]int32{}
	predID := func(p pred) int32 {
		if id, ok := ids[p]; ok {
			return id
		}
		id := int32(len(ix.preds))
		ids[p] = id
		c := prepare(p)
		if c.path == pathField {
			fid, ok := fids[c.field]
			if !ok {
				fid = int32(len(fids))
				fids[c.field] = fid
			}
			c.fid = fid
		}
		ix.preds = append(ix.preds, c)
		return id
	}
	entry := func(ri int, r *Rule, si int, sel *Selector) selEntry {
		e := selEntry{rule: int32(ri), bit: uint8(si), r: r, sel: sel}
		srcDone := false
		for _, need := range sel.needs {
			if !srcDone && need.sourceOnly() {
				srcDone = true
				for _, p := range need.any {
					if !contains(e.sources, p.lit) {
						e.sources = append(e.sources, p.lit)
					}
				}
				continue
			}
			cl := make([]int32, len(need.any))
			for i, p := range need.any {
				cl[i] = predID(p)
			}
			e.clauses = append(e.clauses, cl)
		}
		sort.SliceStable(e.clauses, func(i, j int) bool {
			return ix.clauseCost(e.clauses[i]) < ix.clauseCost(e.clauses[j])
		})
		return e
	}
	for ri, r := range rules {
		for si, sel := range r.Selectors {
			ix.sels = append(ix.sels, entry(ri, r, si, sel))
		}
		for _, x := range r.Exceptions {
			if ix.exc == nil {
				ix.exc = make([][]selEntry, len(rules))
			}
			e := entry(ri, r, 0, x.sel)
			e.exc = x
			ix.exc[ri] = append(ix.exc[ri], e)
		}
	}
	for i, e := range ix.sels {
		if e.sources == nil {
			ix.generic = append(ix.generic, int32(i))
		}
	}
	for i, e := range ix.sels {
		for _, src := range e.sources {
			ix.bySource[src] = append(ix.bySource[src], int32(i))
		}
	}
	for src, list := range ix.bySource {
		list = append(list, ix.generic...)
		sort.Slice(list, func(a, b int) bool { return list[a] < list[b] })
		ix.bySource[src] = list
	}
	ix.raw = buildRaw(ix)
	n, nf := len(ix.preds), len(fids)
	ix.pool.New = func() any {
		return &scratch{stamp: make([]uint32, n), val: make([]bool, n),
			fstamp: make([]uint32, nf), fval: make([]string, nf), fkind: make([]uint8, nf)}
	}
	return ix
}

func (ix *index) clauseCost(cl []int32) int {
	c := 0
	for _, id := range cl {
		c = max(c, ix.preds[id].cost())
	}
	return c*8 + len(cl)
}

// Match calls fn once for every rule with at least one selector matching
// ev, with bit i of mask set when Selectors[i] matched; rules come in the
// order of Set.Rules. Plain string needs derived from the selectors are
// checked first, so most events never reach expr. A selector failing at run
// time counts as no match (see Errors). fn must not retain ev's scratch
// state; it may call Match again.
func (s *Set) Match(ev *ingest.Event, fn func(r *Rule, mask uint64)) {
	ix := s.ix
	if ix == nil {
		return
	}
	list, ok := ix.bySource[ev.Source]
	if !ok {
		list = ix.generic
	}
	if len(list) == 0 {
		return
	}
	sc := ix.pool.Get().(*scratch)
	sc.gen++
	if sc.gen == 0 { // wrapped: forget every stamp
		clear(sc.stamp)
		clear(sc.fstamp)
		sc.gen = 1
	}
	envSet := false
	cur := int32(-1)
	var curRule *Rule
	var mask uint64
	for _, si := range list {
		e := &ix.sels[si]
		if e.rule != cur {
			if mask != 0 && !s.excluded(sc, ev, cur, &envSet) {
				fn(curRule, mask)
			}
			cur, curRule, mask = e.rule, e.r, 0
		}
		if !ix.needsHold(sc, ev, e) {
			continue
		}
		if !envSet {
			sc.env.set(ev)
			envSet = true
		}
		sc.env.Lists = e.sel.lists
		start := time.Now()
		out, err := sc.vm.Run(e.sel.prog.p, &sc.env)
		st := &ix.evals[e.rule]
		st.n.Add(1)
		st.nanos.Add(int64(time.Since(start)))
		if err != nil {
			s.selectorError(e, ev, err)
			continue
		}
		if b, _ := out.(bool); b {
			mask |= 1 << e.bit
		}
	}
	if mask != 0 && !s.excluded(sc, ev, cur, &envSet) {
		fn(curRule, mask)
	}
	sc.env = env{} // do not keep the event alive from the pool
	ix.pool.Put(sc)
}

// excluded reports whether an exception of the rule at index rule matches
// ev. An exception failing at run time counts as no match (the event is
// not excluded).
func (s *Set) excluded(sc *scratch, ev *ingest.Event, rule int32, envSet *bool) bool {
	ix := s.ix
	if ix.exc == nil || len(ix.exc[rule]) == 0 {
		return false
	}
	for i := range ix.exc[rule] {
		e := &ix.exc[rule][i]
		if e.sources != nil && !contains(e.sources, ev.Source) {
			continue
		}
		if !ix.needsHold(sc, ev, e) {
			continue
		}
		if !*envSet {
			sc.env.set(ev)
			*envSet = true
		}
		sc.env.Lists = e.sel.lists
		start := time.Now()
		out, err := sc.vm.Run(e.sel.prog.p, &sc.env)
		st := &ix.evals[rule]
		st.n.Add(1)
		st.nanos.Add(int64(time.Since(start)))
		if err != nil {
			s.selectorError(e, ev, err)
			continue
		}
		if b, _ := out.(bool); b {
			return true
		}
	}
	return false
}

func (s *Set) selectorError(e *selEntry, ev *ingest.Event, err error) {
	if e.sel.prog.missingField(ev) {
		return // a field the event lacks: no match, not an error
	}
	s.errors.Add(1)
	st := e.sel.prog.state
	st.errors.Add(1)
	if st.logged.CompareAndSwap(false, true) {
		log := s.Logger
		if log == nil {
			log = slog.Default()
		}
		msg := err.Error()
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		if e.exc != nil {
			log.Warn("rule exception failed at run time; counted as no match, the event is not excluded (logged once per exception)",
				"rule", e.r.ID, "exception", e.exc.Name, "file", e.exc.File, "line", e.exc.Line,
				"event", ev.ID, "err", msg)
			return
		}
		log.Warn("rule selector failed at run time; counted as no match (logged once per selector)",
			"rule", e.r.ID, "selector", e.sel.Name, "file", e.r.File, "line", e.sel.Line,
			"event", ev.ID, "err", msg)
	}
}

// Errors returns how many times the selector failed at run time in Match.
func (s *Selector) Errors() uint64 {
	if s.prog.state == nil {
		return 0
	}
	return s.prog.state.errors.Load()
}

func (ix *index) needsHold(sc *scratch, ev *ingest.Event, e *selEntry) bool {
	for _, cl := range e.clauses {
		ok := false
		for _, id := range cl {
			var v bool
			if sc.stamp[id] == sc.gen {
				v = sc.val[id]
			} else {
				v = ix.preds[id].eval(sc, ev)
				sc.stamp[id], sc.val[id] = sc.gen, v
			}
			if v {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// eval tests the pred on ev. It errs on the side of true: a field value
// that is not a string is left to expr. Fields are looked up once per event
// in sc (several preds often test one field).
func (c *cpred) eval(sc *scratch, ev *ingest.Event) bool {
	var v string
	switch c.path {
	case pathID:
		v = ev.ID
	case pathNode:
		v = ev.Node
	case pathNodeID:
		v = ev.NodeID
	case pathSource:
		v = ev.Source
	case pathKind:
		v = ev.Kind
	case pathLevel:
		v = ev.Level
	case pathMsg:
		v = ev.Msg
	case pathField:
		if sc.fstamp[c.fid] != sc.gen {
			sc.fstamp[c.fid] = sc.gen
			sc.fval[c.fid], sc.fkind[c.fid] = "", fieldAbsent
			if x, ok := ev.Fields[c.field]; ok && x != nil {
				if s, ok := x.(string); ok {
					sc.fval[c.fid], sc.fkind[c.fid] = s, fieldString
				} else {
					sc.fkind[c.fid] = fieldOther
				}
			}
		}
		switch sc.fkind[c.fid] {
		case fieldAbsent:
			return false
		case fieldOther:
			return true
		}
		v = sc.fval[c.fid]
	}
	if !c.fold {
		return plainOp(c.op, v, c.lit)
	}
	return c.foldOp(v)
}

func plainOp(op predOp, v, lit string) bool {
	switch op {
	case opEq:
		return v == lit
	case opPrefix:
		return strings.HasPrefix(v, lit)
	case opSuffix:
		return strings.HasSuffix(v, lit)
	default:
		return strings.Contains(v, lit)
	}
}

// foldSpecial are the only non-ASCII runes that strings.ToLower maps to
// ASCII: KELVIN SIGN → k and LATIN CAPITAL LETTER I WITH DOT ABOVE → i.
const (
	kelvin    = "\u212a"
	dottedCap = "\u0130"
)

// foldOp reports whether op(strings.ToLower(v), lit) holds without
// allocating in the common case.
func (c *cpred) foldOp(v string) bool {
	if c.never {
		return false
	}
	if c.slow || (c.ki && (strings.Contains(v, kelvin) || strings.Contains(v, dottedCap))) {
		return plainOp(c.op, strings.ToLower(v), c.lit)
	}
	lit := c.lit
	switch c.op {
	case opEq:
		return len(v) == len(lit) && equalFoldASCII(v, lit)
	case opPrefix:
		return len(v) >= len(lit) && equalFoldASCII(v[:len(lit)], lit)
	case opSuffix:
		return len(v) >= len(lit) && equalFoldASCII(v[len(v)-len(lit):], lit)
	default:
		return indexFoldASCII(v, lit) >= 0
	}
}

// equalFoldASCII reports whether lower-casing the ASCII letters of s gives
// lit (lit has no upper-case ASCII; non-ASCII bytes never match).
func equalFoldASCII(s, lit string) bool {
	for i := 0; i < len(lit); i++ {
		b := s[i]
		if b >= 'A' && b <= 'Z' {
			b += 'a' - 'A'
		}
		if b != lit[i] {
			return false
		}
	}
	return true
}

// indexFoldASCII finds lit in s, lower-casing the ASCII letters of s.
func indexFoldASCII(s, lit string) int {
	n := len(lit)
	if n == 0 {
		return 0
	}
	c0 := lit[0]
	up := c0
	if c0 >= 'a' && c0 <= 'z' {
		up = c0 - ('a' - 'A')
	}
	for i := 0; i+n <= len(s); {
		rest := s[i : len(s)-n+1]
		j := strings.IndexByte(rest, c0)
		if up != c0 {
			if k := strings.IndexByte(rest, up); k >= 0 && (j < 0 || k < j) {
				j = k
			}
		}
		if j < 0 {
			return -1
		}
		i += j
		if equalFoldASCII(s[i:i+n], lit) {
			return i
		}
		i++
	}
	return -1
}

// rawIndex holds the needs of every selector whose literal appears verbatim
// in the raw text of a record (see MayMatchRaw).
type rawIndex struct {
	always bool // some selector has no raw need
	lits   []rawLit
	sels   []rawSel
}

type rawLit struct {
	lit  string
	fold bool
	ki   bool
}

type rawSel struct {
	sources []string
	clauses [][]int32 // any-of rawLit ids
}

// rawPath reports whether a decoder takes the value of path verbatim from
// the raw record: the message, the logger (kind) and the field values.
func rawPath(c cpred) bool {
	return c.path == pathMsg || c.path == pathKind || c.path == pathField
}

// rawSafe reports whether lit appears unchanged in every encoding of the
// raw record (hclog text quoting, JSON, XML): printable ASCII without
// quotes, backslash and the characters JSON and XML escape.
func rawSafe(lit string) bool {
	if lit == "" {
		return false
	}
	for i := 0; i < len(lit); i++ {
		b := lit[i]
		if b < 0x20 || b > 0x7e {
			return false
		}
		switch b {
		case '"', '\\', '<', '>', '&', '\'':
			return false
		}
	}
	return true
}

func buildRaw(ix *index) rawIndex {
	var ri rawIndex
	ids := map[rawLit]int32{}
	for _, e := range ix.sels {
		rs := rawSel{sources: e.sources}
		for _, cl := range e.clauses {
			var rc []int32
			ok := true
			for _, id := range cl {
				c := ix.preds[id]
				if !rawPath(c) || !rawSafe(c.lit) {
					ok = false
					break
				}
				l := rawLit{lit: c.lit, fold: c.fold, ki: c.ki}
				if !c.fold {
					l.ki = false
				}
				lid, seen := ids[l]
				if !seen {
					lid = int32(len(ri.lits))
					ids[l] = lid
					ri.lits = append(ri.lits, l)
				}
				rc = append(rc, lid)
			}
			if ok {
				rs.clauses = append(rs.clauses, rc)
			}
		}
		if len(rs.clauses) == 0 && rs.sources == nil {
			ri.always = true
		}
		ri.sels = append(ri.sels, rs)
	}
	return ri
}

// MayMatchRaw reports whether any selector of the set may match an event
// decoded from the raw record line (one log line, or one multi-line record
// as a whole). It is false only when, for every selector, some literal the
// selector requires in the message, logger or a field value (and that would
// appear verbatim in the raw text) is absent from line; selectors without
// such literals make it true. Replay uses it to skip decoding records no
// rule cares about. The decoder must take msg, kind and field values
// verbatim from the line (unescaping aside).
func (s *Set) MayMatchRaw(line []byte) bool {
	return s.mayMatchRaw("", false, line)
}

// MayMatchRawSource is MayMatchRaw for a line whose events will have the
// given Event.Source: selectors requiring another source are skipped too.
func (s *Set) MayMatchRawSource(source string, line []byte) bool {
	return s.mayMatchRaw(source, true, line)
}

func (s *Set) mayMatchRaw(source string, bySource bool, line []byte) bool {
	if s.ix == nil {
		return false
	}
	ri := &s.ix.raw
	if ri.always && !bySource {
		return true
	}
	text := unsafe.String(unsafe.SliceData(line), len(line))
	var checked, present [2]uint64
	var lowered string
	special := -1 // unknown; 0 no, 1 yes: line holds a rune that lowers to k or i
	has := func(id int32) bool {
		if id < 128 && checked[id>>6]&(1<<(id&63)) != 0 {
			return present[id>>6]&(1<<(id&63)) != 0
		}
		l := &ri.lits[id]
		var v bool
		if !l.fold {
			v = strings.Contains(text, l.lit)
		} else {
			if l.ki && special < 0 {
				special = 0
				if strings.Contains(text, kelvin) || strings.Contains(text, dottedCap) {
					special = 1
				}
			}
			if l.ki && special == 1 {
				if lowered == "" {
					lowered = strings.ToLower(text)
				}
				v = strings.Contains(lowered, l.lit)
			} else {
				v = indexFoldASCII(text, l.lit) >= 0
			}
		}
		if id < 128 {
			checked[id>>6] |= 1 << (id & 63)
			if v {
				present[id>>6] |= 1 << (id & 63)
			}
		}
		return v
	}
sels:
	for i := range ri.sels {
		rs := &ri.sels[i]
		if bySource && rs.sources != nil && !contains(rs.sources, source) {
			continue
		}
		for _, cl := range rs.clauses {
			ok := false
			for _, id := range cl {
				if has(id) {
					ok = true
					break
				}
			}
			if !ok {
				continue sels
			}
		}
		return true
	}
	return false
}
