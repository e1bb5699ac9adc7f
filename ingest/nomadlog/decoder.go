package nomadlog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/defaults"
)

// Defaults of DecoderConfig.
const (
	DefaultMaxLineBytes   = 1 << 20
	DefaultMaxRecordLines = 1000
)

// DecoderConfig configures a Decoder.
type DecoderConfig struct {
	// IDPrefix makes Event.ID: IDPrefix + ":" + decimal offset of the
	// record's first byte.
	IDPrefix string
	// DefaultNode is the node of lines that do not carry one (replay --node,
	// or the configured/host name live).
	DefaultNode string
	// Identity is the shared node identity map; may be nil (the Decoder then
	// keeps a private one, so that a dev agent's log still names its node).
	Identity *ingest.Identity
	// MaxLineBytes: longer lines are counted and skipped (default 1 MiB). It
	// also bounds the text a record collects from continuation lines.
	MaxLineBytes int
	// MaxRecordLines caps the continuation lines joined to one record
	// (default 1000); further lines are dropped and counted.
	MaxRecordLines int
	// Fallback gives the time of records without a timestamp when no earlier
	// record had one (default time.Now).
	Fallback func() time.Time
}

func (c *DecoderConfig) setDefaults() {
	c.MaxLineBytes = defaults.Positive(c.MaxLineBytes, DefaultMaxLineBytes)
	c.MaxRecordLines = defaults.Positive(c.MaxRecordLines, DefaultMaxRecordLines)
	if c.Fallback == nil {
		c.Fallback = time.Now
	}
	if c.Identity == nil {
		c.Identity = ingest.NewIdentity()
	}
}

// Stats are the counters of a Decoder.
type Stats struct {
	// Lines is the number of physical lines fed in (oversize ones included).
	Lines int64
	// Records is the number of events emitted.
	Records int64
	// Oversize counts lines longer than MaxLineBytes (skipped).
	Oversize int64
	// Unparsed counts lines that were neither a record nor a continuation (no
	// record before them, blank ones included); they are dropped.
	Unparsed int64
	// Continuations counts lines joined to the record before them.
	Continuations int64
	// DroppedContinuations counts continuation lines over MaxRecordLines or
	// over MaxLineBytes of joined text.
	DroppedContinuations int64
	// UILines counts agent UI lines ("==> ...") that were dropped.
	UILines int64
}

// Decoder turns the physical lines of one input into ingest.Events: it joins
// multi-line entries (panics and goroutine dumps, the "1 error(s) occurred:"
// blocks of pre-0.9 agents, hclog's "\n  key=\n  | line" multi-line values) to
// the record they belong to, and assigns IDs, times and nodes. It is not safe
// for concurrent use.
//
// Continuation text is appended to Msg after a newline, except hclog
// multi-line values, which become the field they name.
type Decoder struct {
	cfg   DecoderConfig
	stats Stats

	pending  bool
	ev       ingest.Event
	pendLine Line
	extra    []byte // Msg plus continuation text, when there is any
	contN    int
	mlKey    string // hclog multi-line value being collected
	mlBuf    []byte
	inML     bool
	mlLines  bool // the multi-line value has a line already
	pendEnd  int64

	// commit, when set, makes the Commit func of an event that ends at end.
	commit func(end int64) func()

	idBuf    []byte
	lastTime time.Time
	lastZone int // UTC offset of the last timestamp that had one
	ownID    string
	ownName  string
}

// NewDecoder returns a Decoder.
func NewDecoder(cfg DecoderConfig) *Decoder {
	cfg.setDefaults()
	return &Decoder{cfg: cfg}
}

// Stats returns the counters.
func (d *Decoder) Stats() Stats { return d.stats }

// setPrefix changes the ID prefix (the tailer after a truncation).
func (d *Decoder) setPrefix(p string) { d.cfg.IDPrefix = p }

// oversize counts a line the caller skipped because it was too long.
func (d *Decoder) oversize() {
	d.stats.Lines++
	d.stats.Oversize++
}

// Line feeds one physical line (without its newline) that starts at byte
// offset off and ends (including the newline) at end. emit receives each
// completed record; a record is complete when the next record starts (or at
// Flush). The Decoder does not keep line after Line returns.
func (d *Decoder) Line(line []byte, off, end int64, emit func(ingest.Event)) {
	d.stats.Lines++
	if len(line) > d.cfg.MaxLineBytes {
		d.stats.Oversize++
		return
	}
	line = trimCR(line)
	s := string(line)
	l, cls, rest := parse(s)
	switch cls {
	case clsRecord:
		d.Flush(emit)
		d.start(l, off, end)
		return
	case clsUI:
		d.stats.UILines++
		return
	}
	if !d.pending {
		d.stats.Unparsed++ // blank lines too
		return
	}
	d.pendEnd = end
	d.continuation(rest)
}

