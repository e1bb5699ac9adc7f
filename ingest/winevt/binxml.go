package winevt

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/0xrawsec/golang-evtx/evtx"
)

var le = binary.LittleEndian

// maxNesting bounds binary XML nested in substitution values.
const maxNesting = 8

// tnode is a compiled template element: parsed once per chunk by
// golang-evtx, instantiated per record with the record's values.
type tnode struct {
	name    string
	attrs   []tattr
	content []tpart
	kids    []*tnode
}

type tattr struct {
	name string
	part tpart
}

// tpart is literal text (sub < 0) or a substitution of value sub.
type tpart struct {
	text     string
	sub      int
	optional bool
}

// template is a compiled template definition.
type template struct {
	roots []*tnode
	size  int // data size of the definition (after its 24-byte header)
	err   error
}

// value is one substitution value of a template instance: its type and raw
// bytes, at chunk offset off.
type value struct {
	typ byte
	off int
	b   []byte
}

// chunkDecoder decodes the records of one chunk. Its templates are parsed
// once and shared by all records of the chunk.
type chunkDecoder struct {
	data  []byte
	tmpls map[uint32]*template
	gc    evtx.Chunk // golang-evtx's view, for raw (template-less) fragments
	lib   []string   // what golang-evtx logged since takeLib
}

// takeLib returns and forgets the messages golang-evtx logged while
// decoding the current record.
func (cd *chunkDecoder) takeLib() []string {
	m := cd.lib
	cd.lib = nil
	return m
}

func newChunkDecoder(data []byte) *chunkDecoder {
	return &chunkDecoder{
		data:  data,
		tmpls: make(map[uint32]*template, 16),
		gc:    evtx.Chunk{Data: data, StringTable: evtx.ChunkStringTable{}, TemplateTable: evtx.TemplateTable{}},
	}
}

// template returns the compiled template whose definition is at defOff.
func (cd *chunkDecoder) template(defOff uint32) (t *template) {
	if t, ok := cd.tmpls[defOff]; ok {
		return t
	}
	t = &template{}
	cd.tmpls[defOff] = t
	defer func() {
		if r := recover(); r != nil {
			t.roots, t.err = nil, fmt.Errorf("template at 0x%x: %v", defOff, r)
		}
	}()
	if int(defOff)+24 > len(cd.data) || defOff < 0x200 {
		t.err = fmt.Errorf("template offset 0x%x outside the chunk", defOff)
		return t
	}
	r := bytes.NewReader(cd.data)
	if _, err := r.Seek(int64(defOff), io.SeekStart); err != nil {
		t.err = err
		return t
	}
	var tdd evtx.TemplateDefinitionData
	var err error
	callLib(&cd.lib, func() { err = tdd.Parse(r) })
	if err != nil {
		t.err = fmt.Errorf("template at 0x%x: %v", defOff, err)
		return t
	}
	if tdd.Size < 0 || int(defOff)+24+int(tdd.Size) > len(cd.data) {
		t.err = fmt.Errorf("template at 0x%x: bad size %d", defOff, tdd.Size)
		return t
	}
	t.size = int(tdd.Size)
	t.roots = compile(tdd.Elements)
	return t
}

// compile turns golang-evtx's flat element list into a tnode tree.
func compile(elements []evtx.Element) []*tnode {
	root, _ := evtx.NodeTree(elements, 0)
	out := make([]*tnode, 0, len(root.Child))
	for _, c := range root.Child {
		out = append(out, compileNode(c, 0))
	}
	return out
}

func compileNode(n *evtx.Node, depth int) *tnode {
	t := &tnode{}
	if n.Start != nil {
		t.name = n.Start.Name.String()
		for _, a := range n.Start.AttributeList.Attributes {
			if p, ok := toPart(a.AttributeData); ok {
				t.attrs = append(t.attrs, tattr{name: a.Name.String(), part: p})
			}
		}
	}
	for _, e := range n.Element {
		if p, ok := toPart(e); ok {
			t.content = append(t.content, p)
		}
	}
	if depth < maxXMLDepth {
		for _, c := range n.Child {
			t.kids = append(t.kids, compileNode(c, depth+1))
		}
	}
	return t
}

func toPart(e evtx.Element) (tpart, bool) {
	switch v := e.(type) {
	case *evtx.ValueText:
		return tpart{text: v.String(), sub: -1}, true
	case *evtx.NormalSubstitution:
		return tpart{sub: int(uint16(v.SubID))}, true
	case *evtx.OptionalSubstitution:
		return tpart{sub: int(uint16(v.SubID)), optional: true}, true
	case *evtx.CharEntityRef:
		return tpart{text: string(rune(uint16(v.Value))), sub: -1}, true
	case *evtx.BinXMLEntityReference:
		return tpart{text: v.String(), sub: -1}, true
	}
	return tpart{}, false
}

