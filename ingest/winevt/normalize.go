// Package winevt reads the Windows Event Log: EVTX files (replay, and
// following files as they grow), rendered event XML (`wevtutil qe /f:xml`,
// EvtRender) and, on Windows, live channels through EvtSubscribe. Every form
// goes through one normaliser, so that a record turns into the same
// ingest.Event whichever way it was read.
//
// Normalisation: Source "winevt"; Kind "<Provider>/<EventID>" (the provider
// Name, EventSourceName as the fallback, and the EventID without its
// qualifiers); Level from the Windows level (1–2 error, 3 warn, 0 and 4 info,
// 5 debug); Node from Identity.Resolve(Computer); Time from
// System/TimeCreated/@SystemTime; ID "winevt:<computer>:<channel>:<EventRecordID>";
// Fields with the System values, EventData, UserData leaves and the insertion
// strings; Msg from RenderingInfo/Message (or, live, EvtFormatMessage), else
// the message klaxon knows for the event (the Service Control Manager's), else
// "<Provider> event <EventID>: " and the insertion strings. The "%%N"
// references to Win32 error messages (the Service Control Manager's
// "%%1450") are put in words, the reference kept in <field>_insert
// (messages.go).
// Nomad's own Application log entries (provider "nomad", EventID 4) become
// nomad.log events parsed like the agent's log lines.
//
// EVTX parsing uses github.com/0xrawsec/golang-evtx for chunk headers and
// binary XML template definitions; template instances and their substitution
// values are decoded here, templates are parsed once per chunk, and chunks are
// decoded in parallel. What golang-evtx prints about a record it cannot parse
// (through the standard logger) is captured into one warning per record,
// counted in Stats.ParserWarnings.
//
// Damaged EVTX files (damage.go has the rules in full) are read as far as
// they can be, the same way by replay (ReadEVTX) and by the follower
// (Source): a record whose number is implausible (it neither fits its chunk
// header's range at its position nor continues a neighbour's numbering) or
// that cannot be decoded is counted with its place and skipped, and never
// becomes a checkpoint; a record whose time is impossible (before 1990, more
// than a day ahead of the reader's clock, or a lone spike that its own
// header time contradicts) is kept with the best time at hand (its header's,
// else its neighbour's), counted in Stats.BadTimes and marked with the field
// "damaged_time". The follower reads what a file already holds in one pass;
// only the end of the newest chunk, which may be a record being written, is
// read again at the next polls (up to three reads) before it counts as damage.
package winevt

import (
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/nomadlog"
)

// DecoderConfig configures ReadEVTX and ReadXML.
type DecoderConfig struct {
	// Identity is the shared node identity map; may be nil (node names are
	// then the canonical form of the Computer name).
	Identity *ingest.Identity
	// Log receives warnings about damaged input; nil means slog.Default().
	Log *slog.Logger
	// Now is the reader's clock, against which impossible (future) event
	// times are found; nil means time.Now.
	Now func() time.Time
}

func (c DecoderConfig) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

func (c DecoderConfig) logger() *slog.Logger {
	if c.Log == nil {
		return slog.Default()
	}
	return c.Log
}

// maxErrors bounds Stats.Errors.
const maxErrors = 100

// Stats are the counters of one read.
type Stats struct {
	// Records counts the events emitted.
	Records int64
	// Chunks counts the chunks read (EVTX; empty chunk slots are not counted).
	Chunks int64
	// BadChunks counts chunk slots that could not be read at all (bad magic,
	// unreadable header).
	BadChunks int64
	// BadRecords counts records (or XML documents) that could not be decoded.
	BadRecords int64
	// ChecksumErrors counts chunks whose header or data CRC32 does not match;
	// their records are read all the same.
	ChecksumErrors int64
	// NoTime counts events without any timestamp (their Time is zero).
	NoTime int64
	// BadTimes counts EVTX records whose time was impossible (damaged) and
	// was replaced (see the package's damage rules).
	BadTimes int64
	// ParserWarnings counts EVTX records for which golang-evtx printed
	// parse errors; each is logged once as a warning instead.
	ParserWarnings int64
	// Errors are the first 100 places of problems, e.g.
	// "file.evtx: chunk 3 (offset 0x31000): record 1234: <what>".
	Errors []string
}

func (s *Stats) addError(msg string) {
	if len(s.Errors) < maxErrors {
		s.Errors = append(s.Errors, msg)
	}
}

