// Package nomadlog reads the Nomad agent's own log: hclog text and JSON lines,
// pre-0.9 Go log lines, and all of these wrapped by journald, syslog or a log
// aggregator export. ParseLine parses one physical line, the Decoder joins
// multi-line records and turns them into ingest.Events, and the Tailer follows
// log files across rotation and truncation, with checkpoints.
//
// The formats are described in testdata/nomad/LOG_FORMATS.md of the shared
// reference material. Parsing is hand-written (no regular expressions) so that
// a line costs about a microsecond.
package nomadlog

import (
	"errors"
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Formats reported in Line.Format.
const (
	// FormatText is an hclog text line with its own timestamp.
	FormatText = "text"
	// FormatJSON is an hclog JSON line (log_json = true).
	FormatJSON = "json"
	// FormatLegacy is a pre-0.9 Go log line ("2018/03/27 16:22:51.309424 [WARN] client: ...").
	FormatLegacy = "legacy"
	// FormatSyslog is the syslog message of a text line: the agent's syslog
	// writer cut the timestamp and level ("host nomad[1]:  client: ...").
	FormatSyslog = "syslog"
	// FormatBare is an hclog text line without a timestamp ("[INFO]  client: ...").
	FormatBare = "bare"
	// FormatPanic is the first line of a Go runtime crash ("panic: ..." or
	// "fatal error: ..."); the goroutine dump that follows is joined to it by
	// the Decoder.
	FormatPanic = "panic"
)

// Line is one parsed physical log line (pure parse, no state).
type Line struct {
	// Time is the line's own time, zero when the line has none. Times are UTC.
	Time time.Time
	// Level is one of ingest.LevelTrace..LevelError ("" when unknown).
	Level string
	// Logger is the hclog logger name, e.g. "client.alloc_runner.task_runner"
	// ("" for lines without one). For legacy lines it is the prefix before
	// the first ": " ("client", "client.gc").
	Logger string
	// Msg is the message text without the fields.
	Msg string
	// Fields holds the hclog key/values. All values are strings (JSON numbers
	// and booleans are formatted as text), so one rule matches text and JSON
	// logs. Nil when the line has none.
	Fields map[string]any
	// Host is the host of a journald/syslog prefix ("" when none).
	Host string
	// Format is one of the Format* constants.
	Format string
	// Caller is the source location of log_include_location ("" when absent).
	Caller string
	// NoYear is set when Time came from a syslog stamp without a year: Time
	// then has year 0 and the Decoder fills in the year of the input.
	NoYear bool

	zone    int  // UTC offset in seconds of the line's own timestamp
	hasZone bool // the timestamp carried an offset (hclog text/JSON)
}

// Errors returned by ParseLine.
var (
	// ErrNotRecord is returned for a line that is not a log record: garbage,
	// a continuation line of a multi-line record, or a blank line.
	ErrNotRecord = errors.New("nomadlog: not a log record")
	// ErrUILine is returned for an agent UI line such as
	// "==> Newer Nomad version available: ..." (wrapped or not).
	ErrUILine = errors.New("nomadlog: agent UI line")
)

// ParseLine parses one physical line (no trailing newline). It returns an
// error for a line that is not a log record (garbage, a continuation line, a
// UI line like "==> Newer Nomad version available": ErrUILine); callers decide
// whether that line continues the previous record.
func ParseLine(line []byte) (Line, error) {
	l, cls, _ := parse(string(trimCR(line)))
	switch cls {
	case clsRecord:
		return l, nil
	case clsUI:
		return Line{}, ErrUILine
	}
	return Line{}, ErrNotRecord
}

func trimCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}

type lineClass uint8

const (
	clsOther  lineClass = iota // not a record: continuation or garbage
	clsRecord                  // a record
	clsUI                      // agent UI line ("==> ...")
)

// parse classifies and parses s. For clsOther, rest is the text of the line
// without a journald/syslog prefix (what a continuation contributes).
func parse(s string) (l Line, cls lineClass, rest string) {
	return parseAt(s, 0, 0)
}

// maxDepth bounds the recursion through wrappers (syslog → aggregator → ...).
const maxDepth = 3

