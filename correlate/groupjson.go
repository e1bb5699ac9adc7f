package correlate

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
)

// A group's encoding.
//
// A checkpoint encodes every group that changed since the last one, and a
// busy group changes every second. Most of a group's bytes are its
// evidence (events with their fields, up to MaxEvidence of them, in the
// group and again in its incident), and evidence does not change once
// recorded: the group keeps the encoding of each evidence record from its
// last checkpoint and reuses it, so reflection over events' fields runs
// once per record instead of once per checkpoint. Only groups encoded by
// the last checkpoint keep their encodings (see Correlator.Cut), so
// what the cache holds follows what changes, not the size of the state.
//
// The bytes are those encoding/json writes for the group's snapshot
// struct (TestGroupItemAsReflected compares them).

// evidenceCache holds encoded evidence records by Evidence.ID. It is the
// live group's and is updated in place by the encoding of the cut that
// carries it (one at a time: see Correlator.Cut), so that a checkpoint
// does not build a second cache for every group it encodes beside the
// first (hundreds of megabytes at 10,000 nodes).
type evidenceCache map[string]encodedEvidence

// encodedEvidence is one evidence record with its encoding, and the
// checkpoint that last used it.
type encodedEvidence struct {
	ev    Evidence
	b     []byte
	stamp uint64
}

// same reports whether e is the record c was encoded from: evidence is
// never changed in place, so equal scalars and the same Fields map (not an
// equal one: the very map) mean the same bytes.
func (c *encodedEvidence) same(e *Evidence) bool {
	x := &c.ev
	return x.ID == e.ID && x.Time == e.Time &&
		x.Node == e.Node && x.NodeID == e.NodeID && x.Source == e.Source && x.Kind == e.Kind &&
		x.Level == e.Level && x.Msg == e.Msg && sameMap(x.Fields, e.Fields)
}