func (s *Stats) merge(o *Stats) {
	s.Records += o.Records
	s.Chunks += o.Chunks
	s.BadChunks += o.BadChunks
	s.BadRecords += o.BadRecords
	s.ChecksumErrors += o.ChecksumErrors
	s.NoTime += o.NoTime
	s.BadTimes += o.BadTimes
	s.ParserWarnings += o.ParserWarnings
	for _, e := range o.Errors {
		s.addError(e)
	}
}

// elem is a decoded XML element: the common form of rendered XML and EVTX
// binary XML, which the normaliser turns into an Event.
type elem struct {
	name  string // local name
	attrs []attr
	text  string // the concatenated character content
	kids  []*elem
}

type attr struct{ name, value string }

func (e *elem) child(name string) *elem {
	if e == nil {
		return nil
	}
	for _, k := range e.kids {
		if k.name == name {
			return k
		}
	}
	return nil
}

func (e *elem) attr(name string) string {
	if e == nil {
		return ""
	}
	for _, a := range e.attrs {
		if a.name == name {
			return a.value
		}
	}
	return ""
}

func (e *elem) txt() string {
	if e == nil {
		return ""
	}
	return e.text
}

func (e *elem) childText(name string) string {
	if c := e.child(name); c != nil {
		return c.text
	}
	return ""
}

// normalizer turns decoded events into ingest.Events.
type normalizer struct {
	ident *ingest.Identity
}

// normalize turns the <Event> element ev into an Event. headerTime is the
// EVTX record header time (zero for XML). ok is false when the time is
// missing altogether (the event is still returned).
func (n *normalizer) normalize(ev *elem, headerTime time.Time) (out ingest.Event, hasTime bool) {
	sys := ev.child("System")
	prov := sys.child("Provider")
	provider := strings.TrimSpace(prov.attr("Name"))
	if provider == "" {
		provider = strings.TrimSpace(prov.attr("EventSourceName"))
	}
	eidEl := sys.child("EventID")
	eidRaw := strings.TrimSpace(eidEl.txt())
	qualifiers := strings.TrimSpace(eidEl.attr("Qualifiers"))
	eid := eidRaw
	if v, err := strconv.ParseUint(eidRaw, 10, 64); err == nil {
		if v > 0xFFFF && qualifiers == "" {
			qualifiers = strconv.FormatUint(v>>16, 10)
		}
		eid = strconv.FormatUint(v&0xFFFF, 10)
	}
	levelRaw := strings.TrimSpace(sys.childText("Level"))
	channel := strings.TrimSpace(sys.childText("Channel"))
	computer := strings.TrimSpace(sys.childText("Computer"))
	recID := strings.TrimSpace(sys.childText("EventRecordID"))

	f := make(map[string]any, 16)
	f["channel"] = channel
	f["computer"] = computer
	f["provider"] = provider
	f["event_id"] = eid
	f["event_record_id"] = recID
	f["level_raw"] = levelRaw
	setNE(f, "qualifiers", qualifiers)
	setNE(f, "task", strings.TrimSpace(sys.childText("Task")))
	setNE(f, "opcode", strings.TrimSpace(sys.childText("Opcode")))
	setNE(f, "keywords", canonHex(sys.childText("Keywords")))
	exe := sys.child("Execution")
	setNE(f, "process_id", exe.attr("ProcessID"))
	setNE(f, "thread_id", exe.attr("ThreadID"))
	setNE(f, "user_sid", sys.child("Security").attr("UserID"))

	strs := eventStrings(ev, provider, f)
	t, hasTime := parseSystemTime(sys.child("TimeCreated").attr("SystemTime"))
	if !hasTime && !headerTime.IsZero() && headerTime.Year() > 1601 {
		t, hasTime = headerTime.UTC(), true
	}
	out = ingest.Event{
		ID:     "winevt:" + strings.ToLower(computer) + ":" + channel + ":" + recID,
		Time:   t,
		Node:   n.ident.Resolve(computer),
		Source: ingest.SourceWinEvt,
		Kind:   provider + "/" + eid,
		Level:  winLevel(levelRaw),
		Msg:    eventMessage(ev, provider, eid, strs),
		Fields: f,
	}
	if strings.EqualFold(provider, "nomad") && eid == "4" {
		text := ""
		if len(strs) > 0 {
			text = strs[0]
		} else if ri := ev.child("RenderingInfo"); ri != nil {
			text = ri.childText("Message")
		}
		nomadEvent(&out, text, levelRaw)
	}
	return out, hasTime
}

