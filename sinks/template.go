package sinks

import (
	"encoding/json"
	"maps"
	"text/template"
)

// TemplateFuncs are the functions of the sinks' message templates (the
// webhook's body, Slack's title and text), Go text/template over the
// Incident:
//
//   - json: a value as JSON (a string becomes a quoted JSON string);
//   - truncate N S: S cut to N characters, marked with "…".
func TemplateFuncs() template.FuncMap {
	return template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
		"truncate": func(n int, s string) string { return Truncate(s, n) },
	}
}

// ParseTemplate parses a sink's template: TemplateFuncs plus extra, and a
// missing map key is an error (a misspelt .Labels.tema fails at load, not
// in a page at night).
func ParseTemplate(name, text string, extra template.FuncMap) (*template.Template, error) {
	funcs := TemplateFuncs()
	maps.Copy(funcs, extra)
	return template.New(name).Funcs(funcs).Option("missingkey=error").Parse(text)
}
