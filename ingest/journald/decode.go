package journald

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/nomadlog"
)

// Stats are the counters of a journald reader.
type Stats struct {
	// Entries is the number of journal entries read.
	Entries int64
	// Events is the number of events emitted.
	Events int64
	// Lines, Unparsed and Oversize are the counters of the hclog decoders
	// the MESSAGE lines went through (see nomadlog.Stats): lines fed,
	// lines that were neither a record nor a continuation, lines over
	// max_line_bytes.
	Lines, Unparsed, Oversize int64
	// Skipped counts entries not decoded: without a usable MESSAGE (absent,
	// or over the field limit), systemd's own messages about the unit
	// (_PID 1, which journalctl --unit shows too), and, in replay, entries
	// of other units.
	Skipped int64
	// Malformed counts lines of a JSON input (journalctl -o json) that
	// were not journal entries.
	Malformed int64
	// Restarts counts journalctl runs after the first (live source).
	Restarts int64
}

func (s *Stats) add(o nomadlog.Stats) {
	s.Lines += o.Lines
	s.Unparsed += o.Unparsed
	s.Oversize += o.Oversize
}

// decoderConfig configures a decoder.
type decoderConfig struct {
	// Node, when set, is the node of every entry (instead of _HOSTNAME).
	Node string
	// DefaultNode is the node of entries without _HOSTNAME.
	DefaultNode string
	// Identity is the shared node identity map (never nil).
	Identity *ingest.Identity
	// MaxLineBytes caps one line of MESSAGE (nomadlog's default when 0).
	MaxLineBytes int
	// IDPrefix makes the IDs of entries without a cursor: IDPrefix + ":" +
	// the entry's ordinal in the input.
	IDPrefix string
	// Keep, when set, selects the entries to decode (replay's unit filter).
	Keep func(*Entry) bool
	// Now is the wall clock (idle flushes; default time.Now).
	Now func() time.Time
}

// decoder turns journal entries into events. The MESSAGE of each entry is
// one or more hclog lines; they go through nomadlog's Decoder exactly as
// the lines of a log file do, one Decoder per stream (host and unit), so
// that a record's continuation lines (a panic's goroutine dump, hclog
// multi-line values), which journald stores as entries of their own, are
// joined to it. It is not safe for concurrent use; its tracker is.
type decoder struct {
	cfg     decoderConfig
	streams map[string]*stream
	n       int64 // entries seen
	stats   Stats
	track   *tracker // nil: no commits (replay)
	emit    func(ingest.Event)
	// realtime of the entry being fed (the Fallback of the hclog decoders).
	realtime time.Time
}

// stream is the hclog decoder of one host's unit.
type stream struct {
	d    *decoder
	dec  *nomadlog.Decoder
	pid  string
	recs int64     // dec.Stats().Records after the last line fed
	cur  *record   // the record the hclog decoder holds, nil when none
	last time.Time // wall clock of the last entry fed
	emit func(ingest.Event)
}

// record is what the journald side knows of the record a stream holds.
type record struct {
	id       string
	realtime time.Time
	hasTime  bool    // the first line carries its own timestamp
	seqs     []int64 // tracker positions the record covers
}

