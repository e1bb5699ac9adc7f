package correlate

import (
	"encoding/json"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klaxon-dev/klaxon/internal/parallel"
)

// Incremental checkpoints.
//
// The state of a correlator is a set of items, each encoded on its own: one
// per group of a rule (its window, incident, sequence, absence and timeline
// state) and one per source clock. Next to them a small meta record holds
// the watermark, the Advance clock and the incidents of retired rules. The
// correlator records which items changed (a dirty set filled wherever a
// group or clock changes); Checkpoint encodes only those, so the cost of a
// checkpoint follows what changed, not the size of the state.
// RestoreCheckpoint rebuilds the correlator from the meta record and the
// items. How items are stored, and how a crash between the writes of one
// checkpoint is made harmless, is the caller's business (see
// correlate/checkpoint).

// checkpointState is the bookkeeping of incremental checkpoints.
type checkpointState struct {
	// dirty holds the groups changed since the last Checkpoint (the
	// pointers of dropped groups too: their items are deleted).
	dirty map[*group]struct{}
	// pending holds the items handed out by Checkpoint calls whose result
	// was not stored yet (Committed not called), and items the restored
	// checkpoint holds but the correlator no longer has.
	pending map[itemRef]struct{}
	// quiet is set while the correlator rebuilds indexes (nothing changes).
	quiet bool
	// cached are the groups holding evidence encodings (groupjson.go).
	cached map[*group]struct{}
	// stamp numbers the cuts (evidence encodings record the last that
	// used them).
	stamp uint64
	// lastCut is the last Cut, whose evidence encodings the next one
	// hands to the groups once it is encoded.
	lastCut *Cut
}

// itemRef names an item: a group (kind 'g': rule id, group key), a segment
// of a group's window (kind 's': rule id, group key, segment number) or a
// source clock (kind 'c': source, node).
type itemRef struct {
	kind byte
	a, b string
	seg  uint64
}

// ID is the item's id: unique per item and stable.
func (r itemRef) ID() string {
	id := string(r.kind) + "\x00" + r.a + "\x00" + r.b
	if r.kind == 's' {
		id += "\x00" + strconv.FormatUint(r.seg, 10)
	}
	return id
}

// touch records that g changed.
func (c *Correlator) touch(g *group) {
	if c.ckpt.quiet {
		return
	}
	if c.ckpt.dirty == nil {
		c.ckpt.dirty = map[*group]struct{}{}
	}
	c.ckpt.dirty[g] = struct{}{}
}

// touchAll records that every group and clock changed (after Restore of a
// snapshot, whose items are not stored on their own yet).
func (c *Correlator) touchAll() {
	for _, rs := range c.rules {
		for _, g := range rs.groups {
			c.touch(g)
		}
	}
	for _, m := range c.clocks.m {
		for _, cl := range m {
			c.clocks.touch(cl)
		}
	}
}

// Checkpoint is the part of a correlator's state that changed since the
// last stored checkpoint.
type Checkpoint struct {
	// Meta is the meta record: watermark, Advance clock, incidents of
	// retired rules. It is written with every checkpoint.
	Meta []byte
	// Changed are the encoded items that changed, by item id.
	Changed map[string][]byte
	// Deleted are the ids of items the correlator no longer has.
	Deleted []string
}

// checkpointMeta is the meta record.
type checkpointMeta struct {
	Version   int        `json:"version"`
	Watermark time.Time  `json:"watermark"`
	Proc      time.Time  `json:"proc,omitzero"`
	Retired   []Incident `json:"retired,omitempty"`
	// Runbooks are the runbooks of the loaded rules by rule hash: group
	// items leave out an incident's runbook when it is its rule's (a
	// kilobyte of every firing group's item, written again each time the
	// group changes), and a restore puts it back from here, also for the
	// incidents of rules changed since, which it retires.
	Runbooks map[string]string `json:"runbooks,omitempty"`
}

// groupItem is the item of a group: the rule it belongs to (id and hash of
// the definition) and its state as in a snapshot.
type groupItem struct {
	Rule  string `json:"rule"`
	Hash  string `json:"hash"`
	Group *group `json:"group"`
}

type groupItemIn struct {
	Rule  string     `json:"rule"`
	Hash  string     `json:"hash"`
	Group *groupJSON `json:"group"`
}

