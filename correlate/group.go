package correlate

import (
	"encoding/json"
	"math/bits"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

// group is the state of one rule for one group key. Its exported fields
// are the snapshot (see state.go); the rest is rebuilt on restore.
type group struct {
	groupState
	// vals are the group's values, aligned with the rule's By paths.
	vals []string

	rs   *ruleState
	due  time.Time // when the timer heap wakes the group (zero: not scheduled)
	hidx int       // index in the timer heap, -1 when not in it
	// evEnc holds the evidence encodings of the group's last checkpoint
	// (groupjson.go); nil when the last checkpoint did not encode it.
	evEnc evidenceCache
	// cutBy is the done flag of the last checkpoint cut that shares the
	// window's entries (nil: none); until it is set, the entries are
	// copied before one is changed in place (ownEntries).
	cutBy *atomic.Bool
	// segs lays the window's entries out in the checkpoint items they are
	// stored in (segments.go); nil while the window is stored inline, in
	// the group's own item.
	segs *segments
}

// groupState is the serialised part of a group.
type groupState struct {
	Key     string    `json:"key"`
	Entries entryList `json:"entries"`
	Counts  []int     `json:"counts"`
	// LastMatch is the event time of the newest matching event.
	LastMatch time.Time `json:"last_match"`
	// Incident is the open incident, nil when none fires.
	Incident *Incident `json:"incident,omitempty"`
	// Pending is set when evidence arrived since the last emitted change.
	Pending bool `json:"pending,omitempty"`
	// Evidence is kept between incidents too, so that a firing incident
	// shows what led to it.
	Evidence []Evidence `json:"evidence"`
	// Node is the node of the newest event (the incident's node when the
	// rule does not group by node).
	Node string `json:"node,omitempty"`
	// Suppressed is set while an inhibiting incident keeps the group from
	// firing.
	Suppressed bool `json:"suppressed,omitempty"`
	// Abs is the state of an absence rule.
	Abs *absState `json:"absence,omitempty"`
	// TL is the state of a rule with for or keep_firing_for.
	TL *timeline `json:"timeline,omitempty"`
	// Carry holds the newest value of each of the rule's value references
	// that left the window (values.go).
	Carry []carried `json:"carry,omitempty"`
	// Acts are the action records of the open incident (actions.go).
	Acts []Evidence `json:"actions,omitempty"`
	// Closed is the last change of the incident that resolved, kept a
	// while for the records of the actions its resolution undoes.
	Closed *Incident `json:"closed,omitempty"`
	// PrevStarted is the StartedAt of the group's last resolved incident.
	// An incident that fires again while entries of that one remain in the
	// window starts after it (see startOf), so that its change ids are new.
	PrevStarted time.Time `json:"prev_started,omitzero"`
}

// absState is what an absence rule keeps per group.
type absState struct {
	// Await holds the times of `after` events not yet followed by an
	// `expect` event, oldest first.
	Await []time.Time `json:"await,omitempty"`
	// From is the time of the `after` event whose deadline passed; zero
	// while nothing is missing.
	From time.Time `json:"from,omitzero"`
	// At is that deadline.
	At time.Time `json:"at,omitzero"`
}

// timeline is what a rule with for or keep_firing_for keeps per group: the
// condition is followed in event time, at every time it can change (an
// event enters or leaves the window), up to the watermark.
type timeline struct {
	// EvalAt is the event time up to which the condition was followed.
	EvalAt time.Time `json:"eval_at"`
	// Active is when the condition started to hold (zero: it does not).
	Active time.Time `json:"active,omitzero"`
	// Inactive is when it stopped holding while the incident fires.
	Inactive time.Time `json:"inactive,omitzero"`
}

// MarshalJSON writes the group with its values as a map (the snapshot
// format of version 1).
func (g *group) MarshalJSON() ([]byte, error) {
	var enc groupEncoder
	return enc.appendGroup(nil, g, g.valueMapOrEmpty())
}

// groupJSON is a group as read from a snapshot.
type groupJSON struct {
	groupState
	Values map[string]string `json:"values"`
	// Segments lists the segment items holding the window, in a
	// checkpoint's item whose window is stored in segments (segments.go).
	Segments *segmentsJSON `json:"segments,omitempty"`
}

// values returns the group's values by path.
func (g *group) valueMap() map[string]string {
	m := make(map[string]string, len(g.vals))
	for i, p := range g.rs.rule.By {
		if i < len(g.vals) {
			m[p] = g.vals[i]
		}
	}
	return m
}

// entry is one matching event in a window.
type entry struct {
	T    int64  // event time, Unix nanoseconds
	Mask uint64 // selectors that matched
	// Distinct holds the values of rule.Distincts for this event ("" when
	// the selector of that ref did not match).
	Distinct []string
	// J is the event's sequence join key ("" without join keys).
	J string
	// O is the event's Occurrence ("" when it is its own): other records
	// of it add evidence, not counts.
	O string
	// V holds the values of the rule's value references for this event
	// (nil: none; values.go).
	V []any
}

type entryJSON struct {
	Time     time.Time `json:"t"`
	Mask     uint64    `json:"m"`
	Distinct []string  `json:"d,omitempty"`
	J        string    `json:"j,omitempty"`
	O        string    `json:"o,omitempty"`
	V        []any     `json:"v,omitempty"`
}

// MarshalJSON writes the entry as in snapshot version 1 (time as RFC 3339).
// It appends the fields itself rather than through reflection: a
// checkpoint encodes every entry of every group that changed, and the
// reflective encoding was most of a checkpoint's time on the correlator's
// goroutine (TestEntryJSONAsReflected keeps the two the same).
func (e entry) MarshalJSON() ([]byte, error) {
	return e.appendJSON(make([]byte, 0, 64))
}

// entryList is a window's entries, encoded in one pass rather than one
// encoding/json call (and compaction) per entry.
type entryList []entry

// MarshalJSON writes the entries as encoding/json writes a []entry.
func (l entryList) MarshalJSON() ([]byte, error) {
	return l.appendJSON(make([]byte, 0, 80*len(l)+2))
}

// appendJSON appends the entries' encoding to b.
func (l entryList) appendJSON(b []byte) ([]byte, error) {
	return appendJSONArray(b, l, (*entry).appendJSON)
}

// appendJSONArray appends list as encoding/json writes a slice (nil as
// null), each element by elem.
func appendJSONArray[T any](b []byte, list []T, elem func(*T, []byte) ([]byte, error)) ([]byte, error) {
	if list == nil {
		return append(b, "null"...), nil
	}
	b = append(b, '[')
	for i := range list {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = elem(&list[i], b); err != nil {
			return nil, err
		}
	}
	return append(b, ']'), nil
}

// appendJSON appends the entry's encoding to b.
func (e *entry) appendJSON(b []byte) ([]byte, error) {
	t := time.Unix(0, e.T).UTC() // years 1677–2262: always encodable
	b = append(b, `{"t":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","m":`...)
	b = strconv.AppendUint(b, e.Mask, 10)
	if len(e.Distinct) > 0 {
		b = append(b, `,"d":[`...)
		for i, d := range e.Distinct {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, d)
		}
		b = append(b, ']')
	}
	if e.J != "" {
		b = appendJSONString(append(b, `,"j":`...), e.J)
	}
	if e.O != "" {
		b = appendJSONString(append(b, `,"o":`...), e.O)
	}
	if len(e.V) > 0 {
		v, err := json.Marshal(e.V)
		if err != nil {
			return nil, err
		}
		b = append(append(b, `,"v":`...), v...)
	}
	return append(b, '}'), nil
}

