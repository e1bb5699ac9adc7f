package winevt

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/klaxon-dev/klaxon/ingest"
)

// eventNS is the namespace of Windows event XML.
const eventNS = "http://schemas.microsoft.com/win/2004/08/events/event"

// maxXMLDepth bounds the nesting of one event document.
const maxXMLDepth = 64

// ReadXML reads rendered event XML: <Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event">
// documents as `wevtutil qe /f:xml` (also /f:RenderedXml, whose
// <RenderingInfo><Message> becomes Msg) and EvtRender produce, one or many
// per stream, optionally wrapped in an <Events> root, in UTF-8 or (with a
// BOM) UTF-16. A malformed document is counted in Stats.BadRecords with its
// place and reading goes on at the next <Event>. The error is only for I/O.
func ReadXML(ctx context.Context, r io.Reader, name string, cfg DecoderConfig, emit func(ingest.Event)) (Stats, error) {
	var st Stats
	data, err := io.ReadAll(r)
	if err != nil {
		return st, fmt.Errorf("winevt: read %s: %w", name, err)
	}
	data = toUTF8(data)
	n := &normalizer{ident: cfg.Identity}
	base := 0
	for base < len(data) {
		next, err := readXMLFrom(ctx, data, base, name, n, &st, emit)
		if err == nil {
			return st, nil
		}
		if ctx.Err() != nil {
			return st, ctx.Err()
		}
		// Resynchronise at the next event after the error.
		i := indexEventStart(data, next+1)
		if i < 0 {
			return st, nil
		}
		base = i
	}
	return st, nil
}

// readXMLFrom decodes data[base:]. On a syntax error it counts it and returns
// the offset where the error was found.
func readXMLFrom(ctx context.Context, data []byte, base int, name string, n *normalizer, st *Stats, emit func(ingest.Event)) (int, error) {
	d := xml.NewDecoder(bytes.NewReader(data[base:]))
	d.CharsetReader = func(_ string, r io.Reader) (io.Reader, error) { return r, nil } // transcoded already
	count := 0
	for {
		start := base + int(d.InputOffset())
		tok, err := d.Token()
		if err == io.EOF {
			return len(data), nil
		}
		if err != nil {
			st.BadRecords++
			line := 1 + bytes.Count(data[:min(len(data), base+int(d.InputOffset()))], []byte{'\n'})
			st.addError(fmt.Sprintf("%s: line %d (offset %d): %v", name, line, base+int(d.InputOffset()), err))
			return base + int(d.InputOffset()), err
		}
		se, ok := tok.(xml.StartElement)
		if !ok || se.Name.Local != "Event" {
			continue
		}
		ev, err := buildElem(d, se, 0)
		if err != nil {
			st.BadRecords++
			line := 1 + bytes.Count(data[:min(len(data), start)], []byte{'\n'})
			st.addError(fmt.Sprintf("%s: event at line %d (offset %d): %v", name, line, start, err))
			return base + int(d.InputOffset()), err
		}
		out, hasTime := n.normalize(ev, zeroTime)
		if !hasTime {
			st.NoTime++
		}
		st.Records++
		emit(out)
		if count++; count&255 == 0 && ctx.Err() != nil {
			return len(data), ctx.Err()
		}
	}
}

// buildElem reads the element opened by se up to its end.
func buildElem(d *xml.Decoder, se xml.StartElement, depth int) (*elem, error) {
	if depth > maxXMLDepth {
		return nil, errors.New("elements nested too deep")
	}
	e := &elem{name: se.Name.Local}
	for _, a := range se.Attr {
		if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue
		}
		e.attrs = append(e.attrs, attr{a.Name.Local, a.Value})
	}
	var text strings.Builder
	for {
		tok, err := d.Token()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			k, err := buildElem(d, t, depth+1)
			if err != nil {
				return nil, err
			}
			e.kids = append(e.kids, k)
		case xml.CharData:
			text.Write(t)
		case xml.EndElement:
			e.text = text.String()
			if len(e.kids) > 0 {
				e.text = strings.TrimSpace(e.text)
			}
			return e, nil
		}
	}
}

// indexEventStart finds the next "<Event" start tag (not "<Events") at or
// after from.
func indexEventStart(data []byte, from int) int {
	for from < len(data) {
		i := bytes.Index(data[from:], []byte("<Event"))
		if i < 0 {
			return -1
		}
		j := from + i + len("<Event")
		if j < len(data) && (data[j] == '>' || data[j] == ' ' || data[j] == '\t' || data[j] == '\r' || data[j] == '\n' || data[j] == '/') {
			return from + i
		}
		from = j
	}
	return -1
}

// toUTF8 strips a UTF-8 BOM and transcodes UTF-16 (with a BOM, or detected
// by "<\x00") to UTF-8.
func toUTF8(b []byte) []byte {
	switch {
	case bytes.HasPrefix(b, []byte{0xEF, 0xBB, 0xBF}):
		return b[3:]
	case bytes.HasPrefix(b, []byte{0xFF, 0xFE}):
		return utf16To8(b[2:], false)
	case bytes.HasPrefix(b, []byte{0xFE, 0xFF}):
		return utf16To8(b[2:], true)
	case len(b) >= 2 && b[0] == '<' && b[1] == 0:
		return utf16To8(b, false)
	case len(b) >= 2 && b[0] == 0 && b[1] == '<':
		return utf16To8(b, true)
	}
	return b
}

func utf16To8(b []byte, bigEndian bool) []byte {
	u := make([]uint16, len(b)/2)
	for i := range u {
		if bigEndian {
			u[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
		} else {
			u[i] = uint16(b[2*i]) | uint16(b[2*i+1])<<8
		}
	}
	out := make([]byte, 0, len(u))
	for _, r := range utf16.Decode(u) {
		out = utf8.AppendRune(out, r)
	}
	// The declaration may still say encoding="UTF-16"; CharsetReader passes it through.
	return out
}

// DetectXML reports whether head (the first bytes of a file) starts an event
// XML document: an <Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event">
// element or an <Events> root, maybe after a BOM, an XML declaration,
// comments or blank space.
func DetectXML(head []byte) bool {
	s := toUTF8(head)
	for {
		s = bytes.TrimLeft(s, " \t\r\n")
		switch {
		case bytes.HasPrefix(s, []byte("<?")):
			i := bytes.Index(s, []byte("?>"))
			if i < 0 {
				return false
			}
			s = s[i+2:]
			continue
		case bytes.HasPrefix(s, []byte("<!--")):
			i := bytes.Index(s, []byte("-->"))
			if i < 0 {
				return false
			}
			s = s[i+3:]
			continue
		}
		break
	}
	if bytes.HasPrefix(s, []byte("<Events")) {
		rest := s[len("<Events"):]
		return len(rest) > 0 && (rest[0] == '>' || rest[0] == ' ' || rest[0] == '\r' || rest[0] == '\n' || rest[0] == '\t')
	}
	if !bytes.HasPrefix(s, []byte("<Event")) {
		return false
	}
	end := bytes.IndexByte(s, '>')
	if end < 0 {
		end = len(s)
	}
	return bytes.Contains(s[:end], []byte(eventNS))
}