func parseAt(s string, i, depth int) (l Line, cls lineClass, rest string) {
	i = skipBlank(s, i)
	if i >= len(s) {
		return l, clsOther, s
	}
	switch c := s[i]; {
	case c >= '0' && c <= '9':
		return parseDigitStart(s, i, depth)
	case c == '[':
		if j, ok := skipMonotonic(s, i); ok {
			if depth >= maxDepth {
				return l, clsOther, s
			}
			return parseSyslogTag(s, j, time.Time{}, false, depth)
		}
		return parseBracket(s, i, time.Time{}, FormatBare)
	case c == '{':
		if l, ok := parseJSON(s[i:]); ok {
			return l, clsRecord, ""
		}
		return l, clsOther, s
	case c >= 'A' && c <= 'Z':
		if t, j, ok := parseSyslogStamp(s, i); ok && depth < maxDepth {
			return parseSyslogTag(s, j, t, true, depth)
		}
	case c == '=':
		if strings.HasPrefix(s[i:], "==> ") {
			return l, clsUI, s
		}
	case c == 'p' || c == 'f':
		if l, ok := parsePanic(s, i); ok {
			return l, clsRecord, ""
		}
	}
	return l, clsOther, s
}

func skipBlank(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

// parseDigitStart handles lines starting with a digit: hclog text with a
// timestamp, legacy Go log lines, journalctl -o short-iso prefixes and the
// aggregator export with a "2026-09-12 @ 16:32:43.468 UTC" column.
func parseDigitStart(s string, i, depth int) (l Line, cls lineClass, rest string) {
	if t, n, ok := parseISO(s, i); ok {
		j := i + n
		if j+1 < len(s) && s[j] == ' ' && s[j+1] == '[' {
			l, cls, rest := parseBracket(s, j+1, t, FormatText)
			l.zone, l.hasZone = isoZone(s, i, n)
			return l, cls, rest
		}
		if j < len(s) && s[j] == ' ' && depth < maxDepth {
			// short-iso syslog prefix: "2019-04-24T14:51:48+0200 host nomad[1]: ..."
			return parseSyslogTag(s, j+1, t, false, depth)
		}
		return l, clsOther, s
	}
	if t, n, ok := parseLegacyTime(s, i); ok {
		j := i + n
		if j+1 < len(s) && s[j] == ' ' && s[j+1] == '[' {
			return parseBracket(s, j+1, t, FormatLegacy)
		}
		return l, clsOther, s
	}
	if t, n, ok := parseAggregatorTime(s, i); ok && depth < maxDepth {
		// Columns are separated by tabs; the hclog line is one of them.
		for j := i + n; j < len(s); j++ {
			if s[j] != '\t' {
				continue
			}
			inner, c, _ := parseAt(s, j+1, depth+1)
			if c == clsRecord {
				if inner.Time.IsZero() {
					inner.Time = t
				}
				return inner, clsRecord, ""
			}
			if c == clsUI {
				return l, clsUI, s
			}
		}
	}
	return l, clsOther, s
}

// parseSyslogTag parses "host tag[pid]: " at s[i:] and the message after it.
func parseSyslogTag(s string, i int, t time.Time, noYear bool, depth int) (l Line, cls lineClass, rest string) {
	// host
	h := i
	for i < len(s) && s[i] != ' ' && s[i] != '\t' {
		i++
	}
	if i == h || i >= len(s) {
		return l, clsOther, s
	}
	host := s[h:i]
	i++
	// tag, up to ": " (the tag has no spaces; "nomad[3322]", "sh[11424]", "nomad")
	g := i
	for i < len(s) && s[i] != ':' && s[i] != ' ' {
		i++
	}
	if i == g || i >= len(s) || s[i] != ':' {
		return l, clsOther, s
	}
	i++
	if i < len(s) && s[i] == ' ' {
		i++
	}
	body := s[i:]
	// Count the spaces before the body: 1 = syslog INFO/WARN, 4 = UI prefix.
	spaces := 0
	for i+spaces < len(s) && s[i+spaces] == ' ' {
		spaces++
	}
	inner, c, _ := parseAt(s, i, depth+1)
	switch c {
	case clsUI:
		return l, clsUI, body
	case clsRecord:
		inner.Host = host
		if inner.Time.IsZero() {
			inner.Time, inner.NoYear = t, noYear
		}
		return inner, clsRecord, ""
	}
	// A syslog message of a text line: "[ ]logger: message: k=v".
	if spaces <= 1 {
		if inner, ok := parseSyslogMessage(s, i+spaces, spaces == 1); ok {
			inner.Host = host
			inner.Time, inner.NoYear = t, noYear
			return inner, clsRecord, ""
		}
	}
	return l, clsOther, body
}

// parseSyslogMessage parses the syslog message of a text line: the logger,
// the message and the fields, without time or level. The level is inferred
// from the leading-space rule of LOG_FORMATS §1.1: a leading space means INFO
// or WARN (reported as info); none means ERROR, DEBUG or TRACE, reported as
// error when the message or an "error" field says so and debug otherwise.
func parseSyslogMessage(s string, i int, leadingSpace bool) (l Line, ok bool) {
	j := scanLogger(s, i)
	if j == i || j >= len(s) || s[j] != ':' || (j+1 < len(s) && s[j+1] != ' ') {
		return l, false
	}
	l.Logger = s[i:j]
	l.Format = FormatSyslog
	l.Msg, l.Fields = splitMsgFields(s, min(j+2, len(s)))
	switch {
	case leadingSpace:
		l.Level = ingest.LevelInfo
	case l.Fields["error"] != nil || containsFold(l.Msg, "fail") || containsFold(l.Msg, "error"):
		l.Level = ingest.LevelError
	default:
		l.Level = ingest.LevelDebug
	}
	return l, true
}

// containsFold reports whether s contains the lower-case ASCII word w,
// ignoring ASCII case.
func containsFold(s, w string) bool {
	for i := 0; i+len(w) <= len(s); i++ {
		k := 0
		for k < len(w) {
			c := s[i+k]
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != w[k] {
				break
			}
			k++
		}
		if k == len(w) {
			return true
		}
	}
	return false
}

// parseBracket parses "[LEVEL] [file.go:12:] logger: message: k=v" at s[i:]
// (s[i] == '[').
func parseBracket(s string, i int, t time.Time, format string) (l Line, cls lineClass, rest string) {
	end := -1
	for k := i + 1; k < len(s) && k <= i+9; k++ {
		if s[k] == ']' {
			end = k
			break
		}
	}
	if end < 0 {
		return l, clsOther, s
	}
	level, ok := bracketLevel(s[i+1 : end])
	if !ok {
		return l, clsOther, s
	}
	l.Time, l.Level, l.Format = t, level, format
	j := end + 1
	for j < len(s) && s[j] == ' ' {
		j++
	}
	// log_include_location: "file.go:123: " before the logger.
	if k := strings.IndexByte(s[j:], ' '); k > 1 && s[j+k-1] == ':' && strings.Contains(s[j:j+k], ".go:") {
		l.Caller = s[j : j+k-1]
		j += k + 1
	}
	if k := scanLogger(s, j); k > j && k < len(s) && s[k] == ':' && (k+1 == len(s) || s[k+1] == ' ') {
		l.Logger = s[j:k]
		j = min(k+2, len(s))
	}
	if format == FormatLegacy {
		l.Msg = s[j:]
	} else {
		l.Msg, l.Fields = splitMsgFields(s, j)
	}
	return l, clsRecord, ""
}

// bracketLevel maps the text inside a level bracket to a normalised level.
func bracketLevel(b string) (string, bool) {
	// trim spaces: "INFO ", "WARN ", " INFO"
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	for len(b) > 0 && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	switch b {
	case "TRACE":
		return ingest.LevelTrace, true
	case "DEBUG":
		return ingest.LevelDebug, true
	case "INFO":
		return ingest.LevelInfo, true
	case "WARN", "WARNING":
		return ingest.LevelWarn, true
	case "ERROR", "ERR":
		return ingest.LevelError, true
	case "?????":
		return "", true
	}
	return "", false
}

// normLevel maps a JSON @level to a normalised level.
func normLevel(v string) string {
	switch v {
	case "trace", "TRACE":
		return ingest.LevelTrace
	case "debug", "DEBUG":
		return ingest.LevelDebug
	case "info", "INFO":
		return ingest.LevelInfo
	case "warn", "warning", "WARN", "WARNING":
		return ingest.LevelWarn
	case "error", "err", "ERROR", "ERR":
		return ingest.LevelError
	}
	return ""
}

// scanLogger returns the end of a logger name starting at i (i when none).
func scanLogger(s string, i int) int {
	j := i
	for j < len(s) {
		c := s[j]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-' {
			j++
			continue
		}
		break
	}
	return j
}