// clockItem is the item of a source clock.
type clockItem struct {
	Source string `json:"source"`
	Node   string `json:"node"`
	Clock  *clock `json:"clock"`
}

// Checkpoint encodes the items that changed since the last Committed call
// (or restore), the ids of items that are gone, and the meta record. It
// does not forget them: a caller that could not store the checkpoint calls
// Checkpoint again later and gets these items again, with what changed
// since. After the checkpoint was stored, the caller calls Committed before
// the correlator changes again. Checkpoint is Cut and Encode in one.
func (c *Correlator) Checkpoint() (Checkpoint, error) {
	k, err := c.Cut()
	if err != nil {
		return Checkpoint{}, err
	}
	return k.Encode()
}

// Cut is a checkpoint copied but not encoded: the items that changed, as
// they were when Cut was called, so that the correlator goes on while
// another goroutine encodes them (a busy correlator changes megabytes of
// windows and evidence a second; encoding them on its goroutine held up
// every event behind them).
type Cut struct {
	groups  []groupCut
	segs    []segmentCut
	clocks  []clockItem
	deleted []string
	meta    []byte
	// used are the evidence caches Encode used, by live group; the next
	// Cut hands them to the groups once done is set.
	used map[*group]evidenceCache
	// done is set once the cut is encoded; the groups whose entries it
	// shares hold it (not the cut: a group left alone would keep a whole
	// checkpoint's copies alive).
	done *atomic.Bool
	// stamp marks the evidence encodings this cut's encoding uses.
	stamp uint64
}

// groupCut is a copy of a group with what its item names it by.
type groupCut struct {
	id         string
	rule, hash string
	live       *group // the correlator's group (not read by Encode)
	g          *group // the copy
	values     map[string]string
	runbook    string // the rule's (left out of the item's incidents)
	// layout lists the segments holding the window (nil: inline).
	layout *segmentsJSON
}

// segmentCut is a copy of a segment's entries with its item's id.
type segmentCut struct {
	id   string
	item segmentItem
}

// Cut copies the items that changed since the last Committed call (or
// restore) and encodes the meta record, on the correlator's goroutine; as
// with Checkpoint, they are given again until Committed is called. Encode
// encodes the copy on any goroutine.
func (c *Correlator) Cut() (*Cut, error) {
	// The evidence caches are updated in place by the encoding of the cut
	// that carries them: a cut taken while the last one is still being
	// encoded does without (none in klaxon, which writes one checkpoint
	// at a time).
	reuse := true
	if last := c.ckpt.lastCut; last != nil {
		if reuse = last.done.Load(); reuse {
			c.ckpt.keepEncodings(last.used)
			c.ckpt.lastCut = nil
		}
	}
	c.ckpt.stamp++
	if c.ckpt.pending == nil {
		c.ckpt.pending = map[itemRef]struct{}{}
	}
	for g := range c.ckpt.dirty {
		c.ckpt.pending[itemRef{'g', g.rs.rule.ID, g.Key, 0}] = struct{}{}
		c.segmentRefs(g)
	}
	clear(c.ckpt.dirty)
	for cl := range c.clocks.dirty {
		c.ckpt.pending[itemRef{'c', cl.src, cl.node, 0}] = struct{}{}
	}
	clear(c.clocks.dirty)
	k := &Cut{stamp: c.ckpt.stamp, done: new(atomic.Bool)}
	// Segments first: a group's item lists them as this cut stores them.
	for ref := range c.ckpt.pending {
		if ref.kind == 's' {
			c.cutSegment(k, ref)
		}
	}
	for ref := range c.ckpt.pending {
		switch ref.kind {
		case 's': // cut above
		case 'g':
			g := c.liveGroup(ref.a, ref.b)
			if g == nil {
				k.deleted = append(k.deleted, ref.ID())
				continue
			}
			gc := groupCut{id: ref.ID(), rule: g.rs.rule.ID, hash: g.rs.hash, live: g, g: g.cut(k, reuse), values: g.valueMapOrEmpty(), runbook: g.rs.rule.Runbook}
			if g.segs != nil {
				gc.layout = g.segs.layout()
			}
			k.groups = append(k.groups, gc)
		case 'c':
			cl := c.clocks.m[ref.a][ref.b]
			if cl == nil {
				k.deleted = append(k.deleted, ref.ID())
				continue
			}
			k.clocks = append(k.clocks, clockItem{Source: ref.a, Node: ref.b, Clock: &clock{Latest: cl.Latest, Seen: cl.Seen}})
		default:
			return nil, fmt.Errorf("correlator checkpoint: unknown item kind %q", ref.kind)
		}
	}
	meta, err := json.Marshal(checkpointMeta{Version: 3, Watermark: c.watermark, Proc: c.proc, Retired: c.retired, Runbooks: c.runbooks()})
	if err != nil {
		return nil, fmt.Errorf("correlator checkpoint: %w", err)
	}
	k.meta = meta
	c.ckpt.lastCut = k
	return k, nil
}

