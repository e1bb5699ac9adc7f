package nomadlog

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// parseJSON decodes one hclog JSON line (a flat object; nested values are
// kept as compact JSON text). A line cut short (journald, a crash) keeps the
// pairs read so far. It is a record only when it has @message or @level,
// which tells it apart from other NDJSON (the event stream).
func parseJSON(s string) (l Line, ok bool) {
	p := 1 // after '{'
	seen := false
	for {
		p = skipWS(s, p)
		if p >= len(s) {
			break
		}
		if s[p] == '}' {
			break
		}
		if s[p] == ',' {
			p++
			continue
		}
		key, q, good := jsonString(s, p)
		if !good {
			break
		}
		p = skipWS(s, q)
		if p >= len(s) || s[p] != ':' {
			break
		}
		p = skipWS(s, p+1)
		val, q, good := jsonValue(s, p)
		if !good {
			break
		}
		p = q
		switch key {
		case "@level":
			l.Level = normLevel(val)
			seen = true
		case "@message":
			l.Msg = val
			seen = true
		case "@module":
			l.Logger = val
		case "@timestamp":
			if t, n, ok := parseISO(val, 0); ok && n == len(val) {
				l.Time = t
				l.zone, l.hasZone = isoZone(val, 0, n)
			} else {
				l.setField(key, val)
			}
		case "@caller":
			l.Caller = val
		default:
			l.setField(key, val)
		}
	}
	if !seen {
		return Line{}, false
	}
	l.Format = FormatJSON
	return l, true
}

func (l *Line) setField(k, v string) {
	if l.Fields == nil {
		l.Fields = make(map[string]any, 4)
	}
	l.Fields[k] = v
}

func skipWS(s string, p int) int {
	for p < len(s) && (s[p] == ' ' || s[p] == '\t' || s[p] == '\n' || s[p] == '\r') {
		p++
	}
	return p
}

// jsonString reads the JSON string at s[p] (s[p] must be '"'); it returns the
// unescaped text and the index after the closing quote.
func jsonString(s string, p int) (string, int, bool) {
	if p >= len(s) || s[p] != '"' {
		return "", p, false
	}
	start := p + 1
	for i := start; i < len(s); i++ {
		switch s[i] {
		case '"':
			return s[start:i], i + 1, true
		case '\\':
			return jsonUnescape(s, start)
		}
	}
	return "", p, false
}

// jsonUnescape decodes a string with escapes starting at s[start] (after the
// opening quote).
func jsonUnescape(s string, start int) (string, int, bool) {
	var b strings.Builder
	i := start
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"':
			return b.String(), i + 1, true
		case c != '\\':
			b.WriteByte(c)
			i++
			continue
		}
		if i+1 >= len(s) {
			return "", i, false
		}
		switch s[i+1] {
		case '"', '\\', '/':
			b.WriteByte(s[i+1])
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			r, ok := hex4(s, i+2)
			if !ok {
				return "", i, false
			}
			i += 6
			if utf16.IsSurrogate(r) {
				if r2, ok := hex4(s, i+2); ok && i+1 < len(s) && s[i] == '\\' && s[i+1] == 'u' {
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						b.WriteRune(d)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			b.WriteRune(r)
			continue
		default:
			return "", i, false
		}
		i += 2
	}
	return "", i, false
}

func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for k := i; k < i+4; k++ {
		c := s[k]
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// jsonValue reads any JSON value at s[p] and returns it as a string: strings
// unescaped, numbers as printed (exponent forms expanded with
// strconv.FormatFloat 'f'), true/false, null as "", objects and arrays as
// compact JSON text.
func jsonValue(s string, p int) (string, int, bool) {
	if p >= len(s) {
		return "", p, false
	}
	switch c := s[p]; {
	case c == '"':
		return jsonString(s, p)
	case c == '-' || c >= '0' && c <= '9':
		q := p + 1
		exp := false
		for q < len(s) {
			c := s[q]
			if c >= '0' && c <= '9' || c == '.' || c == '+' || c == '-' {
				q++
				continue
			}
			if c == 'e' || c == 'E' {
				exp = true
				q++
				continue
			}
			break
		}
		num := s[p:q]
		if exp {
			f, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return "", p, false
			}
			num = strconv.FormatFloat(f, 'f', -1, 64)
		}
		return num, q, true
	case c == 't':
		if strings.HasPrefix(s[p:], "true") {
			return "true", p + 4, true
		}
	case c == 'f':
		if strings.HasPrefix(s[p:], "false") {
			return "false", p + 5, true
		}
	case c == 'n':
		if strings.HasPrefix(s[p:], "null") {
			return "", p + 4, true
		}
	case c == '{' || c == '[':
		q, ok := skipComposite(s, p)
		if !ok {
			return "", p, false
		}
		raw := s[p:q]
		if strings.ContainsAny(raw, " \t\r\n") {
			var b bytes.Buffer
			if err := json.Compact(&b, []byte(raw)); err != nil {
				return "", p, false
			}
			raw = b.String()
		}
		return raw, q, true
	}
	return "", p, false
}

// skipComposite returns the index after the object or array at s[p].
func skipComposite(s string, p int) (int, bool) {
	depth := 0
	for i := p; i < len(s); i++ {
		switch s[i] {
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1, true
			}
		case '"':
			i++
			for i < len(s) && s[i] != '"' {
				if s[i] == '\\' {
					i++
				}
				i++
			}
			if i >= len(s) {
				return 0, false
			}
		}
	}
	return 0, false
}