func parsePanic(s string, i int) (l Line, ok bool) {
	r := s[i:]
	if !strings.HasPrefix(r, "panic: ") && !strings.HasPrefix(r, "fatal error: ") {
		return l, false
	}
	l.Level, l.Format, l.Msg = ingest.LevelError, FormatPanic, r
	return l, true
}

// skipMonotonic skips a kernel-style "[  115.487254] " boot-time prefix.
func skipMonotonic(s string, i int) (int, bool) {
	j := i + 1
	for j < len(s) && s[j] == ' ' {
		j++
	}
	d := j
	for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.') {
		j++
	}
	if j == d || j+1 >= len(s) || s[j] != ']' || s[j+1] != ' ' {
		return 0, false
	}
	return j + 2, true
}

// maxFieldTries bounds how many ": " candidates are tried for the start of
// the fields, so that a pathological line stays linear.
const maxFieldTries = 16

// splitMsgFields splits "message: k=v k2=v2" starting at s[i:]. The fields
// start after the last ": " that is followed by a valid key=value sequence
// running to the end of the line.
func splitMsgFields(s string, i int) (string, map[string]any) {
	region := s[i:]
	end := len(region)
	var kv kvBuf
	for tries := 0; tries < maxFieldTries; {
		j := strings.LastIndexByte(region[:end], ':')
		if j < 0 {
			break
		}
		end = j
		if j+1 >= len(region) || region[j+1] != ' ' {
			continue
		}
		tries++
		kv.n = 0
		if n := scanKV(s, i+j+2, &kv); n > 0 {
			f := make(map[string]any, n)
			if n <= len(kv.pairs) {
				for _, p := range kv.pairs[:n] {
					f[p.k] = p.v
				}
			} else {
				kv.m = f
				kv.n = 0
				scanKV(s, i+j+2, &kv)
			}
			return region[:j], f
		}
	}
	return region, nil
}

