package nomadevents

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"unicode/utf8"
)

// A small JSON walker: it iterates the members of an object or the elements
// of an array and hands out the raw bytes of each value, skipping the values
// nobody asked for without decoding them. Frames of the event stream are
// large (whole Node payloads with attributes and resources, allocations with
// task states); klaxon needs a few dozen scalar fields of them. Skipping is a
// bracket count with strings jumped over by bytes.IndexByte, several times
// faster than encoding/json's scanner, and the walk still rejects truncated
// or unbalanced input, bad literals and bad separators.

var errTruncated = errors.New("unexpected end of JSON")

type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at offset %d: %s", e.off, e.msg)
}

func synErr(off int, format string, args ...any) error {
	return &syntaxError{off: off, msg: fmt.Sprintf(format, args...)}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(data []byte, i int) int {
	for i < len(data) && isSpace(data[i]) {
		i++
	}
	return i
}

// skipString returns the offset after the string starting at data[i] == '"'.
func skipString(data []byte, i int) (int, error) {
	// Most strings of a frame are short keys and values: scan them inline,
	// and hand long ones to bytes.IndexByte.
	j := i + 1
	for end := min(len(data), j+32); j < end; j++ {
		switch data[j] {
		case '"':
			return j + 1, nil
		case '\\':
			j++
		}
	}
	if j > len(data) {
		return 0, errTruncated
	}
	for {
		k := bytes.IndexByte(data[j:], '"')
		if k < 0 {
			return 0, errTruncated
		}
		j += k
		// Count the backslashes before the quote: an odd number escapes it.
		n := 0
		for b := j - 1; b > i && data[b] == '\\'; b-- {
			n++
		}
		j++
		if n%2 == 0 {
			return j, nil
		}
	}
}

// skipValue returns the offset after the JSON value starting at data[i]
// (no leading space).
func skipValue(data []byte, i int) (int, error) {
	if i >= len(data) {
		return 0, errTruncated
	}
	switch c := data[i]; c {
	case '"':
		return skipString(data, i)
	case '{', '[':
		return skipNested(data, i)
	case 't':
		return skipLiteral(data, i, "true")
	case 'f':
		return skipLiteral(data, i, "false")
	case 'n':
		return skipLiteral(data, i, "null")
	default:
		if c == '-' || (c >= '0' && c <= '9') {
			return skipNumber(data, i)
		}
		return 0, synErr(i, "unexpected %q", c)
	}
}

func skipLiteral(data []byte, i int, lit string) (int, error) {
	if len(data)-i < len(lit) {
		if bytes.HasPrefix([]byte(lit), data[i:]) {
			return 0, errTruncated
		}
		return 0, synErr(i, "bad literal")
	}
	if string(data[i:i+len(lit)]) != lit {
		return 0, synErr(i, "bad literal")
	}
	return i + len(lit), nil
}

func skipNumber(data []byte, i int) (int, error) {
	j := i
	for j < len(data) {
		c := data[j]
		if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			j++
			continue
		}
		break
	}
	if j == i || (j == i+1 && data[i] == '-') {
		return 0, synErr(i, "bad number")
	}
	return j, nil
}

// Byte classes of the bytes between strings, for skipNested.
const (
	clsBad   = iota // not legal between strings
	clsSkip         // space, comma, colon
	clsQuote        // a string starts
	clsOpen         // { or [
	clsClose        // } or ]
	clsLit          // true, false, null
	clsNum          // a number starts
)

var (
	jsonClass [256]uint8
	// strStop marks the bytes that end the fast scan of a string.
	strStop [256]bool
)

func init() {
	for _, c := range []byte(" \t\n\r,:") {
		jsonClass[c] = clsSkip
	}
	jsonClass['"'] = clsQuote
	jsonClass['{'], jsonClass['['] = clsOpen, clsOpen
	jsonClass['}'], jsonClass[']'] = clsClose, clsClose
	jsonClass['t'], jsonClass['f'], jsonClass['n'] = clsLit, clsLit, clsLit
	for _, c := range []byte("-0123456789") {
		jsonClass[c] = clsNum
	}
	strStop['"'], strStop['\\'] = true, true
}