// liveGroup returns the correlator's group of a rule by key, or nil.
func (c *Correlator) liveGroup(rule, key string) *group {
	if rs := c.rules[rule]; rs != nil {
		return rs.groups[key]
	}
	return nil
}

// segmentRefs marks pending the segment items of a changed group that
// this checkpoint writes or deletes (see segments.go): those whose
// entries changed, those whose entries all left, and all of a group that
// is gone. A window that outgrew segmentFrom is laid out in segments
// here, all of them to be written.
func (c *Correlator) segmentRefs(g *group) {
	live := c.liveGroup(g.rs.rule.ID, g.Key) == g
	if live && g.segs == nil && len(g.Entries) > segmentFrom {
		g.segs = newSegments(len(g.Entries))
	}
	if g.segs == nil {
		return
	}
	ref := itemRef{kind: 's', a: g.rs.rule.ID, b: g.Key}
	for _, ref.seg = range g.segs.gone {
		c.ckpt.pending[ref] = struct{}{}
	}
	g.segs.gone = nil
	for _, sg := range g.segs.list {
		if sg.dirty || !live {
			ref.seg = sg.id
			c.ckpt.pending[ref] = struct{}{}
		}
	}
}

// cutSegment adds to k a copy of the segment ref names, or its deletion
// when it is gone, and records the entries it is stored with.
func (c *Correlator) cutSegment(k *Cut, ref itemRef) {
	g := c.liveGroup(ref.a, ref.b)
	i, start := -1, 0
	if g != nil && g.segs != nil {
		i, start = g.segs.find(ref.seg)
	}
	if i < 0 {
		k.deleted = append(k.deleted, ref.ID())
		return
	}
	sg := &g.segs.list[i]
	k.segs = append(k.segs, segmentCut{id: ref.ID(), item: segmentItem{Rule: ref.a, Key: ref.b, ID: ref.seg,
		Entries: g.shareEntries(k, start, start+sg.n)}})
	sg.stored, sg.dirty = sg.n, false
}

// Encode encodes the cut: safe on any goroutine, once.
func (k *Cut) Encode() (Checkpoint, error) { return k.EncodeWith(nil) }

