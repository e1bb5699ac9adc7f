// Package evtxwriter writes small EVTX files. It is test tooling: no public
// sample holds the events klaxon's Windows rules are about (Srv 2019/2020,
// Resource-Exhaustion-Detector 2004, error 1450), so tests generate them.
//
// The output follows libyal's description of the format: a 4 KiB file
// header, 64 KiB chunks with their header and record-data CRC32s, and
// records of binary XML, each a template instance whose template is defined
// inline in the first record of the chunk that uses it and referenced by
// offset afterwards, with names shared within the chunk. Files are checked
// against two independent readers (golang-evtx through winevt.ReadEVTX and
// libevtx's evtxexport) in winevt's tests.
package evtxwriter

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
)

var le = binary.LittleEndian

const (
	fileHeaderSize = 0x1000
	chunkSize      = 0x10000
	chunkHdrSize   = 0x200
	eventNS        = "http://schemas.microsoft.com/win/2004/08/events/event"
)

// NamedData is one EventData <Data> element; an empty Name makes an unnamed
// <Data> (classic event sources).
type NamedData struct {
	Name, Value string
}

// Record is one event.
type Record struct {
	// ID is the EventRecordID; 0 means the one after the previous record.
	ID   uint64
	Time time.Time
	// Provider is Provider/@Name; EventSourceName is written when set.
	Provider, EventSourceName string
	EventID                   uint16
	// Qualifiers is EventID/@Qualifiers, left out when 0.
	Qualifiers uint16
	// Level is the Windows level (1 critical ... 5 verbose, 0 LogAlways).
	Level               uint8
	Task                uint16
	Opcode              uint8
	Keywords            uint64
	Channel, Computer   string
	ProcessID, ThreadID uint32
	// UserSID ("S-1-5-18") is Security/@UserID, left out when empty.
	UserSID string
	Data    []NamedData
	// Binary is EventData/Binary, left out when nil.
	Binary []byte
}

type chunk struct {
	buf         []byte
	pos         int // free space offset
	first, last uint64
	lastOff     int
	n           int
	names       map[string]uint32
	templates   map[string]uint32
}

func newChunk() *chunk {
	return &chunk{buf: make([]byte, chunkSize), pos: chunkHdrSize, names: map[string]uint32{}, templates: map[string]uint32{}}
}

// Writer accumulates records into chunks.
type Writer struct {
	chunks []*chunk
	nextID uint64
}

// New returns an empty writer; the first record gets ID 1 unless it names one.
func New() *Writer { return &Writer{nextID: 1} }

// NewChunk makes the next record start a new chunk.
func (w *Writer) NewChunk() { w.chunks = append(w.chunks, newChunk()) }

// Chunks returns the number of chunks.
func (w *Writer) Chunks() int { return len(w.chunks) }

// Add appends a record (to the last chunk, or a new one when it is full).
func (w *Writer) Add(r Record) error {
	if r.ID == 0 {
		r.ID = w.nextID
	}
	w.nextID = r.ID + 1
	if len(w.chunks) == 0 {
		w.NewChunk()
	}
	c := w.chunks[len(w.chunks)-1]
	if c.add(r) {
		return nil
	}
	if c.n == 0 {
		return fmt.Errorf("evtxwriter: record %d does not fit into a chunk", r.ID)
	}
	w.NewChunk()
	if !w.chunks[len(w.chunks)-1].add(r) {
		return fmt.Errorf("evtxwriter: record %d does not fit into a chunk", r.ID)
	}
	return nil
}

// MustAdd is Add that panics on error (records too big for a chunk).
func (w *Writer) MustAdd(rs ...Record) {
	for _, r := range rs {
		if err := w.Add(r); err != nil {
			panic(err)
		}
	}
}

// Bytes returns the whole file.
func (w *Writer) Bytes() []byte {
	out := make([]byte, fileHeaderSize+chunkSize*len(w.chunks))
	w.header(out[:fileHeaderSize])
	for i, c := range w.chunks {
		c.finish()
		copy(out[fileHeaderSize+i*chunkSize:], c.buf)
	}
	return out
}

// WriteFile writes the file at path in place, without truncating it: every
// chunk's records first, then its header, then the file header — the order
// in which a reader following the file can never see a chunk header that
// announces records not written yet. Use it to grow a file a Source follows.
func (w *Writer) WriteFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	b := w.Bytes()
	var errs []error
	for i := range w.chunks {
		off := fileHeaderSize + i*chunkSize
		if _, err := f.WriteAt(b[off+chunkHdrSize:off+chunkSize], int64(off+chunkHdrSize)); err != nil {
			errs = append(errs, err)
		}
		if _, err := f.WriteAt(b[off:off+chunkHdrSize], int64(off)); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := f.WriteAt(b[:fileHeaderSize], 0); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, f.Close())
	return errors.Join(errs...)
}

