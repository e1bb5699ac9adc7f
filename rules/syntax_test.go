package rules

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestYAMLSyntaxErrorLines: a YAML syntax error is reported at the line
// where it is, not where yaml.v3 says (the start of the enclosing block,
// counted from 0 for parser errors). Each fixture is broken on one line.
func TestYAMLSyntaxErrorLines(t *testing.T) {
	tests := []struct {
		file string
		line int
		msg  string
	}{
		{"bad_indent.yaml", 10, "did not find expected '-' indicator"},
		{"item_in_mapping.yaml", 12, "did not find expected key"},
		{"tab.yaml", 9, "found character that cannot start any token"},
		{"unclosed_flow.yaml", 8, "did not find expected ',' or '}'"},
		{"unknown_anchor.yaml", 9, "unknown anchor 'quiet' referenced"},
		{"second_document.yaml", 13, "did not find expected key"},
		{"colon_in_value.yaml", 5, "mapping values are not allowed in this context"},
		{"unterminated_quote.yaml", 4, "did not find expected key"},
	}
	wrong := 0 // fixtures where yaml.v3's own line is not the real one
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", "syntax", tt.file)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ParseFile(path, data)
			got := Errors(err)
			if len(got) != 1 {
				t.Fatalf("want one error, got %v", err)
			}
			want := &PosError{File: filepath.ToSlash(path), Line: tt.line, Col: 1, Msg: "invalid YAML: " + tt.msg}
			if *got[0] != *want {
				t.Errorf("got  %v\nwant %v", got[0], want)
			}
			if yamlV3Line(data) != tt.line {
				wrong++
			}
			// LoadFiles reports it the same way.
			if _, err := LoadFiles(path); err == nil || err.Error() != want.Error() {
				t.Errorf("LoadFiles: %v", err)
			}
		})
	}
	if wrong < 5 {
		t.Errorf("yaml.v3 names the wrong line in only %d fixtures: they no longer test the fix", wrong)
	}
}

var yamlV3LineRe = regexp.MustCompile(`^yaml: line (\d+):`)

// yamlV3Line is the line yaml.v3's own message gives (0: none).
func yamlV3Line(data []byte) int {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return 0
		}
		if err != nil {
			m := yamlV3LineRe.FindStringSubmatch(err.Error())
			if m == nil {
				return 0
			}
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
}

// TestSyntaxLine: the line finder on its own, including inputs that are
// valid and errors on the first and the last line.
func TestSyntaxLine(t *testing.T) {
	tests := []struct {
		name, src string
		want      int
	}{
		{"valid", "a: 1\nb: [1, 2]\n", 0},
		{"empty", "", 0},
		{"first line", "a: [\n", 1},
		{"last line without newline", "a: 1\nb: 2\n c: 3", 3},
		{"after a valid multi-line flow", "a: [1,\n  2]\nb: {x: 1,\n  y: 2}\nc: 1\n d: 2\n", 6},
		{"blank lines and comments after it", "a: 1\n b: 2\n\n# c\n\n", 2},
		{"second document", "a: 1\n---\nb: 2\n c: 3\n", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := syntaxLine([]byte(tt.src)); got != tt.want {
				t.Errorf("line %d, want %d", got, tt.want)
			}
		})
	}
}