// fragment decodes the binary XML fragment in data[off:end] into elements.
func (cd *chunkDecoder) fragment(off, end, depth int) ([]*elem, error) {
	if depth > maxNesting {
		return nil, errors.New("binary XML nested too deep")
	}
	if end > len(cd.data) {
		end = len(cd.data)
	}
	start := off
	if off < end && cd.data[off] == evtx.FragmentHeaderToken {
		off += 4
	}
	if off >= end {
		return nil, fmt.Errorf("empty binary XML at 0x%x", start)
	}
	switch cd.data[off] {
	case evtx.TokenTemplateInstance:
		return cd.templateInstance(off, end, depth)
	case evtx.TokenOpenStartElementTag1, evtx.TokenOpenStartElementTag2:
		if start == off {
			return nil, fmt.Errorf("element without fragment header at 0x%x", off)
		}
		return cd.rawFragment(start)
	}
	return nil, fmt.Errorf("unexpected binary XML token 0x%02x at 0x%x", cd.data[off], off)
}

// rawFragment decodes a fragment of plain elements (no template) with
// golang-evtx.
func (cd *chunkDecoder) rawFragment(off int) ([]*elem, error) {
	r := bytes.NewReader(cd.data)
	if _, err := r.Seek(int64(off), io.SeekStart); err != nil {
		return nil, err
	}
	var el evtx.Element
	var err error
	callLib(&cd.lib, func() { el, err = evtx.Parse(r, &cd.gc, false) })
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("fragment at 0x%x: %v", off, err)
	}
	f, ok := el.(*evtx.Fragment)
	if !ok {
		return nil, fmt.Errorf("fragment at 0x%x: not a fragment", off)
	}
	ti, ok := f.BinXMLElement.(*evtx.TemplateInstance)
	if !ok {
		return nil, fmt.Errorf("fragment at 0x%x: no elements", off)
	}
	roots := compile(ti.Definition.Data.Elements)
	out := make([]*elem, 0, len(roots))
	for _, t := range roots {
		out = append(out, cd.instantiate(t, nil, 0)...)
	}
	return out, nil
}

// templateInstance decodes the template instance token at off.
func (cd *chunkDecoder) templateInstance(off, end, depth int) ([]*elem, error) {
	d := cd.data
	if off+10 > end {
		return nil, fmt.Errorf("template instance at 0x%x: truncated", off)
	}
	defOff := le.Uint32(d[off+6:])
	pos := off + 10
	t := cd.template(defOff)
	if t.err != nil {
		return nil, t.err
	}
	if int(defOff) == pos {
		pos += 24 + t.size
	}
	if pos+4 > end {
		return nil, fmt.Errorf("template instance at 0x%x: values truncated", off)
	}
	n := int(le.Uint32(d[pos:]))
	pos += 4
	if n < 0 || n > (end-pos)/4 {
		return nil, fmt.Errorf("template instance at 0x%x: bad value count %d", off, n)
	}
	vals := make([]value, n)
	dp := pos
	pos += 4 * n
	for i := range vals {
		size := int(le.Uint16(d[dp:]))
		vals[i].typ = d[dp+2]
		dp += 4
		if pos+size > end {
			return nil, fmt.Errorf("template instance at 0x%x: value %d overruns the record", off, i)
		}
		vals[i].off = pos
		vals[i].b = d[pos : pos+size]
		pos += size
	}
	out := make([]*elem, 0, len(t.roots))
	for _, r := range t.roots {
		out = append(out, cd.instantiate(r, vals, depth)...)
	}
	return out, nil
}

