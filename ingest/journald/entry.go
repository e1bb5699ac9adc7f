package journald

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Input formats Detect recognises.
const (
	// FormatJournal is a binary journal file (magic "LPKSHHRH"), read
	// through journalctl --file.
	FormatJournal = "journal"
	// FormatExport is the journal export format (journalctl -o export,
	// systemd-journal-remote's input).
	FormatExport = "export"
	// FormatJSON is journalctl -o json: one JSON object per line.
	FormatJSON = "json"
)

// journalMagic starts every journal file.
const journalMagic = "LPKSHHRH"

// Entry is one journal record: the fields klaxon uses.
type Entry struct {
	// Cursor is __CURSOR ("" when the input has none).
	Cursor string
	// Realtime is __REALTIME_TIMESTAMP (zero when absent).
	Realtime time.Time
	// Monotonic is __MONOTONIC_TIMESTAMP as written (microseconds).
	Monotonic string
	// BootID is _BOOT_ID.
	BootID string
	// Hostname is _HOSTNAME.
	Hostname string
	// Unit is _SYSTEMD_UNIT.
	Unit string
	// Identifier is SYSLOG_IDENTIFIER.
	Identifier string
	// PID is _PID.
	PID string
	// Message is MESSAGE (the first value when the entry has several).
	Message []byte
	// HasMessage is false when the entry has no MESSAGE, or journalctl
	// left it out (a field over 4096 bytes without --all prints as null).
	HasMessage bool
}

// outputFields are the fields journalctl is asked for; -o json and -o
// export add __CURSOR, __REALTIME_TIMESTAMP, __MONOTONIC_TIMESTAMP and
// _BOOT_ID themselves.
const outputFields = "MESSAGE,_HOSTNAME,_SYSTEMD_UNIT,SYSLOG_IDENTIFIER,_PID"

// set stores one field of an entry (the first value of a repeated field).
func (e *Entry) set(key string, val []byte) {
	switch key {
	case "MESSAGE":
		if !e.HasMessage {
			e.Message = append([]byte(nil), val...)
			e.HasMessage = true
		}
	case "__CURSOR":
		setOnce(&e.Cursor, val)
	case "__REALTIME_TIMESTAMP":
		if e.Realtime.IsZero() {
			if us, err := strconv.ParseInt(string(val), 10, 64); err == nil && us > 0 {
				e.Realtime = time.UnixMicro(us).UTC()
			}
		}
	case "__MONOTONIC_TIMESTAMP":
		setOnce(&e.Monotonic, val)
	case "_BOOT_ID":
		setOnce(&e.BootID, val)
	case "_HOSTNAME":
		setOnce(&e.Hostname, val)
	case "_SYSTEMD_UNIT":
		setOnce(&e.Unit, val)
	case "SYSLOG_IDENTIFIER":
		setOnce(&e.Identifier, val)
	case "_PID":
		setOnce(&e.PID, val)
	}
}

func setOnce(dst *string, val []byte) {
	if *dst == "" {
		*dst = string(val)
	}
}

// errNotEntry is returned for a line of journalctl -o json output that is
// not an entry object.
var errNotEntry = errors.New("not a journal entry")

// parseJSON decodes one line of journalctl -o json. Field values are
// strings, null (a field journalctl left out), arrays of byte values
// (binary or non-UTF-8 data) or arrays of those (a field with several
// values; the first is kept).
func parseJSON(line []byte) (Entry, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil {
		return Entry{}, err
	}
	if raw == nil {
		return Entry{}, errNotEntry
	}
	var e Entry
	for k, v := range raw {
		switch k {
		case "MESSAGE", "__CURSOR", "__REALTIME_TIMESTAMP", "__MONOTONIC_TIMESTAMP",
			"_BOOT_ID", "_HOSTNAME", "_SYSTEMD_UNIT", "SYSLOG_IDENTIFIER", "_PID":
		default:
			continue
		}
		val, ok, err := jsonFieldValue(v)
		if err != nil {
			return Entry{}, fmt.Errorf("field %s: %w", k, err)
		}
		if ok {
			e.set(k, val)
		}
	}
	if e.Cursor == "" && e.Realtime.IsZero() && !e.HasMessage {
		return Entry{}, errNotEntry
	}
	return e, nil
}