// appendJSONString appends s as encoding/json writes a string: quoted as
// it is when it holds only printable ASCII that needs no escape (an
// occurrence, a join key, an alloc id: nearly always), else through
// encoding/json (whose call was most of an entry's encoding).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !jsonPlain[s[i]] {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	return append(append(append(b, '"'), s...), '"')
}

// jsonPlain holds the bytes encoding/json writes as they are in a string:
// printable ASCII but the quote, the backslash and the HTML characters.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c <= 0x7e; c++ {
		t[c] = !strings.ContainsRune(`"\<>&`, rune(c))
	}
	return t
}()

// reflected is the entry through encoding/json (the format's definition).
func (e entry) reflected() ([]byte, error) {
	return json.Marshal(entryJSON{time.Unix(0, e.T).UTC(), e.Mask, e.Distinct, e.J, e.O, e.V})
}

// UnmarshalJSON reads an entry of a snapshot.
func (e *entry) UnmarshalJSON(b []byte) error {
	var x entryJSON
	if err := json.Unmarshal(b, &x); err != nil {
		return err
	}
	*e = entry{T: x.Time.UnixNano(), Mask: x.Mask, Distinct: x.Distinct, J: x.J, O: x.O, V: x.V}
	return nil
}

func (e *entry) time() time.Time { return time.Unix(0, e.T).UTC() }