type kvPair struct{ k, v string }

// kvBuf collects the pairs of scanKV: the first ones in a fixed array (no
// allocation for a candidate that turns out not to be the fields), or all of
// them in m when m is set.
type kvBuf struct {
	pairs [16]kvPair
	n     int
	m     map[string]any
}

func (b *kvBuf) add(k, v string) {
	if b.m != nil {
		b.m[k] = v
		return
	}
	if b.n < len(b.pairs) {
		b.pairs[b.n] = kvPair{k, v}
	}
	b.n++
}

// scanKV scans an hclog key/value sequence from s[p:] to the end of s. It
// returns the number of pairs, or 0 when the text is not such a sequence.
// With f != nil it stores the pairs in f.
//
// Keys have no '"' or '='; the first key has no space (later ones may:
// "denied range"). Values are "quoted" (\" unescaped; hclog does not escape
// backslashes, so \\ is kept as printed, see the Windows paths of gh16922),
// [slices] or bare words. A quoted value whose closing quote is missing
// (a line truncated by journald) runs to the end of the line, and a dangling
// key fragment at the end of a truncated line is dropped.
func scanKV(s string, p int, f *kvBuf) int {
	n := 0
	for {
		k0 := p
		spaced := false
		for p < len(s) && s[p] != '=' {
			switch s[p] {
			case '"':
				return 0
			case ' ':
				if n == 0 || p == k0 {
					return 0
				}
				spaced = true
			case ':':
				if p+1 < len(s) && s[p+1] == ' ' {
					return 0
				}
			}
			p++
		}
		if p == len(s) {
			// A key fragment without '=' at the end of a truncated line.
			if n > 0 && !spaced && p > k0 {
				return n
			}
			return 0
		}
		if p == k0 || s[p-1] == ' ' {
			return 0
		}
		key := s[k0:p]
		p++ // '='
		v0 := p
		var val string
		if p < len(s) && s[p] == '"' {
			p++
			closed := false
			esc := false
			for p < len(s) {
				c := s[p]
				if c == '\\' && p+1 < len(s) && s[p+1] == '"' {
					// hclog escapes quotes but not backslashes: a
					// backslash before a quote always escapes it.
					esc = true
					p += 2
					continue
				}
				if c == '"' {
					if p+1 == len(s) || s[p+1] == ' ' {
						closed = true
						p++
						break
					}
					// An unescaped quote inside the value (pre-1.0 hclog,
					// e.g. JSON in args="[... {"LogFile":...}]").
				}
				p++
			}
			if closed {
				val = s[v0+1 : p-1]
			} else if p > v0+1 && s[p-1] == '"' && s[p-2] == '\\' {
				// The value ends in a backslash ("C:\dir\"): hclog does not
				// escape it, so the last quote closes the value.
				val = s[v0+1 : p-1]
			} else {
				val = s[v0+1 : p] // truncated
			}
			if f != nil && esc {
				val = strings.ReplaceAll(val, `\"`, `"`)
			}
		} else {
			if p < len(s) && s[p] == '[' {
				p = skipSlice(s, p)
			}
			for p < len(s) && s[p] != ' ' {
				if s[p] == '"' {
					return 0
				}
				p++
			}
			val = s[v0:p]
		}
		n++
		if f != nil {
			f.add(key, val)
		}
		if p >= len(s) {
			return n
		}
		// s[p] == ' '
		p++
		if p == len(s) {
			return n
		}
	}
}