func (d *Decoder) start(l Line, off, end int64) {
	d.stats.Records++
	d.pending = true
	d.pendLine = l
	d.contN = 0
	d.extra = d.extra[:0]
	d.inML = false
	d.mlKey = ""

	t := l.Time
	switch {
	case t.IsZero() && d.lastTime.IsZero():
		t = d.cfg.Fallback().UTC()
	case t.IsZero():
		t = d.lastTime
	case l.NoYear:
		ref := d.lastTime
		if ref.IsZero() {
			ref = d.cfg.Fallback()
		}
		// A syslog stamp is local time: use the offset of the
		// input's last hclog timestamp (UTC when none was seen).
		t = withYear(t, ref).Add(-time.Duration(d.lastZone) * time.Second)
	}
	if l.hasZone {
		d.lastZone = l.zone
	}
	d.lastTime = t

	if l.Logger == "client" || l.Logger == "nomad.client" {
		d.learn(&l)
	}
	node, nodeID := "", ""
	switch {
	case l.Host != "":
		node = d.cfg.Identity.Resolve(l.Host)
		if d.ownID != "" && node == d.ownNode() {
			nodeID = d.ownID
		}
	case d.ownID != "" && d.ownNode() != "":
		node, nodeID = d.ownName, d.ownID
	default:
		node = d.cfg.Identity.Resolve(d.cfg.DefaultNode)
		nodeID = d.ownID
	}
	d.ev = ingest.Event{
		ID:     d.id(off),
		Time:   t,
		Node:   node,
		NodeID: nodeID,
		Source: ingest.SourceNomadLog,
		Kind:   l.Logger,
		Level:  l.Level,
		Msg:    l.Msg,
		Fields: l.Fields,

		Occurrence: taskOccurrence(&l),
	}
	d.pendEnd = end
}

// taskOccurrence is the ingest.TaskOccurrence of a task runner's line: a
// "Task event" line names its type; "restarting task" and "not restarting
// task" (the restart tracker's decision, logged a moment before the task
// event it causes) are the Restarting and Not Restarting events.
func taskOccurrence(l *Line) string {
	if l.Logger != "client.alloc_runner.task_runner" && l.Logger != "client" {
		return ""
	}
	var typ string
	switch l.Msg {
	case "Task event":
		typ, _ = l.Fields["type"].(string)
	case "restarting task":
		typ = "Restarting"
	case "not restarting task":
		typ = "Not Restarting"
	default:
		return ""
	}
	alloc, _ := l.Fields["alloc_id"].(string)
	task, _ := l.Fields["task"].(string)
	return ingest.TaskOccurrence(alloc, task, typ)
}

// id returns IDPrefix:off with one allocation.
func (d *Decoder) id(off int64) string {
	b := append(d.idBuf[:0], d.cfg.IDPrefix...)
	b = append(b, ':')
	b = strconv.AppendInt(b, off, 10)
	d.idBuf = b
	return string(b)
}

// ownNode returns the name of the node this input belongs to, once known.
func (d *Decoder) ownNode() string {
	if d.ownName == "" && d.ownID != "" {
		d.ownName, _ = d.cfg.Identity.NameOf(d.ownID)
	}
	return d.ownName
}

// learn picks up the node identity from the lines that carry it: a client's
// "started client: node_id=X" and a server's "node registration ...:
// node_id=X node_name=NAME" (the dev agent logs both).
func (d *Decoder) learn(l *Line) {
	switch {
	case l.Logger == "client" && l.Msg == "started client":
		if id, _ := l.Fields["node_id"].(string); id != "" && id != d.ownID {
			d.ownID, d.ownName = id, ""
		}
	case l.Logger == "nomad.client" && strings.HasPrefix(l.Msg, "node registration"):
		id, _ := l.Fields["node_id"].(string)
		name, _ := l.Fields["node_name"].(string)
		if id != "" && name != "" {
			d.cfg.Identity.Learn(id, name)
			if id == d.ownID {
				d.ownName = ""
			}
		}
	}
}

// continuation joins a line to the pending record.
func (d *Decoder) continuation(text string) {
	d.contN++
	if d.contN > d.cfg.MaxRecordLines {
		d.stats.DroppedContinuations++
		return
	}
	d.stats.Continuations++
	if d.mlContinuation(text) {
		return
	}
	if len(d.extra) == 0 {
		d.extra = append(d.extra, d.ev.Msg...)
	}
	if len(d.extra)+1+len(text) > d.cfg.MaxLineBytes {
		d.stats.DroppedContinuations++
		d.stats.Continuations--
		return
	}
	d.extra = append(d.extra, '\n')
	d.extra = append(d.extra, text...)
}