func (w *Writer) header(h []byte) {
	copy(h, "ElfFile\x00")
	n := uint64(len(w.chunks))
	le.PutUint64(h[8:], 0)
	if n > 0 {
		le.PutUint64(h[16:], n-1)
	}
	le.PutUint64(h[24:], w.nextID)
	le.PutUint32(h[32:], 128)
	le.PutUint16(h[36:], 1) // minor version
	le.PutUint16(h[38:], 3) // major version
	le.PutUint16(h[40:], fileHeaderSize)
	le.PutUint16(h[42:], uint16(n))
	le.PutUint32(h[0x78:], 0) // flags: clean
	le.PutUint32(h[0x7c:], crc32.ChecksumIEEE(h[:0x78]))
}

func (c *chunk) finish() {
	h := c.buf
	copy(h, "ElfChnk\x00")
	le.PutUint64(h[0x08:], c.first)
	le.PutUint64(h[0x10:], c.last)
	le.PutUint64(h[0x18:], c.first)
	le.PutUint64(h[0x20:], c.last)
	le.PutUint32(h[0x28:], 128)
	le.PutUint32(h[0x2c:], uint32(c.lastOff))
	le.PutUint32(h[0x30:], uint32(c.pos))
	le.PutUint32(h[0x34:], crc32.ChecksumIEEE(h[chunkHdrSize:c.pos]))
	le.PutUint32(h[0x78:], 0)
	hc := crc32.NewIEEE()
	hc.Write(h[:0x78])
	hc.Write(h[0x80:chunkHdrSize])
	le.PutUint32(h[0x7c:], hc.Sum32())
}

// enc writes binary XML at absolute chunk offsets.
type enc struct {
	b     []byte // bytes from base on
	base  int
	names map[string]uint32
	added []string
}

func (e *enc) pos() int     { return e.base + len(e.b) }
func (e *enc) u8(v byte)    { e.b = append(e.b, v) }
func (e *enc) u16(v uint16) { e.b = le.AppendUint16(e.b, v) }
func (e *enc) u32(v uint32) { e.b = le.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = le.AppendUint64(e.b, v) }
func (e *enc) patch32(at int, v uint32) {
	le.PutUint32(e.b[at-e.base:], v)
}

// name writes a name reference, and the name itself the first time.
func (e *enc) name(s string) {
	if off, ok := e.names[s]; ok {
		e.u32(off)
		return
	}
	off := uint32(e.pos() + 4)
	e.u32(off)
	e.names[s] = off
	e.added = append(e.added, s)
	u := utf16.Encode([]rune(s))
	var hash uint32
	for _, c := range u {
		hash = hash*65599 + uint32(c)
	}
	e.u32(0) // next string in the hash bucket
	e.u16(uint16(hash))
	e.u16(uint16(len(u)))
	for _, c := range u {
		e.u16(c)
	}
	e.u16(0)
}

// Value types of binary XML.
const (
	tString   = 0x01
	tUInt8    = 0x04
	tUInt16   = 0x06
	tUInt32   = 0x08
	tUInt64   = 0x0a
	tBinary   = 0x0e
	tFileTime = 0x11
	tSID      = 0x13
	tHexInt64 = 0x15
)

// part is literal text or a substitution.
type part struct {
	text     string
	sub      int // -1: text
	typ      byte
	optional bool
}

func text(s string) part        { return part{text: s, sub: -1} }
func sub(i int, t byte) part    { return part{sub: i, typ: t} }
func optSub(i int, t byte) part { return part{sub: i, typ: t, optional: true} }

type xattr struct {
	name string
	p    part
}

type xnode struct {
	name    string
	attrs   []xattr
	content []part
	kids    []*xnode
}

func (e *enc) part(p part) {
	if p.sub < 0 {
		u := utf16.Encode([]rune(p.text))
		e.u8(0x05)
		e.u8(tString)
		e.u16(uint16(len(u)))
		for _, c := range u {
			e.u16(c)
		}
		return
	}
	if p.optional {
		e.u8(0x0e)
	} else {
		e.u8(0x0d)
	}
	e.u16(uint16(p.sub))
	e.u8(p.typ)
}