// skipSlice returns the index after the ']' that closes the slice at s[p]
// (strings inside are skipped), or len(s) when it is not closed.
func skipSlice(s string, p int) int {
	depth := 0
	for p < len(s) {
		switch s[p] {
		case '[':
			depth++
		case ']':
			depth--
			if depth == 0 {
				return p + 1
			}
		case '"':
			p++
			for p < len(s) && s[p] != '"' {
				if s[p] == '\\' {
					p++
				}
				p++
			}
		}
		p++
	}
	return len(s)
}

// ---- time ----

func digits(s string, i, n int) (int, bool) {
	if i+n > len(s) {
		return 0, false
	}
	v := 0
	for k := i; k < i+n; k++ {
		c := s[k]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, true
}

// fraction parses ".123456" at s[i:]; it returns nanoseconds and the length
// consumed (0 when there is no fraction).
func fraction(s string, i int) (int, int) {
	if i >= len(s) || s[i] != '.' {
		return 0, 0
	}
	j := i + 1
	ns, scale := 0, 100000000
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		ns += int(s[j]-'0') * scale
		scale /= 10
		j++
	}
	if j == i+1 {
		return 0, 0
	}
	return ns, j - i
}

// daysFromCivil returns the days since 1970-01-01 of a proleptic Gregorian date.
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era = (y - 399) / 400
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
}

func mkTime(y, mo, d, h, mi, sec, ns, offset int) (time.Time, bool) {
	if mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 {
		return time.Time{}, false
	}
	u := daysFromCivil(y, mo, d)*86400 + int64(h*3600+mi*60+sec) - int64(offset)
	return time.Unix(u, int64(ns)).UTC(), true
}

// stamp is a date and time of day as read, before its zone.
type stamp struct{ y, mo, d, h, mi, sec, ns int }

// readStamp reads the digits of a date at s[i:] ("2006-01-02", any
// separators) and of a time of day at s[hour:] ("15:04:05[.frac]"), and
// returns the offset after it.
func readStamp(s string, i, hour int) (stamp, int, bool) {
	var t stamp
	var ok [6]bool
	t.y, ok[0] = digits(s, i, 4)
	t.mo, ok[1] = digits(s, i+5, 2)
	t.d, ok[2] = digits(s, i+8, 2)
	t.h, ok[3] = digits(s, hour, 2)
	t.mi, ok[4] = digits(s, hour+3, 2)
	t.sec, ok[5] = digits(s, hour+6, 2)
	if ok != [6]bool{true, true, true, true, true, true} {
		return t, 0, false
	}
	ns, n := fraction(s, hour+8)
	t.ns = ns
	return t, hour + 8 + n, true
}

// time is the stamp at the UTC offset (seconds); false for an impossible
// date or time.
func (t stamp) time(offset int) (time.Time, bool) {
	return mkTime(t.y, t.mo, t.d, t.h, t.mi, t.sec, t.ns, offset)
}

// parseISO parses "2006-01-02T15:04:05[.frac](Z|±hhmm|±hh:mm)" at s[i:].
func parseISO(s string, i int) (time.Time, int, bool) {
	if i+19 > len(s) || s[i+4] != '-' || s[i+7] != '-' || s[i+10] != 'T' || s[i+13] != ':' || s[i+16] != ':' {
		return time.Time{}, 0, false
	}
	st, j, ok := readStamp(s, i, i+11)
	if !ok {
		return time.Time{}, 0, false
	}
	off := 0
	switch {
	case j < len(s) && s[j] == 'Z':
		j++
	case j < len(s) && (s[j] == '+' || s[j] == '-'):
		oh, ok := digits(s, j+1, 2)
		if !ok {
			return time.Time{}, 0, false
		}
		k := j + 3
		if k < len(s) && s[k] == ':' {
			k++
		}
		om, ok := digits(s, k, 2)
		if !ok {
			return time.Time{}, 0, false
		}
		off = oh*3600 + om*60
		if s[j] == '-' {
			off = -off
		}
		j = k + 2
	}
	t, ok := st.time(off)
	return t, j - i, ok
}

