package correlate

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
)

// Windows stored a segment at a time.
//
// A group whose window holds many entries (a node crash-looping for the
// 15 minutes of a window: thousands) changes with every event, yet only at
// its ends: new entries are appended, old ones leave at the head. Encoding
// the whole window into the group's item at every checkpoint made a
// checkpoint cost the windows' length, not what arrived since the last
// one (at 10,000 events/s with full windows: 55 ms of copying on the
// correlator's goroutine per checkpoint and 30 % of the process's CPU in
// encoding).
//
// So a long window is stored in segments: runs of consecutive entries,
// each an item of its own ('s'), numbered per group in the order they were
// started. The group's item lists its segments with the number of entries
// each was stored with, and how many of the first one's have left the
// window since (drop). A checkpoint writes a segment only when its entries
// changed (appended to, inserted into, an entry observed again) and
// deletes the segments whose entries all left; entries leaving the head of
// the first segment only change the group's item. Appends start a new
// segment once the last holds segmentEntries, so a checkpoint encodes at
// most the last segment's entries per group, however long its window.
//
// A window stays inline (the group's item holds its entries) until a
// checkpoint finds it longer than segmentEntries: a segment item is one
// more message per changed group, not worth it for a short window.
//
// The group's item is written at every checkpoint that writes any of its
// segments (its entries changed, so the group did), and a segment's stored
// count is set when a cut takes it: a cut not committed leaves the
// segment's reference pending, so the next cut takes it again, with the
// group's item. A restore takes the listed segments, in order, less drop
// entries at the head; a segment item no group lists is deleted by the
// next checkpoint.

// segmentEntries is how many entries a segment is filled with before the
// next starts.
const segmentEntries = 256

// segmentFrom is the window length from which a group's window is stored
// in segments (a variable for the benchmark that compares with inline).
var segmentFrom = segmentEntries

// segments lays a group's entries out in segments: list covers the
// entries in order (its counts add up to len(Entries)).
type segments struct {
	list []segment
	// next is the number of the next segment started.
	next uint64
	// gone are the segments whose entries all left since the last cut.
	gone []uint64
}

// segment is a run of a group's entries stored as one item.
type segment struct {
	id uint64
	// n is how many of the window's entries it holds.
	n int
	// stored is how many it held when last cut (n plus those that left
	// the head since, for the first segment).
	stored int
	// dirty is set when its entries changed since its last cut.
	dirty bool
}

// newSegments lays n entries out in full segments, none stored yet.
func newSegments(n int) *segments {
	s := &segments{}
	for n > 0 {
		k := min(n, segmentEntries)
		s.list = append(s.list, segment{id: s.next, n: k, dirty: true})
		s.next++
		n -= k
	}
	return s
}

// locate returns the index in list of the segment holding entry i and the
// index of its first entry (searched from the end: changes are mostly
// there).
func (s *segments) locate(i, total int) (k, start int) {
	start = total
	for k = len(s.list) - 1; k >= 0; k-- {
		start -= s.list[k].n
		if i >= start {
			return k, start
		}
	}
	return 0, 0
}

// inserted records an entry inserted at index i of a window of total
// entries (before the insertion): it joins the segment of the entry
// before it, or starts a new segment when that one is the last and full.
func (s *segments) inserted(i, total int) {
	if s == nil {
		return
	}
	if len(s.list) == 0 || (i == total && s.list[len(s.list)-1].n >= segmentEntries) {
		s.list = append(s.list, segment{id: s.next, n: 1, dirty: true})
		s.next++
		return
	}
	k := 0
	if i > 0 {
		k, _ = s.locate(i-1, total)
	}
	s.list[k].n++
	s.list[k].dirty = true
}

// changed records that entry i of a window of total entries changed in
// place.
func (s *segments) changed(i, total int) {
	if s == nil {
		return
	}
	k, _ := s.locate(i, total)
	s.list[k].dirty = true
}

// evicted records that the n oldest entries left the window.
func (s *segments) evicted(n int) {
	if s == nil {
		return
	}
	k := 0
	for ; k < len(s.list) && s.list[k].n <= n; k++ {
		n -= s.list[k].n
		s.gone = append(s.gone, s.list[k].id)
	}
	s.list = slices.Delete(s.list, 0, k)
	if n > 0 && len(s.list) > 0 {
		s.list[0].n -= n
	}
}

