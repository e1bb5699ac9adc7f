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
// values; the first is kept). It is a hand-written scanner of the flat
// object journalctl prints: the fields klaxon does not use are skipped
// without being decoded (encoding/json took about 25 µs per entry).
func parseJSON(line []byte) (Entry, error) {
	var e Entry
	p := skipWS(line, 0)
	if p >= len(line) || line[p] != '{' {
		return e, errNotEntry
	}
	p = skipWS(line, p+1)
	if p < len(line) && line[p] == '}' {
		p++
	} else {
		for {
			key, np, err := scanString(line, p)
			if err != nil {
				return Entry{}, err
			}
			p = skipWS(line, np)
			if p >= len(line) || line[p] != ':' {
				return Entry{}, errSyntax
			}
			p = skipWS(line, p+1)
			if wantedField(key) {
				val, ok, np, err := fieldValue(line, p)
				if err != nil {
					return Entry{}, fmt.Errorf("field %s: %w", key, err)
				}
				if ok {
					e.set(string(key), val)
				}
				p = np
			} else if p, err = skipValue(line, p, 0); err != nil {
				return Entry{}, err
			}
			p = skipWS(line, p)
			if p >= len(line) {
				return Entry{}, errSyntax
			}
			if line[p] == '}' {
				p++
				break
			}
			if line[p] != ',' {
				return Entry{}, errSyntax
			}
			p = skipWS(line, p+1)
		}
	}
	if skipWS(line, p) != len(line) {
		return Entry{}, errSyntax
	}
	if e.Cursor == "" && e.Realtime.IsZero() && !e.HasMessage {
		return Entry{}, errNotEntry
	}
	return e, nil
}

// errSyntax is returned for output that is not JSON.
var errSyntax = errors.New("malformed JSON")

func wantedField(k []byte) bool {
	switch string(k) {
	case "MESSAGE", "__CURSOR", "__REALTIME_TIMESTAMP", "__MONOTONIC_TIMESTAMP",
		"_BOOT_ID", "_HOSTNAME", "_SYSTEMD_UNIT", "SYSLOG_IDENTIFIER", "_PID":
		return true
	}
	return false
}

func skipWS(b []byte, p int) int {
	for p < len(b) && (b[p] == ' ' || b[p] == '\t' || b[p] == '\n' || b[p] == '\r') {
		p++
	}
	return p
}

// scanString returns the string at b[p] (decoded) and the position after it.
// Strings without escapes are returned as a slice of b.
func scanString(b []byte, p int) ([]byte, int, error) {
	if p >= len(b) || b[p] != '"' {
		return nil, p, errSyntax
	}
	escaped := false
	for i := p + 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			escaped = true
			i++
		case '"':
			if !escaped {
				return b[p+1 : i], i + 1, nil
			}
			var s string
			if err := json.Unmarshal(b[p:i+1], &s); err != nil {
				return nil, p, err
			}
			return []byte(s), i + 1, nil
		}
	}
	return nil, p, errSyntax
}

// fieldValue decodes the field value at b[p]; ok is false for null.
func fieldValue(b []byte, p int) (val []byte, ok bool, next int, err error) {
	if p >= len(b) {
		return nil, false, p, errSyntax
	}
	switch b[p] {
	case '"':
		s, np, err := scanString(b, p)
		return s, err == nil, np, err
	case 'n':
		if bytes.HasPrefix(b[p:], []byte("null")) {
			return nil, false, p + 4, nil
		}
	case '[':
		p = skipWS(b, p+1)
		if p < len(b) && b[p] == ']' {
			return []byte{}, true, p + 1, nil
		}
		if p < len(b) && (b[p] == '"' || b[p] == '[' || b[p] == 'n') {
			// Several values: the first; the others are skipped.
			val, ok, np, err := fieldValue(b, p)
			if err != nil {
				return nil, false, p, err
			}
			for {
				np = skipWS(b, np)
				if np >= len(b) {
					return nil, false, np, errSyntax
				}
				if b[np] == ']' {
					return val, ok, np + 1, nil
				}
				if b[np] != ',' {
					return nil, false, np, errSyntax
				}
				if np, err = skipValue(b, skipWS(b, np+1), 1); err != nil {
					return nil, false, np, err
				}
			}
		}
		var out []byte
		for {
			n, q := 0, p
			for q < len(b) && b[q] >= '0' && b[q] <= '9' && n <= 255 {
				n = n*10 + int(b[q]-'0')
				q++
			}
			if q == p || n > 255 {
				return nil, false, p, errors.New("byte array: not a byte value")
			}
			out = append(out, byte(n))
			p = skipWS(b, q)
			if p >= len(b) {
				return nil, false, p, errSyntax
			}
			if b[p] == ']' {
				return out, true, p + 1, nil
			}
			if b[p] != ',' {
				return nil, false, p, errSyntax
			}
			p = skipWS(b, p+1)
		}
	}
	return nil, false, p, fmt.Errorf("unexpected value %.20q", b[p:])
}

// skipValue returns the position after the JSON value at b[p].
func skipValue(b []byte, p, depth int) (int, error) {
	if p >= len(b) || depth > 64 {
		return p, errSyntax
	}
	switch c := b[p]; {
	case c == '"':
		for i := p + 1; i < len(b); i++ {
			switch b[i] {
			case '\\':
				i++
			case '"':
				return i + 1, nil
			}
		}
		return p, errSyntax
	case c == '[' || c == '{':
		end := byte(']')
		if c == '{' {
			end = '}'
		}
		p = skipWS(b, p+1)
		if p < len(b) && b[p] == end {
			return p + 1, nil
		}
		for {
			var err error
			if c == '{' {
				if p, err = skipValue(b, p, depth+1); err != nil { // the key
					return p, err
				}
				p = skipWS(b, p)
				if p >= len(b) || b[p] != ':' {
					return p, errSyntax
				}
				p = skipWS(b, p+1)
			}
			if p, err = skipValue(b, p, depth+1); err != nil {
				return p, err
			}
			p = skipWS(b, p)
			if p >= len(b) {
				return p, errSyntax
			}
			if b[p] == end {
				return p + 1, nil
			}
			if b[p] != ',' {
				return p, errSyntax
			}
			p = skipWS(b, p+1)
		}
	default: // number, true, false, null
		q := p
		for q < len(b) && (b[q] == '-' || b[q] == '+' || b[q] == '.' || b[q] >= '0' && b[q] <= '9' || b[q] >= 'a' && b[q] <= 'z' || b[q] == 'E') {
			q++
		}
		if q == p {
			return p, errSyntax
		}
		return q, nil
	}
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