// stringStop returns the offset of the first '"' or '\\' at or after k, or
// len(data). It tests eight bytes at a time (SWAR): a frame's strings are
// most of its bytes.
func stringStop(data []byte, k int) int {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for ; k+8 <= len(data); k += 8 {
		x := binary.LittleEndian.Uint64(data[k:])
		q := x ^ (lo * '"')
		b := x ^ (lo * '\\')
		// A zero byte in q or b is a quote or a backslash; the lowest
		// flagged byte is exact (borrows only run upwards).
		m := ((q - lo) &^ q & hi) | ((b - lo) &^ b & hi)
		if m != 0 {
			return k + bits.TrailingZeros64(m)/8
		}
	}
	for k < len(data) && !strStop[data[k]] {
		k++
	}
	return k
}

// skipNested skips an object or array, checking that brackets match and
// that only legal bytes appear between strings. It is the hot loop of the
// decoder: one table lookup per byte between strings, and strings without
// escapes scanned inline.
func skipNested(data []byte, i int) (int, error) {
	var stackBuf [32]byte
	stack := stackBuf[:0]
	j := i
	for j < len(data) {
		c := data[j]
		switch jsonClass[c] {
		case clsSkip:
			j++
		case clsQuote:
			k := stringStop(data, j+1)
			if k < len(data) && data[k] == '"' {
				j = k + 1
				continue
			}
			k, err := skipString(data, j)
			if err != nil {
				return 0, err
			}
			j = k
		case clsOpen:
			if c == '{' {
				stack = append(stack, '}')
			} else {
				stack = append(stack, ']')
			}
			j++
		case clsClose:
			if len(stack) == 0 || stack[len(stack)-1] != c {
				return 0, synErr(j, "unbalanced %q", c)
			}
			stack = stack[:len(stack)-1]
			j++
			if len(stack) == 0 {
				return j, nil
			}
		case clsLit:
			lit := "true"
			if c == 'f' {
				lit = "false"
			} else if c == 'n' {
				lit = "null"
			}
			k, err := skipLiteral(data, j, lit)
			if err != nil {
				return 0, err
			}
			j = k
		case clsNum:
			k, err := skipNumber(data, j)
			if err != nil {
				return 0, err
			}
			j = k
		default:
			return 0, synErr(j, "unexpected %q", c)
		}
	}
	return 0, errTruncated
}

// walkMembers walks the JSON object starting at data[i] (after optional
// space): fn gets each member's raw key and the offset of its value and
// returns the offset after the value (having parsed or skipped it). It
// returns the offset after the object. A null object is empty.
func walkMembers(data []byte, i int, fn func(key []byte, v int) (end int, err error)) (int, error) {
	i, end, done, err := enterValue(data, i, '{', '}', "object")
	if done || err != nil {
		return end, err
	}
	for {
		if i >= len(data) {
			return 0, errTruncated
		}
		if data[i] != '"' {
			return 0, synErr(i, "want member name, got %q", data[i])
		}
		k, err := skipString(data, i)
		if err != nil {
			return 0, err
		}
		key := data[i+1 : k-1]
		i = skipSpace(data, k)
		if i >= len(data) {
			return 0, errTruncated
		}
		if data[i] != ':' {
			return 0, synErr(i, "want ':', got %q", data[i])
		}
		i = skipSpace(data, i+1)
		v, err := fn(key, i)
		if err != nil {
			return 0, err
		}
		if i, end, done, err = nextItem(data, v, '}'); done || err != nil {
			return end, err
		}
	}
}

// walkElements walks the JSON array starting at data[i] like walkMembers.
func walkElements(data []byte, i int, fn func(v int) (end int, err error)) (int, error) {
	i, end, done, err := enterValue(data, i, '[', ']', "array")
	if done || err != nil {
		return end, err
	}
	for {
		v, err := fn(i)
		if err != nil {
			return 0, err
		}
		if i, end, done, err = nextItem(data, v, ']'); done || err != nil {
			return end, err
		}
	}
}