func (e *enc) element(n *xnode) {
	if len(n.attrs) > 0 {
		e.u8(0x41)
	} else {
		e.u8(0x01)
	}
	e.u16(0xFFFF) // dependency identifier: none
	sizeAt := e.pos()
	e.u32(0)
	e.name(n.name)
	if len(n.attrs) > 0 {
		listAt := e.pos()
		e.u32(0)
		for i, a := range n.attrs {
			if i == len(n.attrs)-1 {
				e.u8(0x06)
			} else {
				e.u8(0x46)
			}
			e.name(a.name)
			e.part(a.p)
		}
		e.patch32(listAt, uint32(e.pos()-listAt-4))
	}
	if len(n.content) == 0 && len(n.kids) == 0 {
		e.u8(0x03)
	} else {
		e.u8(0x02)
		for _, p := range n.content {
			e.part(p)
		}
		for _, k := range n.kids {
			e.element(k)
		}
		e.u8(0x04)
	}
	e.patch32(sizeAt, uint32(e.pos()-sizeAt-4))
}

// Substitution indexes of the System part of the template.
const (
	sQualifiers = iota
	sEventID
	sLevel
	sTask
	sOpcode
	sKeywords
	sTime
	sRecordID
	sProcessID
	sThreadID
	sChannel
	sComputer
	sUserID
	sFirstData
)

// templateFor builds the template of records shaped like r.
func templateFor(r *Record) (key string, root *xnode) {
	prov := []xattr{{"Name", text(r.Provider)}}
	if r.EventSourceName != "" {
		prov = append(prov, xattr{"EventSourceName", text(r.EventSourceName)})
	}
	sys := &xnode{name: "System", kids: []*xnode{
		{name: "Provider", attrs: prov},
		{name: "EventID", attrs: []xattr{{"Qualifiers", optSub(sQualifiers, tUInt16)}}, content: []part{sub(sEventID, tUInt16)}},
		{name: "Level", content: []part{sub(sLevel, tUInt8)}},
		{name: "Task", content: []part{sub(sTask, tUInt16)}},
		{name: "Opcode", content: []part{sub(sOpcode, tUInt8)}},
		{name: "Keywords", content: []part{sub(sKeywords, tHexInt64)}},
		{name: "TimeCreated", attrs: []xattr{{"SystemTime", sub(sTime, tFileTime)}}},
		{name: "EventRecordID", content: []part{sub(sRecordID, tUInt64)}},
		{name: "Execution", attrs: []xattr{{"ProcessID", sub(sProcessID, tUInt32)}, {"ThreadID", sub(sThreadID, tUInt32)}}},
		{name: "Channel", content: []part{sub(sChannel, tString)}},
		{name: "Computer", content: []part{sub(sComputer, tString)}},
		{name: "Security", attrs: []xattr{{"UserID", optSub(sUserID, tSID)}}},
	}}
	ed := &xnode{name: "EventData"}
	var kb strings.Builder
	kb.WriteString(r.Provider + "\x00" + r.EventSourceName)
	for i, d := range r.Data {
		n := &xnode{name: "Data", content: []part{sub(sFirstData+i, tString)}}
		if d.Name != "" {
			n.attrs = []xattr{{"Name", text(d.Name)}}
		}
		ed.kids = append(ed.kids, n)
		kb.WriteString("\x00d:" + d.Name)
	}
	if r.Binary != nil {
		ed.kids = append(ed.kids, &xnode{name: "Binary", content: []part{sub(sFirstData+len(r.Data), tBinary)}})
		kb.WriteString("\x00binary")
	}
	root = &xnode{name: "Event", attrs: []xattr{{"xmlns", text(eventNS)}}, kids: []*xnode{sys, ed}}
	return kb.String(), root
}

type val struct {
	typ byte
	b   []byte
}