// instantiate builds the element of t with the substitution values vals.
// It returns the element, or for a substitution of binary XML the elements
// that it holds.
func (cd *chunkDecoder) instantiate(t *tnode, vals []value, depth int) []*elem {
	if len(t.content) == 1 && len(t.kids) == 0 && t.name != "" {
		// An element whose content is an array value is repeated per item,
		// as Windows renders it (<Data>a</Data><Data>b</Data>).
		if p := t.content[0]; p.sub >= 0 && p.sub < len(vals) && vals[p.sub].typ&evtx.ArrayType != 0 {
			items := arrayItems(vals[p.sub].typ&^evtx.ArrayType, vals[p.sub].b)
			out := make([]*elem, 0, len(items))
			for _, it := range items {
				e := cd.instantiate(&tnode{name: t.name, attrs: t.attrs}, vals, depth)[0]
				e.text = it
				out = append(out, e)
			}
			return out
		}
	}
	e := &elem{name: t.name}
	if len(t.attrs) > 0 {
		e.attrs = make([]attr, 0, len(t.attrs))
	}
	for _, a := range t.attrs {
		if a.part.sub < 0 {
			e.attrs = append(e.attrs, attr{a.name, a.part.text})
			continue
		}
		if a.part.sub >= len(vals) || vals[a.part.sub].typ == 0 {
			continue // null: the attribute is left out
		}
		e.attrs = append(e.attrs, attr{a.name, formatValue(vals[a.part.sub])})
	}
	var text string
	var sb *strings.Builder
	add := func(s string) {
		switch {
		case text == "" && sb == nil:
			text = s
		default:
			if sb == nil {
				sb = &strings.Builder{}
				sb.WriteString(text)
			}
			sb.WriteString(s)
		}
	}
	for _, p := range t.content {
		if p.sub < 0 {
			add(p.text)
			continue
		}
		if p.sub >= len(vals) {
			continue
		}
		v := vals[p.sub]
		if v.typ == evtx.BinXmlType {
			if len(v.b) == 0 {
				continue
			}
			kids, err := cd.fragment(v.off, v.off+len(v.b), depth+1)
			if err != nil {
				panic(fmt.Errorf("substitution %d: %v", p.sub, err))
			}
			e.kids = append(e.kids, kids...)
			continue
		}
		add(formatValue(v))
	}
	if sb != nil {
		text = sb.String()
	}
	e.text = text
	for _, k := range t.kids {
		e.kids = append(e.kids, cd.instantiate(k, vals, depth)...)
	}
	if t.name == "" { // a root without a start element: pass its children on
		return e.kids
	}
	return []*elem{e}
}

// formatValue renders a substitution value as Windows renders it in XML.
func formatValue(v value) string {
	b := v.b
	t := v.typ
	if t&evtx.ArrayType != 0 {
		return formatArray(t&^evtx.ArrayType, b)
	}
	switch t {
	case evtx.NullType:
		return ""
	case evtx.StringType:
		return utf16String(b)
	case evtx.AnsiStringType:
		return ansiString(b)
	case evtx.Int8Type:
		if len(b) >= 1 {
			return strconv.Itoa(int(int8(b[0])))
		}
	case evtx.UInt8Type:
		if len(b) >= 1 {
			return strconv.Itoa(int(b[0]))
		}
	case evtx.Int16Type:
		if len(b) >= 2 {
			return strconv.Itoa(int(int16(le.Uint16(b))))
		}
	case evtx.UInt16Type:
		if len(b) >= 2 {
			return strconv.Itoa(int(le.Uint16(b)))
		}
	case evtx.Int32Type:
		if len(b) >= 4 {
			return strconv.FormatInt(int64(int32(le.Uint32(b))), 10)
		}
	case evtx.UInt32Type:
		if len(b) >= 4 {
			return strconv.FormatUint(uint64(le.Uint32(b)), 10)
		}
	case evtx.Int64Type:
		if len(b) >= 8 {
			return strconv.FormatInt(int64(le.Uint64(b)), 10)
		}
	case evtx.UInt64Type:
		if len(b) >= 8 {
			return strconv.FormatUint(le.Uint64(b), 10)
		}
	case evtx.Real32Type:
		if len(b) >= 4 {
			return strconv.FormatFloat(float64(math.Float32frombits(le.Uint32(b))), 'g', -1, 32)
		}
	case evtx.Real64Type:
		if len(b) >= 8 {
			return strconv.FormatFloat(math.Float64frombits(le.Uint64(b)), 'g', -1, 64)
		}
	case evtx.BoolType:
		for _, c := range b {
			if c != 0 {
				return "true"
			}
		}
		return "false"
	case evtx.BinaryType:
		return strings.ToUpper(hex.EncodeToString(b))
	case evtx.GuidType:
		if len(b) >= 16 {
			return fmt.Sprintf("{%08X-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X}",
				le.Uint32(b), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15])
		}
	case evtx.SizeTType:
		switch len(b) {
		case 4:
			return "0x" + strconv.FormatUint(uint64(le.Uint32(b)), 16)
		case 8:
			return "0x" + strconv.FormatUint(le.Uint64(b), 16)
		}
	case evtx.FileTimeType:
		if len(b) >= 8 {
			return formatTime(fileTime(le.Uint64(b)))
		}
	case evtx.SysTimeType:
		if len(b) >= 16 {
			tm := time.Date(int(le.Uint16(b)), time.Month(le.Uint16(b[2:])), int(le.Uint16(b[6:])),
				int(le.Uint16(b[8:])), int(le.Uint16(b[10:])), int(le.Uint16(b[12:])), int(le.Uint16(b[14:]))*int(time.Millisecond), time.UTC)
			return formatTime(tm)
		}
	case evtx.SidType:
		return sidString(b)
	case evtx.HexInt32Type:
		if len(b) >= 4 {
			return "0x" + strconv.FormatUint(uint64(le.Uint32(b)), 16)
		}
	case evtx.HexInt64Type:
		if len(b) >= 8 {
			return "0x" + strconv.FormatUint(le.Uint64(b), 16)
		}
	default:
		return strings.ToUpper(hex.EncodeToString(b))
	}
	return ""
}

