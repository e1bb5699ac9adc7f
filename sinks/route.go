package sinks

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/klaxon-dev/klaxon/correlate"
)

// Severities in increasing order.
var severityRank = map[string]int{"info": 0, "warning": 1, "warn": 1, "error": 2, "critical": 3}

// SeverityRank orders severities: info < warning < error < critical. An
// unknown severity ranks as critical, so a min_severity never hides it.
func SeverityRank(s string) int {
	if r, ok := severityRank[strings.ToLower(s)]; ok {
		return r
	}
	return 3
}

// RouteConfig selects the incident changes one sink receives. Every
// condition must hold. Fields are "rule", "node", "severity", "id",
// "labels.<name>" and "group.<key>"; a missing label or group key is the
// empty string.
//
// Route only looks at what is fixed for the life of an incident (never at
// status or count), so a resolved change goes to a sink if and only if the
// incident's firing change did.
type RouteConfig struct {
	// MinSeverity is the least severity delivered: info (default),
	// warning, error or critical.
	MinSeverity string `yaml:"min_severity"`
	// Match requires fields to equal values.
	Match map[string]string `yaml:"match"`
	// MatchRE requires fields to match regular expressions (RE2, anchored
	// at both ends like Alertmanager's match_re).
	MatchRE map[string]string `yaml:"match_re"`
}

// SetDefaults fills in MinSeverity.
func (c *RouteConfig) SetDefaults() {
	if c.MinSeverity == "" {
		c.MinSeverity = "info"
	}
}

// Validate checks the config; prefix names the enclosing key ("sinks[2]").
func (c *RouteConfig) Validate(prefix string) error {
	_, err := newRoute(*c, prefix)
	return err
}

// Route is a compiled RouteConfig. A nil *Route matches everything.
type Route struct {
	min      int
	matchers []matcher
}

type matcher struct {
	field string
	value string
	re    *regexp.Regexp
}

// NewRoute compiles a route.
func NewRoute(c RouteConfig) (*Route, error) {
	c.SetDefaults()
	return newRoute(c, "")
}

func newRoute(c RouteConfig, prefix string) (*Route, error) {
	key := func(k string) string {
		if prefix == "" {
			return k
		}
		return prefix + "." + k
	}
	var errs []error
	r := &Route{}
	if c.MinSeverity == "" {
		c.MinSeverity = "info"
	}
	rank, ok := severityRank[strings.ToLower(c.MinSeverity)]
	if !ok {
		errs = append(errs, fmt.Errorf("%s: %q: want info, warning, error or critical", key("min_severity"), c.MinSeverity))
	}
	r.min = rank
	for _, f := range slices.Sorted(maps.Keys(c.Match)) {
		if err := checkField(f); err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: %w", key("match"), f, err))
			continue
		}
		r.matchers = append(r.matchers, matcher{field: f, value: c.Match[f]})
	}
	for _, f := range slices.Sorted(maps.Keys(c.MatchRE)) {
		if err := checkField(f); err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: %w", key("match_re"), f, err))
			continue
		}
		re, err := regexp.Compile("^(?:" + c.MatchRE[f] + ")$")
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: %w", key("match_re"), f, err))
			continue
		}
		r.matchers = append(r.matchers, matcher{field: f, re: re})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

func checkField(f string) error {
	switch {
	case f == "rule", f == "node", f == "severity", f == "id":
		return nil
	case strings.HasPrefix(f, "labels.") && len(f) > len("labels."):
		return nil
	case strings.HasPrefix(f, "group.") && len(f) > len("group."):
		return nil
	}
	return fmt.Errorf("unknown field %q: want rule, node, severity, id, labels.<name> or group.<key>", f)
}

// Match reports whether the sink receives in.
func (r *Route) Match(in correlate.Incident) bool {
	if r == nil {
		return true
	}
	if SeverityRank(in.Severity) < r.min {
		return false
	}
	for _, m := range r.matchers {
		v := fieldValue(in, m.field)
		if m.re != nil {
			if !m.re.MatchString(v) {
				return false
			}
		} else if v != m.value {
			return false
		}
	}
	return true
}

func fieldValue(in correlate.Incident, f string) string {
	switch f {
	case "rule":
		return in.Rule
	case "node":
		return in.Node
	case "severity":
		return in.Severity
	case "id":
		return in.ID
	}
	if k, ok := strings.CutPrefix(f, "labels."); ok {
		return in.Labels[k]
	}
	if k, ok := strings.CutPrefix(f, "group."); ok {
		return in.Group[k]
	}
	return ""
}
