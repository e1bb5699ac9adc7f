package winevt

import (
	"bytes"
	"fmt"
	"math"
	"time"
)

// Damage rules. A damaged byte in an EVTX file can leave a record that
// decodes but carries a wrong number or time. Both are checked before a
// record is used, the same way for replay (ReadEVTX) and for following
// (Source):
//
// Record numbers. Windows numbers the records of a chunk consecutively, and
// the chunk header holds the first and last number. A record's number is
// plausible when it fits the header's range at its position: record i of
// the n walked, in a chunk whose sane header says [first, last], has
// first+i <= id <= last-(n-1-i). A carved or half-overwritten chunk can hold
// newer records than its header says, numbered consecutively all the same:
// so a number outside that range is plausible too when it continues the
// numbering of a record next to it (the previous one's plus one, or the
// next one's minus one) and is not beyond the file's ceiling: the highest
// number that the chunk headers agreeing with their records announce, plus
// what one chunk can hold. (Two neighbours damaged alike stay out.) A
// record with an implausible number is damage: counted, skipped, and never
// a checkpoint.
//
// Times. A record's time (TimeCreated, else the record header's) is
// impossible when TimeCreated is there but cannot be parsed (a year beyond
// 9999), when it is before 1990 or more than a day after the reader's
// clock, or when it is more than a day away from the record header's own
// time (an independent copy of the moment it was written) and also from
// each of the nearest records on both sides (up to two each side), while
// those agree within a day: a lone spike. (A genuine clock step or a resume
// from sleep moves the header time and the following records too, so it is
// no spike.) Such a record is kept, since the rest of it decoded, but its
// time is replaced, so that one damaged value can neither abort an export
// (year 28046 has no JSON form) nor make every later event late: by the
// record header's time when that one is possible and near a neighbour, else
// by the previous record's time (the next one's at the start of a chunk),
// else it has none (Stats.NoTime). Counted in Stats.BadTimes; the damaged
// value is kept in the field "damaged_time".

const (
	// minRecordSize is the smallest record: header and trailing size copy.
	minRecordSize = recordHeader + 4
	// maxChunkRecords is the most records a chunk can hold.
	maxChunkRecords = (chunkSize - chunkHeaderSize) / minRecordSize
	// timeSlack is how far a time may lie beyond the reader's clock, and
	// how far apart neighbouring records may be before one of them is a spike.
	timeSlack = 24 * time.Hour
)

// minEventTime is the earliest possible event time: EVTX (Windows Vista)
// is much younger.
var minEventTime = time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC)

// recHead is a record header found by walking a chunk.
type recHead struct {
	off, size int
	id        uint64
}

// walkRecords lists the records of a chunk from its header up to limit, the
// free space offset (chunkSize when unusable), within the avail bytes
// present. It stops at the first bad record boundary and then says where
// and why in tail ("" when the records simply ended).
func walkRecords(data []byte, avail, limit int) (heads []recHead, tail string) {
	off := chunkHeaderSize
	for off+recordHeader <= limit {
		if !bytes.Equal(data[off:off+4], recordMagic) {
			if limit == chunkSize && allZero(data[off:off+4]) {
				return heads, "" // end of records in a chunk without a usable free space offset
			}
			return heads, fmt.Sprintf("offset 0x%x: bad record signature; rest of the chunk skipped", off)
		}
		size := int(le.Uint32(data[off+4:]))
		id := le.Uint64(data[off+8:])
		if size < minRecordSize || off+size > chunkSize {
			return heads, fmt.Sprintf("record %d (offset 0x%x): bad record size %d; rest of the chunk skipped", id, off, size)
		}
		if off+size > avail {
			return heads, fmt.Sprintf("record %d (offset 0x%x): cut off at the end of the file", id, off)
		}
		heads = append(heads, recHead{off: off, size: size, id: id})
		off += size
	}
	return heads, ""
}

// idBase returns the number the records of a chunk count from: the most
// common id-i (the smaller one on a tie).
func idBase(heads []recHead) uint64 {
	votes := make(map[uint64]int, len(heads))
	var best uint64
	most := 0
	for i, h := range heads {
		b := h.id - uint64(i)
		votes[b]++
		if v := votes[b]; v > most || (v == most && b < best) {
			best, most = b, v
		}
	}
	return best
}

// saneRange reports whether a chunk header's record range is possible.
func saneRange(first, last uint64) bool {
	return first <= last && last-first < maxChunkRecords
}

// plausibleIDs tells which of the records heads of chunk s carry a
// plausible number (see the damage rules) in a file whose ceiling is given.
func plausibleIDs(s slot, heads []recHead, ceiling uint64) []bool {
	n := len(heads)
	ok := make([]bool, n)
	for i, h := range heads {
		ok[i] = (s.sane() && inRange(h.id, i, n, s.first, s.last)) ||
			(h.id <= ceiling && ((i > 0 && heads[i-1].id+1 == h.id) || (i+1 < n && h.id+1 == heads[i+1].id)))
	}
	return ok
}