// find returns the index of segment id and its first entry's, or -1.
func (s *segments) find(id uint64) (k, start int) {
	for k, sg := range s.list {
		if sg.id == id {
			return k, start
		}
		start += sg.n
	}
	return -1, 0
}

// segmentsJSON is how a group's item lists its segments.
type segmentsJSON struct {
	// IDs are the segments' numbers, in the order of their entries.
	IDs []uint64 `json:"ids"`
	// N are the numbers of entries they were stored with.
	N []int `json:"n"`
	// Drop is how many of the first segment's entries left the window
	// since it was stored.
	Drop int `json:"drop,omitempty"`
}

// layout returns the segments as the group's item lists them.
func (s *segments) layout() *segmentsJSON {
	l := &segmentsJSON{IDs: make([]uint64, len(s.list)), N: make([]int, len(s.list))}
	for k, sg := range s.list {
		l.IDs[k], l.N[k] = sg.id, sg.stored
	}
	if len(s.list) > 0 {
		l.Drop = s.list[0].stored - s.list[0].n
	}
	return l
}

// segmentItem is the item of a segment: the group it belongs to and its
// entries.
type segmentItem struct {
	Rule    string    `json:"rule"`
	Key     string    `json:"key"`
	ID      uint64    `json:"id"`
	Entries entryList `json:"entries"`
}

// appendJSON appends the item's encoding to b, as encoding/json writes it.
func (it *segmentItem) appendJSON(b []byte) ([]byte, error) {
	b = slices.Grow(b, 64+len(it.Rule)+len(it.Key)+48*len(it.Entries))
	b = appendJSONString(append(b, `{"rule":`...), it.Rule)
	b = appendJSONString(append(b, `,"key":`...), it.Key)
	b = append(strconv.AppendUint(append(b, `,"id":`...), it.ID, 10), `,"entries":`...)
	b, err := it.Entries.appendJSON(b)
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// segments returns the layout of a restored window.
func (l *segmentsJSON) segments() *segments {
	s := &segments{list: make([]segment, len(l.IDs))}
	for k, id := range l.IDs {
		s.list[k] = segment{id: id, n: l.N[k], stored: l.N[k]}
		s.next = max(s.next, id+1)
	}
	if len(s.list) > 0 {
		s.list[0].n -= l.Drop
	}
	return s
}

// joinSegments fills the window of a group read from its item with the
// entries of the segments it lists (by item ref), checking that each is
// there with the entries it was stored with.
func (gj *groupJSON) joinSegments(rule string, segs map[itemRef][]entry) error {
	l := gj.Segments
	if l == nil {
		return nil
	}
	if len(l.N) != len(l.IDs) {
		return fmt.Errorf("group %q lists %d segments with %d counts", gj.Key, len(l.IDs), len(l.N))
	}
	parts := make([][]entry, len(l.IDs))
	for k, id := range l.IDs {
		es, ok := segs[itemRef{'s', rule, gj.Key, id}]
		if !ok {
			return fmt.Errorf("group %q: segment %d of its window is missing", gj.Key, id)
		}
		if len(es) != l.N[k] {
			return fmt.Errorf("group %q: segment %d holds %d entries, its group lists %d", gj.Key, id, len(es), l.N[k])
		}
		parts[k] = es
	}
	if l.Drop < 0 || (len(l.IDs) > 0 && l.Drop >= l.N[0]) || (len(l.IDs) == 0 && l.Drop != 0) {
		return fmt.Errorf("group %q: %d entries dropped from a first segment of %v", gj.Key, l.Drop, l.N[:min(1, len(l.N))])
	}
	entries := slices.Concat(parts...)
	if !slices.IsSortedFunc(entries, func(a, b entry) int { return cmp.Compare(a.T, b.T) }) {
		return fmt.Errorf("group %q: the entries of its segments %v are out of time order", gj.Key, l.IDs)
	}
	gj.Entries = entries[l.Drop:]
	if len(gj.Entries) == 0 {
		gj.Entries = nil
	}
	return nil
}