// enterValue steps into the object or array at data[i], after optional
// space (open and closing are '{' and '}', or '[' and ']'): to the offset
// of its first member or element, or, when it is null or empty, done with
// end the offset after it.
func enterValue(data []byte, i int, open, closing byte, what string) (first, end int, done bool, err error) {
	i = skipSpace(data, i)
	if i >= len(data) {
		return 0, 0, true, errTruncated
	}
	if data[i] == 'n' {
		end, err := skipLiteral(data, i, "null")
		return 0, end, true, err
	}
	if data[i] != open {
		return 0, 0, true, synErr(i, "want "+what+", got %q", data[i])
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == closing {
		return 0, i + 1, true, nil
	}
	return i, 0, false, nil
}

// nextItem steps over the ',' after a member or element that ends at v,
// to the offset of the next one, or, at closing, done with end the offset
// after it.
func nextItem(data []byte, v int, closing byte) (following, end int, done bool, err error) {
	i := skipSpace(data, v)
	if i >= len(data) {
		return 0, 0, true, errTruncated
	}
	switch data[i] {
	case ',':
		return skipSpace(data, i+1), 0, false, nil
	case closing:
		return 0, i + 1, true, nil
	}
	return 0, 0, true, synErr(i, "want ',' or '"+string(closing)+"', got %q", data[i])
}

// errStop ends a walk early without error.
var errStop = errors.New("stop")

// eachMember calls fn for every member of the JSON object in data with the
// raw key (without quotes, escapes kept) and the raw value. A null object
// is empty. fn returning stop=true ends the walk early.
func eachMember(data []byte, fn func(key, val []byte) (stop bool, err error)) error {
	_, err := walkMembers(data, 0, func(key []byte, v int) (int, error) {
		end, err := skipValue(data, v)
		if err != nil {
			return 0, err
		}
		stop, err := fn(key, data[v:end])
		if err == nil && stop {
			err = errStop
		}
		return end, err
	})
	if err == errStop {
		return nil
	}
	return err
}

// eachElement calls fn for every element of the JSON array in data. A null
// array is empty.
func eachElement(data []byte, fn func(val []byte) error) error {
	_, err := walkElements(data, 0, func(v int) (int, error) {
		end, err := skipValue(data, v)
		if err != nil {
			return 0, err
		}
		return end, fn(data[v:end])
	})
	return err
}

// str decodes a raw JSON string value; null is "". Strings without escapes
// are converted directly.
func str(raw []byte) (string, error) {
	if len(raw) == 0 {
		return "", errTruncated
	}
	if raw[0] == 'n' {
		return "", nil
	}
	if raw[0] != '"' || len(raw) < 2 {
		return "", synErr(0, "want string")
	}
	body := raw[1 : len(raw)-1]
	if bytes.IndexByte(body, '\\') < 0 && utf8.Valid(body) {
		return string(body), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s, nil
}

// num decodes a raw JSON integer; null is 0.
func num(raw []byte) (int64, error) {
	if len(raw) == 0 {
		return 0, errTruncated
	}
	if raw[0] == 'n' {
		return 0, nil
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err == nil {
		return n, nil
	}
	f, ferr := strconv.ParseFloat(string(raw), 64)
	if ferr != nil {
		return 0, synErr(0, "want number, got %.20q", raw)
	}
	return int64(f), nil
}

// unum decodes a raw JSON unsigned integer; null is 0.
func unum(raw []byte) (uint64, error) {
	if len(raw) > 0 && raw[0] == 'n' {
		return 0, nil
	}
	n, err := strconv.ParseUint(string(raw), 10, 64)
	if err != nil {
		return 0, synErr(0, "want unsigned integer, got %.20q", raw)
	}
	return n, nil
}

// boolean decodes a raw JSON bool; null is false.
func boolean(raw []byte) (bool, error) {
	switch string(raw) {
	case "true":
		return true, nil
	case "false", "null":
		return false, nil
	}
	return false, synErr(0, "want bool, got %.20q", raw)
}
