package rules

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// yaml.v3 names the line where the enclosing block started (and, for
// parser errors, that line counted from 0), not the line of the problem:
// a bad indentation on line 9 of a rule that starts on line 2 is reported
// as "line 1". syntaxLine finds the real line instead.
var yamlLineRe = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// maxSyntaxProbeBytes bounds the work syntaxLine spends on one file (the
// bytes of the prefixes it parses again).
const maxSyntaxProbeBytes = 64 << 20

// yamlError reports a YAML error of f at its real line. Every line of
// yaml.v3's message gives one error (syntax errors have one line).
func (l *loader) yamlError(f *fileCtx, data []byte, err error) {
	line := syntaxLine(data)
	for _, msg := range strings.Split(err.Error(), "\n") {
		msg = strings.TrimSpace(msg)
		if m := yamlLineRe.FindStringSubmatch(msg); m != nil {
			msg = m[2]
		} else {
			msg = strings.TrimPrefix(msg, "yaml: ")
		}
		if msg == "" || msg == "unmarshal errors:" {
			continue
		}
		if line > 0 {
			l.errAt(f, line, 1, "", "invalid YAML: %s", msg)
		} else {
			l.errAt(f, 0, 0, "", "invalid YAML: %s", msg)
		}
	}
}

// syntaxLine returns the 1-based line of the first YAML error in data (0
// when data is valid). It is the first line after the longest prefix of
// whole lines that is valid YAML. To find it without parsing every prefix,
// data is parsed once more through a reader that hands out one byte at a
// time: the parser fails having read only up to the problem (and the
// lookahead of a token), so every prefix holding those bytes fails too, and
// the search goes back from there, usually one or two lines.
func syntaxLine(data []byte) int {
	r := &byteReader{data: data}
	dec := yaml.NewDecoder(r)
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return 0
		}
		if err != nil {
			break
		}
	}
	// starts[i] is the offset of line i+1.
	starts := []int{0}
	for i, b := range data {
		if b == '\n' && i+1 < len(data) {
			starts = append(starts, i+1)
		}
	}
	last := 1 // the line of the last byte read
	for i, s := range starts {
		if s < r.off {
			last = i + 1
		}
	}
	budget := maxSyntaxProbeBytes
	for k := last - 1; k >= 0; k-- {
		if k == 0 {
			return 1 // the empty prefix is valid
		}
		prefix := data[:starts[k]]
		if budget -= len(prefix); budget < 0 {
			break
		}
		if validYAML(prefix) {
			return k + 1
		}
	}
	return last
}

// validYAML reports whether every document of data parses.
func validYAML(data []byte) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			return false
		}
	}
}

// byteReader reads data one byte per call and counts what it handed out.
type byteReader struct {
	data []byte
	off  int
}

func (r *byteReader) Read(p []byte) (int, error) {
	if r.off >= len(r.data) {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.data[r.off]
	r.off++
	return 1, nil
}