// isoZone returns the UTC offset of the timestamp parseISO read at s[i:i+n].
func isoZone(s string, i, n int) (int, bool) {
	z := s[i : i+n]
	switch c := z[len(z)-1]; {
	case c == 'Z':
		return 0, true
	case len(z) < 24:
		return 0, false
	}
	k := len(z) - 5
	if z[k] != '+' && z[k] != '-' {
		k-- // "+02:00"
	}
	if k < 19 || (z[k] != '+' && z[k] != '-') {
		return 0, false
	}
	oh, _ := digits(z, k+1, 2)
	m := k + 3
	if z[m] == ':' {
		m++
	}
	om, _ := digits(z, m, 2)
	off := oh*3600 + om*60
	if z[k] == '-' {
		off = -off
	}
	return off, true
}

// parseLegacyTime parses Go's log "2006/01/02 15:04:05[.000000]" at s[i:]
// (local time of the agent, unknown here: read as UTC).
func parseLegacyTime(s string, i int) (time.Time, int, bool) {
	if i+19 > len(s) || s[i+4] != '/' || s[i+7] != '/' || s[i+10] != ' ' || s[i+13] != ':' || s[i+16] != ':' {
		return time.Time{}, 0, false
	}
	st, j, ok := readStamp(s, i, i+11)
	if !ok {
		return time.Time{}, 0, false
	}
	t, ok := st.time(0)
	return t, j - i, ok
}

// parseAggregatorTime parses "2026-09-12 @ 16:32:43.468 UTC" at s[i:].
func parseAggregatorTime(s string, i int) (time.Time, int, bool) {
	if i+25 > len(s) || s[i+4] != '-' || s[i+7] != '-' || s[i+10:i+13] != " @ " || s[i+15] != ':' || s[i+18] != ':' {
		return time.Time{}, 0, false
	}
	st, j, ok := readStamp(s, i, i+13)
	if !ok {
		return time.Time{}, 0, false
	}
	if strings.HasPrefix(s[j:], " UTC") {
		j += 4
	}
	t, ok := st.time(0)
	return t, j - i, ok
}

var months = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// parseSyslogStamp parses "Jan _2 15:04:05 " at s[i:]; the year is 0.
func parseSyslogStamp(s string, i int) (time.Time, int, bool) {
	if i+16 > len(s) || s[i+3] != ' ' {
		return time.Time{}, 0, false
	}
	mo := 0
	for k, m := range months {
		if s[i:i+3] == m {
			mo = k + 1
			break
		}
	}
	if mo == 0 {
		return time.Time{}, 0, false
	}
	j := i + 4
	var d int
	var ok bool
	if s[j] == ' ' {
		d, ok = digits(s, j+1, 1)
	} else {
		d, ok = digits(s, j, 2)
	}
	if !ok || s[j+2] != ' ' || s[j+5] != ':' || s[j+8] != ':' {
		return time.Time{}, 0, false
	}
	h, ok1 := digits(s, j+3, 2)
	mi, ok2 := digits(s, j+6, 2)
	sec, ok3 := digits(s, j+9, 2)
	if !(ok1 && ok2 && ok3) {
		return time.Time{}, 0, false
	}
	k := j + 11
	ns, n := fraction(s, k) // journalctl -o short-precise
	k += n
	if k >= len(s) || s[k] != ' ' {
		return time.Time{}, 0, false
	}
	t, ok := mkTime(0, mo, d, h, mi, sec, ns, 0)
	return t, k + 1 - i, ok
}

// withYear moves a year-0 syslog time into the year of ref, or the next
// year when that puts it more than half a year before ref (Dec → Jan).
func withYear(t, ref time.Time) time.Time {
	y := ref.Year()
	r := time.Date(y, t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
	if ref.Sub(r) > 183*24*time.Hour {
		r = r.AddDate(1, 0, 0)
	}
	return r
}