// sameMap reports whether a and b are the same map (or both nil).
func sameMap(a, b map[string]any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// groupEncoder encodes groups, reusing the evidence encodings of cache
// and recording those it wrote there, stamped (nil: no reuse, no record);
// sweep then drops the entries the group no longer uses.
type groupEncoder struct {
	cache evidenceCache
	stamp uint64
	// hits counts the encodings reused.
	hits int
	// runbook is left out of incidents that have it (a checkpoint item's
	// incidents leave out their rule's runbook: see checkpointMeta).
	runbook string
	// buf, when not nil, is where groupItem writes (EncodeWith's reused
	// buffers).
	buf []byte
	// layout, when not nil, lists the segments that hold the group's
	// window (whose entries the group's copy then leaves out).
	layout *segmentsJSON
}

// sizeHint estimates the size of g's item from its window and the
// evidence encodings of its last checkpoint, so that the item's buffer is
// allocated once: grown by appends, a busy group's 10 KB item was copied
// and cleared several times (5 % of the soak correlator's CPU).
func (enc *groupEncoder) sizeHint(g *group) int {
	n := 1024 + 48*len(g.Entries)
	for _, c := range enc.cache {
		n += len(c.b)
	}
	if g.Incident != nil {
		n += n / 2 // the incident's own evidence: part of the group's
	}
	return n
}

// appendEvidence appends the encoding of list as encoding/json writes a
// []Evidence.
func (enc *groupEncoder) appendEvidence(b []byte, list []Evidence) ([]byte, error) {
	return appendJSONArray(b, list, enc.appendRecord)
}

// appendRecord appends one evidence record: its encoding of the last
// checkpoint when it is the same record, else encoding/json's.
func (enc *groupEncoder) appendRecord(e *Evidence, b []byte) ([]byte, error) {
	caching := enc.cache != nil && e.ID != ""
	if caching {
		if c, ok := enc.cache[e.ID]; ok && c.same(e) {
			if c.stamp != enc.stamp {
				c.stamp = enc.stamp
				enc.cache[e.ID] = c
			}
			enc.hits++
			return append(b, c.b...), nil
		}
	}
	eb, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	if caching {
		enc.cache[e.ID] = encodedEvidence{ev: *e, b: eb, stamp: enc.stamp}
	}
	return append(b, eb...), nil
}

// sweep drops the encodings the last group encoded did not use.
func (enc *groupEncoder) sweep() {
	for id, c := range enc.cache {
		if c.stamp != enc.stamp {
			delete(enc.cache, id)
		}
	}
}

// evidenceNull is where an incident encoded without evidence has it.
var evidenceNull = []byte(`,"evidence":null`)

// appendIncident appends the encoding of in: encoding/json's for
// everything but the evidence, spliced with the evidence's. The key
// cannot stand elsewhere unquoted: strings escape their quotes, and the
// incident's maps hold strings and numbers, not null.
func (enc *groupEncoder) appendIncident(b []byte, in *Incident) ([]byte, error) {
	shell := *in
	shell.Evidence = nil
	if shell.Runbook == enc.runbook {
		shell.Runbook = ""
	}
	j, err := json.Marshal(&shell)
	if err != nil {
		return nil, err
	}
	if in.Evidence == nil {
		return append(b, j...), nil
	}
	at := bytes.Index(j, evidenceNull)
	b = append(b, j[:at+len(evidenceNull)-len("null")]...)
	if b, err = enc.appendEvidence(b, in.Evidence); err != nil {
		return nil, err
	}
	return append(b, j[at+len(evidenceNull):]...), nil
}

// appendGroup appends the encoding of g: its groupState and its values
// (valueMapOrEmpty), as encoding/json writes struct{groupState; Values}.
func (enc *groupEncoder) appendGroup(b []byte, g *group, values map[string]string) ([]byte, error) {
	var err error
	field := func(key string, v any) {
		if err != nil {
			return
		}
		var vb []byte
		if vb, err = json.Marshal(v); err == nil {
			b = append(append(b, key...), vb...)
		}
	}
	s := &g.groupState
	field(`{"key":`, s.Key)
	if err != nil {
		return nil, err
	}
	if b, err = s.Entries.appendJSON(append(b, `,"entries":`...)); err != nil {
		return nil, err
	}
	if enc.layout != nil {
		field(`,"segments":`, enc.layout)
	}
	field(`,"counts":`, s.Counts)
	field(`,"last_match":`, s.LastMatch)
	if err == nil && s.Incident != nil {
		b, err = enc.appendIncident(append(b, `,"incident":`...), s.Incident)
	}
	if s.Pending {
		b = append(b, `,"pending":true`...)
	}
	if err == nil {
		b, err = enc.appendEvidence(append(b, `,"evidence":`...), s.Evidence)
	}
	if s.Node != "" {
		field(`,"node":`, s.Node)
	}
	if s.Suppressed {
		b = append(b, `,"suppressed":true`...)
	}
	if s.Abs != nil {
		field(`,"absence":`, s.Abs)
	}
	if s.TL != nil {
		field(`,"timeline":`, s.TL)
	}
	if len(s.Carry) > 0 {
		field(`,"carry":`, s.Carry)
	}
	if err == nil && len(s.Acts) > 0 {
		b, err = enc.appendEvidence(append(b, `,"actions":`...), s.Acts)
	}
	if err == nil && s.Closed != nil {
		b, err = enc.appendIncident(append(b, `,"closed":`...), s.Closed)
	}
	if !s.PrevStarted.IsZero() {
		field(`,"prev_started":`, s.PrevStarted)
	}
	field(`,"values":`, values)
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// valueMapOrEmpty is the group's values by path (empty without a rule).
func (g *group) valueMapOrEmpty() map[string]string {
	if g.rs == nil {
		return map[string]string{}
	}
	return g.valueMap()
}

// reflected is the group through encoding/json (the format's definition).
func (g *group) reflected() ([]byte, error) {
	return json.Marshal(struct {
		groupState
		Values map[string]string `json:"values"`
	}{g.groupState, g.valueMapOrEmpty()})
}

// keepEncodings gives this checkpoint's groups the evidence caches its
// encoding used (made for those that had none), and drops those of groups
// it did not encode.
func (st *checkpointState) keepEncodings(encoded map[*group]evidenceCache) {
	for g := range st.cached {
		if _, ok := encoded[g]; !ok {
			g.evEnc = nil
		}
	}
	clear(st.cached)
	if st.cached == nil {
		st.cached = make(map[*group]struct{}, len(encoded))
	}
	for g, used := range encoded {
		g.evEnc = used
		st.cached[g] = struct{}{}
	}
}

// cut copies g for a checkpoint that is encoded while the correlator goes
// on: everything the correlator changes in place is copied (counts,
// evidence, the incidents' maps, absence and timeline state, carried
// values); what it only replaces whole is shared (an entry's
// distinct values and values: observeAgain replaces them; evidence
// records and their fields; the group's values), and the window's entries
// are shared until k is encoded (shareEntries).
func (g *group) cut(k *Cut, reuse bool) *group {
	s := g.groupState
	s.Entries = nil // in segments: cut by Correlator.cutSegment
	if g.segs == nil {
		s.Entries = g.shareEntries(k, 0, len(g.Entries))
	}
	s.Counts = slices.Clone(s.Counts)
	s.Evidence = slices.Clone(s.Evidence)
	s.Carry = slices.Clone(s.Carry)
	s.Acts = slices.Clone(s.Acts)
	s.Incident, s.Closed = cutIncident(s.Incident), cutIncident(s.Closed)
	if s.Abs != nil {
		a := *s.Abs
		a.Await = slices.Clone(a.Await)
		s.Abs = &a
	}
	if s.TL != nil {
		tl := *s.TL
		s.TL = &tl
	}
	c := &group{groupState: s}
	if reuse {
		c.evEnc = g.evEnc
		if c.evEnc == nil {
			c.evEnc = evidenceCache{} // handed to g by keepEncodings
		}
	}
	return c
}

// cutIncident copies an incident for a cut: its maps, which the
// correlator may change in place; not its evidence and actions, which a
// change replaces whole (Correlator.emit) and nothing writes into.
func cutIncident(in *Incident) *Incident {
	if in == nil {
		return nil
	}
	c := cloneIncidentMaps(*in)
	return &c
}

// shareEntries returns entries [from, to) of the window for cut k to read
// while it is encoded, without copying them: until then the correlator
// copies the window before it changes or moves an entry (ownEntries), and
// eviction leaves the entries it drops as they are (see entriesShared).
// Copying every changed window at every cut was a quarter of a busy
// correlator's allocations.
func (g *group) shareEntries(k *Cut, from, to int) entryList {
	if g.cutBy != k.done && g.entriesShared() {
		// An earlier cut, not encoded yet, shares them: one cut at a
		// time does (none in klaxon, which writes one at a time).
		return slices.Clone(g.Entries[from:to])
	}
	g.cutBy = k.done
	return entryList(g.Entries[from:to:to])
}