// newest returns the time of the newest entry (zero when empty).
func (g *group) newest() time.Time {
	if len(g.Entries) == 0 {
		return time.Time{}
	}
	return g.Entries[len(g.Entries)-1].time()
}

// firstTime returns the time of the oldest entry in the window.
// startOf returns when an incident of g that fires now begins: the time
// of its first entry (or of the missed deadline of an absence), as the
// first incident of a group takes; but never at or before the start of
// the group's last resolved incident. One that fires again while entries
// of that one remain in the window begins with the event that made it
// fire (last; else the newest match, fired by time). The time derives from
// events and checkpointed state only, so that a correlator restored after
// a crash gives the change the same id (ChangeID), which replays then
// de-duplicate; and it is later than the last start, so that the change is
// a new one for JetStream's de-duplication and the sinks.
func (g *group) startOf(last *ingest.Event) time.Time {
	started := g.firstTime()
	if g.Abs != nil && !g.Abs.From.IsZero() {
		started = g.Abs.From
	}
	if started.After(g.PrevStarted) {
		return started
	}
	if last != nil && last.Time.After(g.PrevStarted) {
		return last.Time
	}
	if g.LastMatch.After(g.PrevStarted) {
		return g.LastMatch
	}
	return g.PrevStarted.Add(time.Nanosecond)
}

// migrateStart fills PrevStarted in a group of a checkpoint written
// before it existed: from the resolved incident kept for actions (Closed),
// or, when the group holds entries but no evidence and no incident — which
// only a resolution leaves (every new entry adds evidence) — from its
// newest entry, at or after the start of the incident that resolved.
func (g *group) migrateStart() {
	if !g.PrevStarted.IsZero() || g.Incident != nil {
		return
	}
	if g.Closed != nil {
		g.PrevStarted = g.Closed.StartedAt
	}
	if n := len(g.Entries); n > 0 && len(g.Evidence) == 0 {
		if t := g.Entries[n-1].time(); t.After(g.PrevStarted) {
			g.PrevStarted = t
		}
	}
}

func (g *group) firstTime() time.Time {
	if len(g.Entries) == 0 {
		return g.LastMatch
	}
	return g.Entries[0].time()
}

// insert places e in time order; events mostly arrive in order, so the
// search runs from the end.
func (g *group) insert(e entry) {
	i := len(g.Entries)
	for i > 0 && g.Entries[i-1].T > e.T {
		i--
	}
	g.segs.inserted(i, len(g.Entries))
	if i < len(g.Entries) {
		g.ownEntries() // entries move
	}
	g.Entries = append(g.Entries, entry{})
	copy(g.Entries[i+1:], g.Entries[i:])
	g.Entries[i] = e
}

// entriesShared reports whether a checkpoint cut being encoded reads the
// window's entries.
func (g *group) entriesShared() bool {
	if g.cutBy != nil && g.cutBy.Load() {
		g.cutBy = nil
	}
	return g.cutBy != nil
}