// mlContinuation handles hclog's multi-line values:
//
//	<record>: k=v
//	  key=
//	  | line 1
//	  | line 2
//	   k2=v2 ...
//
// It reports whether text was consumed.
func (d *Decoder) mlContinuation(text string) bool {
	switch f := d.pendLine.Format; f {
	case FormatText, FormatBare, FormatSyslog:
	default:
		return false
	}
	if !strings.HasPrefix(text, "  ") {
		d.endML()
		return false
	}
	if strings.HasPrefix(text, "  |") {
		if !d.inML {
			return false
		}
		v := text[3:]
		if len(v) > 0 && v[0] == ' ' {
			v = v[1:]
		}
		if len(d.mlBuf)+1+len(v) > d.cfg.MaxLineBytes {
			d.stats.DroppedContinuations++
			d.stats.Continuations--
			return true
		}
		if d.mlLines {
			d.mlBuf = append(d.mlBuf, '\n')
		}
		d.mlLines = true
		d.mlBuf = append(d.mlBuf, v...)
		return true
	}
	body := text[2:]
	if len(body) > 1 && body[0] != ' ' && body[len(body)-1] == '=' && !strings.ContainsAny(body[:len(body)-1], "= \"") {
		d.endML()
		d.inML = true
		d.mlLines = false
		d.mlKey = body[:len(body)-1]
		d.mlBuf = d.mlBuf[:0]
		return true
	}
	if d.inML {
		// After the block: "  " then the remaining fields " k=v ...".
		d.endML()
		b := strings.TrimLeft(body, " ")
		if b == "" {
			return true
		}
		if n := scanKV(b, 0, nil); n > 0 {
			if d.ev.Fields == nil {
				d.ev.Fields = make(map[string]any, n)
			}
			scanKV(b, 0, &kvBuf{m: d.ev.Fields})
			return true
		}
	}
	return false
}

func (d *Decoder) endML() {
	if !d.inML {
		return
	}
	d.inML = false
	if d.ev.Fields == nil {
		d.ev.Fields = make(map[string]any, 1)
		// "msg:" — hclog writes the colon before the fields.
		d.ev.Msg = strings.TrimSuffix(d.ev.Msg, ":")
	}
	d.ev.Fields[d.mlKey] = string(d.mlBuf)
	d.mlBuf = d.mlBuf[:0]
}

// Flush emits the pending record (end of input, or the tailer saw no new
// data for a moment).
func (d *Decoder) Flush(emit func(ingest.Event)) {
	if !d.pending {
		return
	}
	d.endML()
	if len(d.extra) > 0 {
		d.ev.Msg = strings.TrimRight(string(d.extra), "\n \t")
		d.extra = d.extra[:0]
	}
	d.pending = false
	ev := d.ev
	d.ev = ingest.Event{}
	if d.commit != nil {
		ev.Commit = d.commit(d.pendEnd)
	}
	emit(ev)
}

// hasPending reports whether a record waits for Flush.
func (d *Decoder) hasPending() bool { return d.pending }

// ReadAll decodes a whole reader (replay); read errors name cfg.IDPrefix. Lines
// longer than MaxLineBytes are skipped without being read into memory whole,
// counted, and reading goes on. The last line does not need a newline.
func ReadAll(ctx context.Context, r io.Reader, cfg DecoderConfig, emit func(ingest.Event)) (Stats, error) {
	d := NewDecoder(cfg)
	max := d.cfg.MaxLineBytes
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		off     int64
		long    []byte // a line longer than the bufio buffer, being collected
		discard bool   // inside an oversize line
		lineOff int64
		n       int
	)
	for {
		frag, err := br.ReadSlice('\n')
		if len(frag) > 0 {
			complete := frag[len(frag)-1] == '\n'
			if long == nil && !discard {
				lineOff = off
			}
			off += int64(len(frag))
			switch {
			case discard:
			case len(long)+len(frag) > max+1: // +1: the newline
				discard, long = true, nil
			case !complete || long != nil:
				long = append(long, frag...)
			}
			if complete || (err != nil && err != bufio.ErrBufferFull) {
				switch {
				case discard:
					d.oversize()
				case long != nil:
					d.Line(trimNL(long), lineOff, off, emit)
				default:
					d.Line(trimNL(frag), lineOff, off, emit)
				}
				long, discard = nil, false
				if n++; n&1023 == 0 && ctx.Err() != nil {
					d.Flush(emit)
					return d.stats, ctx.Err()
				}
			}
		}
		if err == nil || err == bufio.ErrBufferFull {
			continue
		}
		d.Flush(emit)
		if errors.Is(err, io.EOF) {
			return d.stats, nil
		}
		return d.stats, fmt.Errorf("nomadlog: read %s: %w", nameOr(cfg.IDPrefix), err)
	}
}

func nameOr(s string) string {
	if s == "" {
		return "input"
	}
	return s
}

func trimNL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		return b[:n-1]
	}
	return b
}

// Detect reports whether the first bytes of a file look like a Nomad agent
// log (text or JSON, any variant, wrapped or not); replay uses it to detect
// its inputs. Agent UI lines ("==> ...") and blank lines are neutral.
func Detect(head []byte) bool {
	s := string(head)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
		s = s[:i] // drop a cut last line
	}
	records, others := 0, 0
	for lines := 0; len(s) > 0 && lines < 64; lines++ {
		line := s
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			line, s = s[:i], s[i+1:]
		} else {
			s = ""
		}
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		switch _, cls, _ := parse(line); cls {
		case clsRecord:
			records++
		case clsOther:
			others++
		}
	}
	return records > 0 && records*4 >= others
}