// EncodeWith encodes the cut as Encode does and hands each item's encoding
// to pack (when not nil), on the encoding goroutines; the checkpoint holds
// what pack returns, which must not be the bytes given: they are reused
// for the next item (a compressing store packs each item as soon as it is
// encoded, so that a checkpoint of 50,000 groups does not hold 50,000
// items of JSON at once).
func (k *Cut) EncodeWith(pack func(item []byte) []byte) (Checkpoint, error) {
	// Done, the correlator no longer keeps the entries the cut shares as
	// they were (group.shareEntries), and the next cut takes the evidence
	// encodings it made (none when it failed).
	defer k.done.Store(true)
	cp := Checkpoint{Meta: k.meta, Changed: make(map[string][]byte, len(k.groups)+len(k.segs)+len(k.clocks)), Deleted: k.deleted}
	type encoded struct {
		b   []byte
		err error
		enc groupEncoder
	}
	out := make([]encoded, len(k.groups)+len(k.segs))
	// Each item's encoding is its own: spread over the cores but one,
	// which the correlator's goroutine keeps (a live checkpoint's encoding
	// on every core held its events back: p99 latency in the sustained
	// benchmark).
	parallel.Beside(len(out), func(i int) {
		o := &out[i]
		var buf *[]byte
		if pack != nil {
			buf = itemBuffers.Get().(*[]byte)
			o.enc.buf = (*buf)[:0]
		}
		if i < len(k.groups) {
			gc := &k.groups[i]
			o.enc.cache, o.enc.stamp, o.enc.runbook, o.enc.layout = gc.g.evEnc, k.stamp, gc.runbook, gc.layout
			o.b, o.err = o.enc.groupItem(gc.rule, gc.hash, gc.g, gc.values)
			o.enc.sweep()
		} else {
			o.b, o.err = k.segs[i-len(k.groups)].item.appendJSON(o.enc.buf)
		}
		if pack != nil {
			if o.err == nil {
				packed := pack(o.b)
				*buf = o.b[:0]
				o.b = packed
			}
			itemBuffers.Put(buf)
		}
	})
	used := make(map[*group]evidenceCache, len(k.groups))
	for i, gc := range k.groups {
		if out[i].err != nil {
			return Checkpoint{}, fmt.Errorf("correlator checkpoint: %w", out[i].err)
		}
		cp.Changed[gc.id] = out[i].b
		if gc.g.evEnc != nil {
			used[gc.live] = gc.g.evEnc
		}
	}
	for i, sc := range k.segs {
		o := &out[len(k.groups)+i]
		if o.err != nil {
			return Checkpoint{}, fmt.Errorf("correlator checkpoint: %w", o.err)
		}
		cp.Changed[sc.id] = o.b
	}
	for _, ci := range k.clocks {
		b, err := json.Marshal(ci)
		if err != nil {
			return Checkpoint{}, fmt.Errorf("correlator checkpoint: %w", err)
		}
		if pack != nil {
			b = pack(b)
		}
		cp.Changed[itemRef{'c', ci.Source, ci.Node, 0}.ID()] = b
	}
	k.used = used
	return cp, nil
}

// itemBuffers are the group item buffers of EncodeWith.
var itemBuffers = sync.Pool{New: func() any { return new([]byte) }}

// Committed tells the correlator that the last Checkpoint was stored.
func (c *Correlator) Committed() { clear(c.ckpt.pending) }

