package rules

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"text/template"
	"time"
)

// TemplateData is what a rule's title and summary templates render. In the
// templates its fields are reached with lower-case keys: .node .group .count
// .counts .window .rule .severity .first .last .fields .values .latest
// .rate, and the rule's params as .params.
type TemplateData struct {
	Node     string
	Group    map[string]string
	Count    int
	Counts   map[string]int
	Window   time.Duration
	Rule     string
	Severity string
	First    time.Time
	Last     time.Time
	// Fields are the fields of the last event.
	Fields map[string]any
	// Values holds distinct values per group path or per "selector.field",
	// as the correlator provides them.
	Values map[string][]string
	// Latest holds the values `when` reads with latest, rate and predict:
	// selector name → event path → the newest value (nil when none), as
	// in {{ index .latest "load" "fields.running" }}.
	Latest map[string]map[string]any
	// Rate holds, for the same references, the per-second slope of their
	// numeric values over the window (nil with fewer than two samples):
	// {{ index .rate "pool" "fields.nonpaged_bytes" }}.
	Rate map[string]map[string]any
}

// Duration prints a time.Duration the way rules write it ("15m", "1h30m",
// "2d") in templates; .window is one.
type Duration time.Duration

// String implements fmt.Stringer.
func (d Duration) String() string {
	td := time.Duration(d)
	if td > 0 && td%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(td/(24*time.Hour)), 10) + "d"
	}
	s := td.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// templates are a rule's parsed title and summary.
type templates struct {
	title, summary *template.Template
	errors         atomic.Uint64
}

var templateFuncs = template.FuncMap{
	"join": func(v any, sep string) string {
		switch x := v.(type) {
		case []string:
			return strings.Join(x, sep)
		case []any:
			parts := make([]string, len(x))
			for i, e := range x {
				parts[i] = fmt.Sprint(e)
			}
			return strings.Join(parts, sep)
		case nil:
			return ""
		}
		return fmt.Sprint(v)
	},
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
	// Arithmetic on numbers (and numeric text), for summaries that say
	// what `when` computed: {{ mul 100 (div .x .y) | printf "%.0f" }}.
	// A value that is no number counts as 0; a division by 0 gives 0.
	"add": func(a, b any) float64 { return tnum(a) + tnum(b) },
	"sub": func(a, b any) float64 { return tnum(a) - tnum(b) },
	"mul": func(a, b any) float64 { return tnum(a) * tnum(b) },
	"div": func(a, b any) float64 {
		if tnum(b) == 0 {
			return 0
		}
		return tnum(a) / tnum(b)
	},
	// default gives d when v is nil (absent): {{ default 768 .x }}.
	"default": func(d, v any) any {
		if v == nil {
			return d
		}
		return v
	},
}

func tnum(v any) float64 {
	f, _ := Number(v)
	return f
}

var tmplErrRe = regexp.MustCompile(`^template: [^:]*:(\d+):(?:(\d+):)? ?(.*)$`)

// parseTemplate parses src; on error it returns the line within the
// template (1-based, 0 when unknown) and a message.
func parseTemplate(name, src string) (*template.Template, int, string) {
	t, err := template.New(name).Funcs(templateFuncs).Option("missingkey=zero").Parse(src)
	if err == nil {
		return t, 0, ""
	}
	msg := err.Error()
	if m := tmplErrRe.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return nil, line, m[3]
	}
	return nil, 0, msg
}

// templateMap builds the map templates render from.
func (d *TemplateData) templateMap() map[string]any {
	return map[string]any{
		"node":     d.Node,
		"group":    d.Group,
		"count":    d.Count,
		"counts":   d.Counts,
		"window":   Duration(d.Window),
		"rule":     d.Rule,
		"severity": d.Severity,
		"first":    d.First,
		"last":     d.Last,
		"fields":   d.Fields,
		"values":   d.Values,
		"latest":   d.Latest,
		"rate":     d.Rate,
	}
}

// Render renders the rule's title and summary. It never fails: on a
// template error the title falls back to the rule id and the summary to "",
// and the error is counted (RenderErrors). An empty title template renders
// as the rule id.
func (r *Rule) Render(d TemplateData) (title, summary string) {
	if d.Rule == "" {
		d.Rule = r.ID
	}
	if d.Severity == "" {
		d.Severity = r.Severity
	}
	if d.Window == 0 {
		d.Window = r.Window
	}
	if r.tmpl == nil {
		return r.ID, ""
	}
	m := d.templateMap()
	m["params"] = r.Params
	title = r.ID
	if r.tmpl.title != nil {
		if s, ok := r.exec(r.tmpl.title, m); ok && strings.TrimSpace(s) != "" {
			title = s
		}
	}
	if r.tmpl.summary != nil {
		summary, _ = r.exec(r.tmpl.summary, m)
	}
	return title, summary
}

func (r *Rule) exec(t *template.Template, data map[string]any) (string, bool) {
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		r.tmpl.errors.Add(1)
		return "", false
	}
	// missingkey=zero prints "<no value>" for an absent key of a map of
	// interfaces (.fields.x); an operator wants nothing there.
	return strings.ReplaceAll(b.String(), "<no value>", ""), true
}

// RenderErrors returns how many template executions of the rule failed.
func (r *Rule) RenderErrors() uint64 {
	if r.tmpl == nil {
		return 0
	}
	return r.tmpl.errors.Load()
}