// jsonFieldValue decodes one field value of journalctl's JSON; ok is false
// for null.
func jsonFieldValue(v json.RawMessage) (val []byte, ok bool, err error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return nil, false, errNotEntry
	}
	switch v[0] {
	case 'n':
		return nil, false, nil
	case '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, false, err
		}
		return []byte(s), true, nil
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(v, &items); err != nil {
			return nil, false, err
		}
		if len(items) == 0 {
			return []byte{}, true, nil
		}
		if t := bytes.TrimSpace(items[0]); len(t) > 0 && (t[0] == '"' || t[0] == '[' || t[0] == 'n') {
			return jsonFieldValue(items[0]) // several values: the first
		}
		var b []byte
		for _, it := range items {
			n, err := strconv.ParseUint(string(bytes.TrimSpace(it)), 10, 8)
			if err != nil {
				return nil, false, fmt.Errorf("byte array: %w", err)
			}
			b = append(b, byte(n))
		}
		return b, true, nil
	}
	return nil, false, fmt.Errorf("unexpected value %.20q", v)
}

// exportReader reads the journal export format: "KEY=value\n" for text
// fields, "KEY\n" + 64-bit little-endian length + data + "\n" for binary
// ones, entries separated by an empty line.
type exportReader struct {
	br  *bufio.Reader
	max int // largest field accepted
	// skipped counts fields over max (their entry is kept without them).
	skipped int64
}

func newExportReader(r io.Reader, max int) *exportReader {
	return &exportReader{br: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next entry; io.EOF at the end.
func (x *exportReader) next() (Entry, error) {
	var e Entry
	fields := 0
	for {
		line, cut, err := x.readLine()
		if cut {
			x.skipped++
			fields++
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) && fields > 0 {
				return e, nil // the last entry without its empty line
			}
			return e, err
		}
		if len(line) == 0 {
			if fields > 0 {
				return e, nil
			}
			continue
		}
		fields++
		if i := bytes.IndexByte(line, '='); i >= 0 {
			e.set(string(line[:i]), line[i+1:])
			continue
		}
		key := string(line)
		var n uint64
		if err := binary.Read(x.br, binary.LittleEndian, &n); err != nil {
			return e, fmt.Errorf("export: field %s: length: %w", key, unexpected(err))
		}
		if n > uint64(x.max) {
			if _, err := x.br.Discard(int(min(n, 1<<40))); err != nil {
				return e, fmt.Errorf("export: field %s: %w", key, unexpected(err))
			}
			x.skipped++
		} else {
			val := make([]byte, n)
			if _, err := io.ReadFull(x.br, val); err != nil {
				return e, fmt.Errorf("export: field %s: %w", key, unexpected(err))
			}
			e.set(key, val)
		}
		if c, err := x.br.ReadByte(); err != nil || c != '\n' {
			return e, fmt.Errorf("export: field %s: no newline after the binary value", key)
		}
	}
}

// readLine reads one text line without its newline; cut is set (and line
// nil) for a line longer than max+64 bytes, which is skipped.
func (x *exportReader) readLine() (line []byte, cut bool, err error) {
	var long []byte
	for {
		frag, err := x.br.ReadSlice('\n')
		switch {
		case err == nil:
			frag = frag[:len(frag)-1]
			switch {
			case cut || len(long)+len(frag) > x.max+64:
				return nil, true, nil
			case long == nil:
				return frag, false, nil
			}
			return append(long, frag...), false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			if !cut && len(long)+len(frag) <= x.max+64 {
				long = append(long, frag...)
			} else {
				cut, long = true, nil
			}
		case errors.Is(err, io.EOF) && (len(frag) > 0 || long != nil || cut):
			if cut || len(long)+len(frag) > x.max+64 {
				return nil, true, nil
			}
			return append(long, frag...), false, nil
		default:
			return nil, false, err
		}
	}
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Detect tells the format of an input from its first bytes: FormatJournal,
// FormatExport, FormatJSON, or "" when it is none of them.
func Detect(head []byte) string {
	if bytes.HasPrefix(head, []byte(journalMagic)) {
		return FormatJournal
	}
	first := head
	if i := bytes.IndexByte(head, '\n'); i >= 0 {
		first = head[:i]
	}
	first = bytes.TrimSpace(first)
	if len(first) > 0 && first[0] == '{' {
		if e, err := parseJSON(first); err == nil && (e.Cursor != "" || !e.Realtime.IsZero()) {
			return FormatJSON
		}
		return ""
	}
	if i := bytes.IndexByte(first, '='); i > 0 && isFieldName(string(first[:i])) {
		for _, f := range []string{"__CURSOR=", "__REALTIME_TIMESTAMP="} {
			if bytes.HasPrefix(head, []byte(f)) || bytes.Contains(head, []byte("\n"+f)) {
				return FormatExport
			}
		}
	}
	return ""
}

// isFieldName reports whether s is a journal field name: upper-case
// letters, digits and underscores, not starting with a digit.
func isFieldName(s string) bool {
	if s == "" || len(s) > 64 || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_')
	}) < 0
}