func (r *Record) values() []val {
	v := make([]val, sFirstData, sFirstData+len(r.Data)+1)
	u16 := func(x uint16) []byte { return le.AppendUint16(nil, x) }
	u32 := func(x uint32) []byte { return le.AppendUint32(nil, x) }
	u64 := func(x uint64) []byte { return le.AppendUint64(nil, x) }
	if r.Qualifiers != 0 {
		v[sQualifiers] = val{tUInt16, u16(r.Qualifiers)}
	}
	v[sEventID] = val{tUInt16, u16(r.EventID)}
	v[sLevel] = val{tUInt8, []byte{r.Level}}
	v[sTask] = val{tUInt16, u16(r.Task)}
	v[sOpcode] = val{tUInt8, []byte{r.Opcode}}
	v[sKeywords] = val{tHexInt64, u64(r.Keywords)}
	v[sTime] = val{tFileTime, u64(FileTime(r.Time))}
	v[sRecordID] = val{tUInt64, u64(r.ID)}
	v[sProcessID] = val{tUInt32, u32(r.ProcessID)}
	v[sThreadID] = val{tUInt32, u32(r.ThreadID)}
	v[sChannel] = val{tString, utf16le(r.Channel)}
	v[sComputer] = val{tString, utf16le(r.Computer)}
	if sid, err := encodeSID(r.UserSID); err == nil && sid != nil {
		v[sUserID] = val{tSID, sid}
	}
	for _, d := range r.Data {
		v = append(v, val{tString, utf16le(d.Value)})
	}
	if r.Binary != nil {
		v = append(v, val{tBinary, r.Binary})
	}
	return v
}

// add writes r into the chunk; false when it does not fit.
func (c *chunk) add(r Record) bool {
	start := c.pos
	e := &enc{base: start, names: c.names}
	e.b = append(e.b, 0x2a, 0x2a, 0, 0)
	e.u32(0) // size, patched
	e.u64(r.ID)
	e.u64(FileTime(r.Time))
	e.b = append(e.b, 0x0f, 0x01, 0x01, 0x00) // fragment header
	key, root := templateFor(&r)
	sum := sha256.Sum256([]byte(key))
	e.u8(0x0c)
	e.u8(0x01)
	e.u32(le.Uint32(sum[:4]))
	defOff, known := c.templates[key]
	newTemplate := false
	if !known {
		defOff = uint32(e.pos() + 4)
		newTemplate = true
	}
	e.u32(defOff)
	if !known {
		e.u32(0) // next template definition
		e.b = append(e.b, sum[:16]...)
		sizeAt := e.pos()
		e.u32(0)
		dataStart := e.pos()
		e.b = append(e.b, 0x0f, 0x01, 0x01, 0x00)
		e.element(root)
		e.u8(0x00) // end of fragment
		e.patch32(sizeAt, uint32(e.pos()-dataStart))
	}
	vals := r.values()
	e.u32(uint32(len(vals)))
	for _, v := range vals {
		e.u16(uint16(len(v.b)))
		e.u8(v.typ)
		e.u8(0)
	}
	for _, v := range vals {
		e.b = append(e.b, v.b...)
	}
	e.u8(0x00) // end of fragment
	for (len(e.b)+4)%8 != 0 {
		e.u8(0)
	}
	e.u32(0) // size copy, patched
	size := uint32(len(e.b))
	le.PutUint32(e.b[4:], size)
	le.PutUint32(e.b[len(e.b)-4:], size)
	if start+len(e.b) > chunkSize {
		for _, n := range e.added {
			delete(c.names, n)
		}
		return false
	}
	if newTemplate {
		c.templates[key] = defOff
	}
	copy(c.buf[start:], e.b)
	if c.n == 0 {
		c.first = r.ID
	}
	c.last = r.ID
	c.lastOff = start
	c.pos = start + len(e.b)
	c.n++
	return true
}

// FileTime converts t to a Windows FILETIME (0 for the zero time).
func FileTime(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano()/100) + 116444736000000000
}

func utf16le(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 0, 2*len(u)+2)
	for _, c := range u {
		b = le.AppendUint16(b, c)
	}
	return b
}

// encodeSID encodes "S-1-5-21-..." as a binary SID (nil for "").
func encodeSID(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	p := strings.Split(s, "-")
	if len(p) < 3 || p[0] != "S" {
		return nil, fmt.Errorf("bad SID %q", s)
	}
	rev, err := strconv.ParseUint(p[1], 10, 8)
	if err != nil {
		return nil, err
	}
	auth, err := strconv.ParseUint(p[2], 10, 48)
	if err != nil {
		return nil, err
	}
	b := []byte{byte(rev), byte(len(p) - 3)}
	for i := 5; i >= 0; i-- {
		b = append(b, byte(auth>>(8*i)))
	}
	for _, x := range p[3:] {
		v, err := strconv.ParseUint(x, 10, 32)
		if err != nil {
			return nil, err
		}
		b = le.AppendUint32(b, uint32(v))
	}
	return b, nil
}

// D returns a named <Data> element.
func D(name, value string) NamedData { return NamedData{Name: name, Value: value} }