// formatArray renders an array value, its items separated by ", ".
func formatArray(t byte, b []byte) string {
	return strings.Join(arrayItems(t, b), ", ")
}

// arrayItems renders the items of an array value of item type t.
func arrayItems(t byte, b []byte) []string {
	var items []string
	switch t {
	case evtx.StringType:
		// Each item is NUL-terminated: "a\0\0" is ["a", ""].
		u := make([]uint16, len(b)/2)
		for i := range u {
			u[i] = le.Uint16(b[2*i:])
		}
		s := strings.TrimSuffix(string(utf16.Decode(u)), "\x00")
		items = strings.Split(s, "\x00")
	case evtx.AnsiStringType:
		items = strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	default:
		size := map[byte]int{evtx.Int8Type: 1, evtx.UInt8Type: 1, evtx.Int16Type: 2, evtx.UInt16Type: 2,
			evtx.Int32Type: 4, evtx.UInt32Type: 4, evtx.HexInt32Type: 4, evtx.Real32Type: 4, evtx.BoolType: 4,
			evtx.Int64Type: 8, evtx.UInt64Type: 8, evtx.HexInt64Type: 8, evtx.Real64Type: 8, evtx.FileTimeType: 8,
			evtx.GuidType: 16, evtx.SysTimeType: 16}[t]
		if size == 0 {
			return []string{strings.ToUpper(hex.EncodeToString(b))}
		}
		for i := 0; i+size <= len(b) && len(items) < 4096; i += size {
			items = append(items, formatValue(value{typ: t, b: b[i : i+size]}))
		}
	}
	return items
}

// utf16String decodes UTF-16LE text without its trailing NULs.
func utf16String(b []byte) string {
	n := len(b) / 2
	for n > 0 && b[2*n-2] == 0 && b[2*n-1] == 0 {
		n--
	}
	ascii := true
	for i := 0; i < n; i++ {
		if b[2*i+1] != 0 || b[2*i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		out := make([]byte, n)
		for i := range out {
			out[i] = b[2*i]
		}
		return string(out)
	}
	u := make([]uint16, n)
	for i := range u {
		u[i] = le.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// ansiString decodes an ANSI string (as Latin-1 when it is not UTF-8).
func ansiString(b []byte) string {
	b = bytes.TrimRight(b, "\x00")
	if utf8.Valid(b) {
		return string(b)
	}
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}

// sidString renders a binary SID as S-R-I-S-S...
func sidString(b []byte) string {
	if len(b) < 8 {
		return strings.ToUpper(hex.EncodeToString(b))
	}
	n := int(b[1])
	var auth uint64
	for _, c := range b[2:8] {
		auth = auth<<8 | uint64(c)
	}
	var sb strings.Builder
	sb.WriteString("S-")
	sb.WriteString(strconv.Itoa(int(b[0])))
	sb.WriteByte('-')
	sb.WriteString(strconv.FormatUint(auth, 10))
	for i := 0; i < n && 8+4*i+4 <= len(b); i++ {
		sb.WriteByte('-')
		sb.WriteString(strconv.FormatUint(uint64(le.Uint32(b[8+4*i:])), 10))
	}
	return sb.String()
}

// fileTime converts a Windows FILETIME (100 ns since 1601) to time.
func fileTime(ft uint64) time.Time {
	if ft == 0 {
		return time.Time{}
	}
	const epochDiff = 116444736000000000 // 1601 → 1970 in 100 ns
	if ft < epochDiff {
		return time.Date(1601, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(ft) * 100)
	}
	d := ft - epochDiff
	return time.Unix(int64(d/1e7), int64(d%1e7)*100).UTC()
}

// formatTime renders a time as Windows renders SystemTime.
func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.0000000Z")
}