// ownEntries copies the window's entries when a cut being encoded shares
// them, before one is changed in place or moved (appends write past what
// the cut reads, and need no copy).
func (g *group) ownEntries() {
	if g.entriesShared() {
		g.Entries = slices.Clone(g.Entries)
		g.cutBy = nil
	}
}

// sameOccurrence returns the index of the entry that records occurrence o
// within ingest.OccurrenceTolerance of t (the nearest), or -1.
func (g *group) sameOccurrence(o string, t int64) int {
	tol := int64(ingest.OccurrenceTolerance)
	lo := sort.Search(len(g.Entries), func(i int) bool { return g.Entries[i].T >= t-tol })
	best, bestD := -1, tol+1
	for i := lo; i < len(g.Entries) && g.Entries[i].T <= t+tol; i++ {
		if g.Entries[i].O != o {
			continue
		}
		d := g.Entries[i].T - t
		if d < 0 {
			d = -d
		}
		if d < bestD {
			best, bestD = i, d
		}
	}
	return best
}

func (g *group) addCounts(mask uint64, d int) {
	for mask != 0 {
		i := bits.TrailingZeros64(mask)
		if i < len(g.Counts) {
			g.Counts[i] += d
		}
		mask &= mask - 1
	}
}

// evict drops entries older than cutoff.
func (g *group) evict(cutoff time.Time) {
	if len(g.Entries) == 0 || cutoff.IsZero() {
		return
	}
	c := cutoff.UnixNano()
	n := 0
	for n < len(g.Entries) && g.Entries[n].T < c {
		n++
	}
	g.dropHead(n)
}

// dropHead drops the n oldest entries: they leave the counts, and the
// values they carry are kept (carry).
func (g *group) dropHead(n int) {
	if n <= 0 {
		return
	}
	for i := range g.Entries[:n] {
		g.addCounts(g.Entries[i].Mask, -1)
	}
	g.carry(g.Entries[:n])
	g.segs.evicted(n)
	// Re-slice instead of copying: append reallocates (copying only the
	// live entries) once the capacity runs out, so eviction is O(1)
	// amortised even for windows of many thousand entries. Cleared for
	// the collector unless a cut still reads them.
	if !g.entriesShared() {
		clear(g.Entries[:n])
	}
	g.Entries = g.Entries[n:]
	if len(g.Entries) == 0 {
		g.Entries = nil
	}
}

func (g *group) addEvidence(ev *ingest.Event, max int) {
	if len(g.Evidence) >= max {
		copy(g.Evidence, g.Evidence[1:])
		g.Evidence[max-1] = Evidence{}
		g.Evidence = g.Evidence[:max-1]
	}
	g.Evidence = append(g.Evidence, Evidence{
		Time: ev.Time, ID: ev.ID, Node: ev.Node, NodeID: ev.NodeID, Source: ev.Source,
		Kind: ev.Kind, Level: ev.Level, Msg: ev.Msg, Fields: ev.Fields,
	})
}

// nodeName names the node of the group's incident: the group's node value
// when it groups by node (also as the last alternative,
// "fields.prev_node|node"), else the node of the newest event.
func (g *group) nodeName(r *rules.Rule) string {
	for i, p := range r.By {
		if p == "node" || strings.HasSuffix(p, "|node") {
			if i < len(g.vals) {
				return g.vals[i]
			}
		}
	}
	return g.Node
}

func (g *group) countsByName(r *rules.Rule) map[string]int {
	m := make(map[string]int, len(r.Selectors))
	for i, s := range r.Selectors {
		m[s.Name] = g.Counts[i]
	}
	return m
}