// ceiling returns the highest record number the chunks of a file may
// plausibly hold (see the damage rules); no limit when no chunk header
// agrees with its records.
func ceiling(slots []slot) uint64 {
	var m uint64
	found := false
	for _, s := range slots {
		if s.trusted() {
			m, found = max(m, s.last), true
		}
	}
	if !found || m > math.MaxUint64-maxChunkRecords {
		return math.MaxUint64
	}
	return m + maxChunkRecords
}

// inRange reports whether record i of n, numbered id, fits [lo, hi].
func inRange(id uint64, i, n int, lo, hi uint64) bool {
	below, above := uint64(i), uint64(n-1-i) // records before and after it
	return id >= lo && id-lo >= below && id <= hi && hi-id >= above
}

// maxPlausibleID returns the highest plausible record number of chunk s
// (data is the chunk), 0 when it has none.
func maxPlausibleID(data []byte, s slot, ceiling uint64) uint64 {
	heads, _ := walkRecords(data, s.avail, recordsLimit(data))
	var m uint64
	for i, ok := range plausibleIDs(s, heads, ceiling) {
		if ok {
			m = max(m, heads[i].id)
		}
	}
	return m
}

// impossibleTime reports a time before 1990 or beyond now by more than a day.
func impossibleTime(t, now time.Time) bool {
	return t.Before(minEventTime) || t.After(now.Add(timeSlack))
}

// far reports whether two times are more than timeSlack apart.
func far(a, b time.Time) bool {
	d := a.Sub(b)
	return d > timeSlack || d < -timeSlack
}

// checkTimes finds the decoded records of a chunk whose time is impossible
// (see the damage rules) and replaces it; it counts them in st.
func checkTimes(recs []rec, now time.Time, st *Stats) {
	var good []int // records with a possible time, in order
	for i := range recs {
		if r := &recs[i]; r.err == nil && r.hasTime && !impossibleTime(r.ev.Time, now) {
			good = append(good, i)
		}
	}
	bad := map[int]bool{}
	for k, i := range good {
		if r := &recs[i]; far(r.ev.Time, r.hdrTime) && spike(recs, good, k) {
			bad[i] = true
		}
	}
	for i := range recs {
		if recs[i].rawTime != "" {
			bad[i] = true
		}
	}
	var prev *rec // the last record with a trusted time
	for i := range recs {
		r := &recs[i]
		if r.err != nil || (!r.hasTime && r.rawTime == "") {
			continue
		}
		if !bad[i] && !impossibleTime(r.ev.Time, now) {
			prev = r
			continue
		}
		replaceTime(r, prev, nextTrusted(recs, i+1, now, bad), now)
		st.BadTimes++
	}
}

// spikeSpan is how many records on each side a spike is checked against.
const spikeSpan = 2

// spike reports whether the time of record good[k] is more than a day away
// from each of its nearest records on both sides while those agree.
func spike(recs []rec, good []int, k int) bool {
	lo, hi := max(0, k-spikeSpan), min(len(good), k+spikeSpan+1)
	if lo == k || hi == k+1 {
		return false // one side has none
	}
	t := recs[good[k]].ev.Time
	var first, last time.Time
	for j := lo; j < hi; j++ {
		if j == k {
			continue
		}
		u := recs[good[j]].ev.Time
		if !far(t, u) {
			return false
		}
		if first.IsZero() || u.Before(first) {
			first = u
		}
		if u.After(last) {
			last = u
		}
	}
	return !far(first, last)
}

// nextTrusted returns the first record from i on with a trusted time.
func nextTrusted(recs []rec, i int, now time.Time, bad map[int]bool) *rec {
	for ; i < len(recs); i++ {
		if r := &recs[i]; r.err == nil && r.hasTime && !bad[i] && !impossibleTime(r.ev.Time, now) {
			return r
		}
	}
	return nil
}

// replaceTime gives r, whose time is impossible, the best time at hand.
func replaceTime(r, prev, next *rec, now time.Time) {
	bad := r.rawTime
	if bad == "" {
		bad = formatTime(r.ev.Time)
	}
	near := func(t time.Time) bool {
		return (prev == nil && next == nil) || (prev != nil && !far(t, prev.ev.Time)) || (next != nil && !far(t, next.ev.Time))
	}
	switch {
	case !r.hdrTime.IsZero() && !impossibleTime(r.hdrTime, now) && near(r.hdrTime):
		r.ev.Time = r.hdrTime.UTC()
	case prev != nil:
		r.ev.Time = prev.ev.Time
	case next != nil:
		r.ev.Time = next.ev.Time
	default:
		r.ev.Time = time.Time{}
	}
	r.hasTime = !r.ev.Time.IsZero()
	r.badTime = true
	if r.ev.Fields != nil {
		r.ev.Fields["damaged_time"] = bad
	}
}