// groupItem is json.Marshal(groupItem{rule, hash, g}) without encoding/json
// compacting the group's bytes again (a checkpoint's largest part): the
// group's own encoding is already compact and escaped.
func (enc *groupEncoder) groupItem(rule, hash string, g *group, values map[string]string) ([]byte, error) {
	b := enc.buf
	if n := enc.sizeHint(g); cap(b) < n {
		b = make([]byte, 0, n)
	}
	b = appendJSONString(append(b, `{"rule":`...), rule)
	b = appendJSONString(append(b, `,"hash":`...), hash)
	b, err := enc.appendGroup(append(b, `,"group":`...), g, values)
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// RestoreCheckpoint loads a checkpoint: the meta record and every item
// (id, encoded item) of the stored state, in any order. As with Restore,
// the state of rules that are no longer loaded, or whose definition
// changed since, is dropped (their open incidents are resolved with the
// next emission); the items of those groups are reported as deleted by the
// next Checkpoint. Nothing else counts as changed.
func (c *Correlator) RestoreCheckpoint(meta []byte, items iter.Seq2[string, []byte]) error {
	var m checkpointMeta
	if err := json.Unmarshal(meta, &m); err != nil {
		return fmt.Errorf("correlator checkpoint: meta: %w", err)
	}
	if m.Version != 2 && m.Version != 3 { // 3: windows in segments
		return fmt.Errorf("correlator checkpoint: unknown version %d", m.Version)
	}
	c.watermark, c.proc, c.retired = m.Watermark, m.Proc, m.Retired
	c.clocks = newClocks()
	for _, rs := range c.rules {
		rs.groups = map[string]*group{}
	}
	clear(c.ckpt.dirty)
	c.ckpt.pending = map[itemRef]struct{}{}
	type raw struct {
		id string
		b  []byte
	}
	var in []raw
	for id, b := range items {
		if len(id) == 0 {
			return fmt.Errorf("correlator checkpoint: item without id")
		}
		if id[0] != 'g' && id[0] != 'c' && id[0] != 's' {
			return fmt.Errorf("correlator checkpoint: item %s: unknown item kind %q", itemName(id), id[0])
		}
		in = append(in, raw{id, b})
	}
	type decoded struct {
		g   groupItemIn
		c   clockItem
		s   segmentItem
		err error
	}
	out := make([]decoded, len(in))
	// Decoding is most of a restore: spread over the cores.
	parallel.For(len(in), func(i int) {
		switch in[i].id[0] {
		case 'g':
			out[i].err = json.Unmarshal(in[i].b, &out[i].g)
		case 's':
			out[i].err = json.Unmarshal(in[i].b, &out[i].s)
		default:
			out[i].err = json.Unmarshal(in[i].b, &out[i].c)
		}
	})
	segs := map[itemRef][]entry{}
	for i := range in {
		if d := &out[i]; d.err != nil {
			return fmt.Errorf("correlator checkpoint: item %s: %w", itemName(in[i].id), d.err)
		} else if in[i].id[0] == 's' {
			segs[itemRef{'s', d.s.Rule, d.s.Key, d.s.ID}] = d.s.Entries
		}
	}
	for i := range in {
		d := &out[i]
		switch {
		case in[i].id[0] == 'c' && d.c.Clock != nil:
			c.clocks.set(d.c.Source, d.c.Node, d.c.Clock)
		case in[i].id[0] == 'g' && d.g.Group != nil:
			gj := d.g.Group
			if err := gj.joinSegments(d.g.Rule, segs); err != nil {
				return fmt.Errorf("correlator checkpoint: item %s: %w", itemName(in[i].id), err)
			}
			gj.putRunbook(m.Runbooks[d.g.Hash])
			g := c.restoreGroup(d.g.Rule, d.g.Hash, gj)
			if g == nil {
				c.ckpt.pending[itemRef{'g', d.g.Rule, gj.Key, 0}] = struct{}{}
				continue
			}
			if l := gj.Segments; l != nil {
				g.segs = l.segments()
				for _, id := range l.IDs {
					delete(segs, itemRef{'s', d.g.Rule, gj.Key, id})
				}
			}
		}
	}
	// Segments no kept group lists: left by a group that is gone.
	for ref := range segs {
		c.ckpt.pending[ref] = struct{}{}
	}
	c.clocks.restore()
	clear(c.clocks.dirty)
	c.rebuild()
	return nil
}

// runbooks returns the loaded rules' runbooks by rule hash.
func (c *Correlator) runbooks() map[string]string {
	m := make(map[string]string, len(c.rules))
	for _, rs := range c.rules {
		if rs.rule.Runbook != "" {
			m[rs.hash] = rs.rule.Runbook
		}
	}
	return m
}

// putRunbook gives the group's incidents their rule's runbook, which their
// checkpoint item leaves out.
func (gj *groupJSON) putRunbook(runbook string) {
	for _, in := range []*Incident{gj.Incident, gj.Closed} {
		if in != nil && in.Runbook == "" {
			in.Runbook = runbook
		}
	}
}

// restoreGroup adds a group read from a snapshot or checkpoint to its rule
// and returns it, or nil when it was not kept. The group of a rule that is
// gone or changed is dropped, and its open incident retired (resolved with
// the next emission, see SetRules).
func (c *Correlator) restoreGroup(ruleID, hash string, gj *groupJSON) *group {
	rs, ok := c.rules[ruleID]
	if !ok || rs.hash != hash {
		if gj.Incident != nil {
			c.retired = append(c.retired, *gj.Incident)
		}
		return nil
	}
	r := rs.rule
	if len(gj.Counts) != len(r.Selectors) {
		return nil
	}
	g := &group{groupState: gj.groupState, rs: rs, hidx: -1}
	g.migrateStart()
	g.vals = make([]string, len(r.By))
	for i, p := range r.By {
		g.vals[i] = gj.Values[p]
	}
	if r.Absence != nil && g.Abs == nil {
		g.Abs = &absState{}
	}
	if r.TimeDriven() && g.TL == nil {
		g.TL = &timeline{EvalAt: c.watermark}
	}
	rs.groups[g.Key] = g
	return g
}

// itemName is an item id as an error names it.
func itemName(id string) string { return strconv.Quote(strings.ReplaceAll(id, "\x00", "/")) }