// values collects distinct values for templates: per distinct() reference
// ("selector.field") from the window, and per field of the evidence
// ("fields.<name>").
func (g *group) values(r *rules.Rule) map[string][]string {
	out := map[string][]string{}
	for i, d := range r.Distincts {
		seen := map[string]bool{}
		for _, e := range g.Entries {
			if i < len(e.Distinct) {
				if v := e.Distinct[i]; v != "" && !seen[v] {
					seen[v] = true
					out[r.Selectors[d.Selector].Name+"."+d.Field] = append(out[r.Selectors[d.Selector].Name+"."+d.Field], v)
				}
			}
		}
	}
	seen := map[string]map[string]bool{}
	for _, ev := range g.Evidence {
		for k, v := range ev.Fields {
			s, ok := v.(string)
			if !ok || s == "" {
				continue
			}
			path := "fields." + k
			if seen[path] == nil {
				seen[path] = map[string]bool{}
			}
			if !seen[path][s] {
				seen[path][s] = true
				out[path] = append(out[path], s)
			}
		}
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

// aggregates exposes a span of a group's window to a rule's condition:
// all of it (counts kept up to date), or the entries of a time range.
type aggregates struct {
	g       *group
	r       *rules.Rule
	entries []entry // the entries in the span
	ranged  bool    // false: the whole window, counted in g.Counts
	to      int64   // end of the span when ranged (Unix nanoseconds)
}

func (a aggregates) Count(sel int) int {
	if !a.ranged {
		if sel < 0 || sel >= len(a.g.Counts) {
			return 0
		}
		return a.g.Counts[sel]
	}
	n := 0
	bit := uint64(1) << uint(sel)
	for i := range a.entries {
		if a.entries[i].Mask&bit != 0 {
			n++
		}
	}
	return n
}

func (a aggregates) Distinct(sel int, field string) int {
	entries := a.entries
	for i, d := range a.r.Distincts {
		if d.Selector != sel || d.Field != field {
			continue
		}
		seen := map[string]struct{}{}
		for _, e := range entries {
			if i < len(e.Distinct) {
				if v := e.Distinct[i]; v != "" {
					seen[v] = struct{}{}
				}
			}
		}
		return len(seen)
	}
	return 0
}

// span returns the entries with times in [from, to].
func span(entries []entry, from, to time.Time) []entry {
	lo := sort.Search(len(entries), func(i int) bool { return entries[i].T >= from.UnixNano() })
	hi := sort.Search(len(entries), func(i int) bool { return entries[i].T > to.UnixNano() })
	if hi < lo {
		hi = lo
	}
	return entries[lo:hi:hi]
}

// sequenceHolds reports whether the entries (in time order) hold the
// rule's sequence: each step's selector matched at or after the previous
// step, the last within the span of the first, all with one join key.
// An entry matching several steps may serve as one of them only.
func sequenceHolds(sq *rules.Sequence, entries []entry) bool {
	n := len(sq.Steps)
	type progress struct {
		start []int64 // latest start of a chain that completed step i
		have  []bool
	}
	var single progress
	var byJoin map[string]*progress
	get := func(j string) *progress {
		if sq.JoinLen == 0 {
			if single.start == nil {
				single = progress{make([]int64, n), make([]bool, n)}
			}
			return &single
		}
		if byJoin == nil {
			byJoin = map[string]*progress{}
		}
		p := byJoin[j]
		if p == nil {
			p = &progress{make([]int64, n), make([]bool, n)}
			byJoin[j] = p
		}
		return p
	}
	within := int64(sq.Within)
	for i := range entries {
		e := &entries[i]
		var p *progress
		for k := n - 1; k >= 0; k-- {
			if e.Mask&(1<<uint(sq.Steps[k].Selector)) == 0 {
				continue
			}
			if p == nil {
				p = get(e.J)
			}
			if k == 0 {
				p.start[0], p.have[0] = e.T, true
				if n == 1 {
					return true
				}
				continue
			}
			if p.have[k-1] && e.T-p.start[k-1] <= within && (!p.have[k] || p.start[k-1] > p.start[k]) {
				p.start[k], p.have[k] = p.start[k-1], true
				if k == n-1 {
					return true
				}
			}
		}
	}
	return false
}