// eventStrings adds the EventData and UserData of ev to f and returns
// their insertion strings in order ("strings" in f).
func eventStrings(ev *elem, provider string, f map[string]any) []string {
	var strs []string
	sysInserts := systemParameterProviders[provider]
	if ed := ev.child("EventData"); ed != nil {
		unnamed := 0
		for _, d := range ed.kids {
			switch d.name {
			case "Data":
				name := d.attr("Name")
				if name == "" {
					unnamed++
					name = "data_" + strconv.Itoa(unnamed)
				} else if _, taken := f[name]; taken {
					name = "data_" + name
				}
				v := d.text
				if sysInserts {
					if text, ok := resolveInserts(v); ok { // "%%1450" in words (messages.go)
						f[name+"_insert"] = v
						v = text
					}
				}
				strs = append(strs, v)
				f[name] = v
			case "Binary":
				if t := strings.TrimSpace(d.text); t != "" {
					f["binary"] = strings.ToUpper(t)
				}
			}
		}
	}
	if ud := ev.child("UserData"); ud != nil {
		for _, k := range ud.kids {
			strs = leaves(k, f, strs)
		}
	}
	if len(strs) > 0 {
		f["strings"] = strings.Join(strs, " | ")
	}
	return strs
}

// eventMessage is the message of ev: its rendered message, else the
// provider's message template filled in, else the provider, event id and
// insertion strings.
func eventMessage(ev *elem, provider, eid string, strs []string) string {
	msg := ""
	if ri := ev.child("RenderingInfo"); ri != nil {
		msg = strings.TrimSpace(ri.childText("Message"))
	}
	if msg == "" {
		msg = formatMessage(provider, eid, strs)
	}
	if msg == "" {
		var b strings.Builder
		b.WriteString(provider)
		b.WriteString(" event ")
		b.WriteString(eid)
		if len(strs) > 0 {
			b.WriteString(": ")
			b.WriteString(strings.Join(strs, "; "))
		}
		msg = b.String()
	}
	return msg
}

// leaves adds the leaf elements under e to f (by their name) and their text
// to strs.
func leaves(e *elem, f map[string]any, strs []string) []string {
	for _, k := range e.kids {
		if len(k.kids) == 0 {
			strs = append(strs, k.text)
			name := k.name
			if _, taken := f[name]; taken {
				name = "data_" + name
			}
			f[name] = k.text
			continue
		}
		strs = leaves(k, f, strs)
	}
	return strs
}

func setNE(f map[string]any, k, v string) {
	if v != "" {
		f[k] = v
	}
}

// winLevel maps a Windows level to a normalised one.
func winLevel(raw string) string {
	switch raw {
	case "1", "2":
		return ingest.LevelError
	case "3":
		return ingest.LevelWarn
	case "5":
		return ingest.LevelDebug
	}
	return ingest.LevelInfo
}

// nomadEvent turns a nomad EventID 4 event (a hclog text line without its
// timestamp, LOG_FORMATS.md §1.4) into a nomad.log event. Node, Time and ID
// stay those of the Windows record.
func nomadEvent(ev *ingest.Event, text, levelRaw string) {
	lvl := "INFO"
	switch levelRaw {
	case "1", "2":
		lvl = "ERROR"
	case "3":
		lvl = "WARN"
	}
	text = strings.TrimRight(text, "\r\n")
	first, rest, _ := strings.Cut(text, "\n")
	first = strings.TrimRight(first, "\r")
	ev.Source = ingest.SourceNomadLog
	l, err := nomadlog.ParseLine([]byte("[" + lvl + "] " + first))
	f := make(map[string]any, len(l.Fields)+4)
	for k, v := range l.Fields {
		f[k] = v
	}
	for _, k := range []string{"channel", "computer", "provider", "event_id", "event_record_id"} {
		if _, taken := f[k]; !taken {
			f[k] = ev.Fields[k]
		}
	}
	if rest != "" {
		f["continuation"] = rest
	}
	ev.Fields = f
	if err != nil {
		ev.Kind = ""
		ev.Msg = strings.TrimSpace(first)
		return
	}
	ev.Kind = l.Logger
	ev.Msg = l.Msg
}

// parseSystemTime parses TimeCreated/@SystemTime ("2024-05-01T10:00:00.1234567Z").
func parseSystemTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		// Without a zone (some exports): read as UTC.
		if t2, err2 := time.Parse("2006-01-02T15:04:05.999999999", s); err2 == nil {
			return t2.UTC(), true
		}
		return time.Time{}, false
	}
	return t.UTC(), true
}

// canonHex renders a hex number without leading zeros ("0x0080..." →
// "0x80..."), as Windows renders Keywords; other text is kept.
func canonHex(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		if v, err := strconv.ParseUint(s[2:], 16, 64); err == nil {
			return "0x" + strconv.FormatUint(v, 16)
		}
	}
	return s
}