func newDecoder(cfg decoderConfig, track *tracker) *decoder {
	if cfg.Identity == nil {
		cfg.Identity = ingest.NewIdentity()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &decoder{cfg: cfg, streams: map[string]*stream{}, track: track}
}

// lineBits is how many bits of a line offset count the lines within one
// entry's MESSAGE; the rest is the entry's ordinal.
const lineBits = 16

// feed decodes one entry; emit receives the records it completes.
func (d *decoder) feed(e *Entry, emit func(ingest.Event)) {
	d.emit = emit
	n := d.n
	d.n++
	d.stats.Entries++
	seq := int64(-1)
	if d.track != nil {
		seq = d.track.add(e.Cursor)
	}
	if !e.HasMessage || e.PID == "1" || (d.cfg.Keep != nil && !d.cfg.Keep(e)) {
		d.stats.Skipped++
		d.track.done(seq)
		return
	}
	s := d.stream(e)
	if s.pid != e.PID {
		// Another process of the unit (a restart): what the last one
		// left pending is complete.
		if s.pid != "" {
			s.dec.Flush(s.emit)
		}
		s.pid = e.PID
	}
	s.last = d.cfg.Now()
	d.realtime = e.Realtime
	msg := bytes.TrimRight(e.Message, "\n")
	for i := 0; ; i++ {
		line := msg
		j := bytes.IndexByte(msg, '\n')
		if j >= 0 {
			line, msg = msg[:j], msg[j+1:]
		}
		if i >= 1<<lineBits-1 { // a MESSAGE of 65535 lines and more: the rest is dropped
			break
		}
		off := n<<lineBits | int64(i)
		s.dec.Line(line, off, off+1, s.emit)
		if r := s.dec.Stats().Records; r != s.recs {
			s.recs = r
			s.cur = &record{id: d.entryID(e, n, i), realtime: e.Realtime, hasTime: ownTime(line)}
		}
		if j < 0 {
			break
		}
	}
	switch {
	case seq < 0:
	case s.cur != nil:
		// The entry belongs to the record held now: it is done when
		// that record is committed (records of a stream commit in order).
		s.cur.seqs = append(s.cur.seqs, seq)
	default:
		d.track.done(seq) // nothing of it is pending
	}
}

// stream returns the stream of e's host and unit.
func (d *decoder) stream(e *Entry) *stream {
	unit := e.Unit
	if unit == "" {
		unit = e.Identifier
	}
	key := e.Hostname + "\x00" + unit
	if s := d.streams[key]; s != nil {
		return s
	}
	node := d.cfg.Node
	if node == "" {
		node = e.Hostname
	}
	if node == "" {
		node = d.cfg.DefaultNode
	}
	s := &stream{d: d}
	s.dec = nomadlog.NewDecoder(nomadlog.DecoderConfig{
		DefaultNode:  node,
		Identity:     d.cfg.Identity,
		MaxLineBytes: d.cfg.MaxLineBytes,
		Fallback:     d.fallback,
	})
	s.emit = s.emitRecord
	d.streams[key] = s
	return s
}

// fallback is the time of a record without one (the hclog decoder asks
// for it when no earlier record had a time): the entry's.
func (d *decoder) fallback() time.Time {
	if !d.realtime.IsZero() {
		return d.realtime
	}
	return d.cfg.Now().UTC()
}

// emitRecord completes the event of the record the stream held.
func (s *stream) emitRecord(ev ingest.Event) {
	rec := s.cur
	s.cur = nil
	d := s.d
	if rec != nil {
		ev.ID = rec.id
		if !rec.hasTime && !rec.realtime.IsZero() {
			ev.Time = rec.realtime
		}
		if d.track != nil && len(rec.seqs) > 0 {
			t, seqs := d.track, rec.seqs
			ev.Commit = func() { t.done(seqs...) }
		}
	}
	d.stats.Events++
	d.emit(ev)
}

// flush emits what every stream holds (end of input).
func (d *decoder) flush(emit func(ingest.Event)) {
	d.emit = emit
	for _, s := range d.streams {
		s.dec.Flush(s.emit)
	}
}

// flushIdle emits the records of streams that got no entry for idle
// (more lines of them would have come with them), and forgets streams
// quiet for an hour.
func (d *decoder) flushIdle(idle time.Duration, emit func(ingest.Event)) {
	d.emit = emit
	now := d.cfg.Now()
	for k, s := range d.streams {
		quiet := now.Sub(s.last)
		if s.cur != nil && quiet >= idle {
			s.dec.Flush(s.emit)
		}
		if s.cur == nil && quiet >= time.Hour {
			d.stats.add(s.dec.Stats()) // keep the counters of the forgotten stream
			delete(d.streams, k)
		}
	}
}

// Stats returns the counters.
func (d *decoder) Stats() Stats {
	st := d.stats
	for _, s := range d.streams {
		st.add(s.dec.Stats())
	}
	return st
}

// ownTime reports whether an hclog line carries its own timestamp (else the
// event takes the entry's __REALTIME_TIMESTAMP).
func ownTime(line []byte) bool {
	l, err := nomadlog.ParseLine(line)
	return err == nil && !l.Time.IsZero()
}

// entryID is the Event.ID of the record starting at line i of entry n. With
// a cursor it is stable across re-reads: a hash of the journal's sequence
// number ID and the entry's sequence number ("s=" and "i=" of the cursor),
// so that a re-send after a crash carries the same Nats-Msg-Id.
func (d *decoder) entryID(e *Entry, n int64, i int) string {
	var id string
	switch {
	case e.Cursor != "":
		id = CursorID(e.Cursor)
	default:
		id = d.cfg.IDPrefix + ":" + strconv.FormatInt(n, 10)
	}
	if i > 0 {
		id += "." + strconv.Itoa(i)
	}
	return id
}

// CursorID is the stable event ID of the journal entry at cursor: the
// first 16 hex digits of the SHA-256 of the cursor's sequence number ID,
// ":", and its sequence number (hex, as in the cursor). A cursor without
// them is hashed whole.
func CursorID(cursor string) string {
	var s, i string
	for part := range strings.SplitSeq(cursor, ";") {
		switch {
		case strings.HasPrefix(part, "s="):
			s = part[2:]
		case strings.HasPrefix(part, "i="):
			i = part[2:]
		}
	}
	if s == "" || i == "" {
		sum := sha256.Sum256([]byte(cursor))
		return hex.EncodeToString(sum[:8])
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8]) + ":" + i
}

// tracker turns the commits of events into the journal position that is
// safe to resume after: the cursor of the last entry such that it and all
// entries before it are done (committed, or decoded into nothing). Entries
// are added in journal order; records may be committed out of that order
// (records of different streams are completed at different times). Safe
// for concurrent use.
type tracker struct {
	mu    sync.Mutex
	base  int64 // position of items[0]
	items []titem
	// advance receives the new position (called with mu held, in order).
	advance func(cursor string)
}

type titem struct {
	cursor string
	done   bool
}

// add records the next entry in journal order and returns its position.
func (t *tracker) add(cursor string) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.items = append(t.items, titem{cursor: cursor})
	return t.base + int64(len(t.items)) - 1
}

// done marks entries done and advances the position over the done prefix.
// Nil trackers and negative positions are ignored.
func (t *tracker) done(seqs ...int64) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range seqs {
		if i := s - t.base; i >= 0 && i < int64(len(t.items)) {
			t.items[i].done = true
		}
	}
	k := 0
	cursor := ""
	for k < len(t.items) && t.items[k].done {
		if c := t.items[k].cursor; c != "" {
			cursor = c
		}
		k++
	}
	if k == 0 {
		return
	}
	clear(t.items[:k])
	t.items = t.items[k:]
	t.base += int64(k)
	if cursor != "" && t.advance != nil {
		t.advance(cursor)
	}
}

// pending returns how many entries wait for a commit.
func (t *tracker) pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.items)
}
