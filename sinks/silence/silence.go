// Package silence keeps silences — "do not page about incidents matching
// these matchers until then" — in a NATS KV bucket (KLAXON_SILENCES), and
// implements sinks.Silencer on top of it for the sink dispatchers.
//
// A silence is Alertmanager's in a simple form: matchers on incident fields
// (rule, node, severity, id, labels.<name>, group.<key>; a bare name is a
// label, else a group key), all of which must match, and a time range
// [starts_at, ends_at). The matchers follow Alertmanager's grammar: = and
// != compare the whole value (no wildcards), =~ and !~ take an RE2
// expression anchored at both ends. Expiring a silence sets its end to
// now; expired silences are kept for Retention, then pruned.
package silence

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/sinks"
)

// Matcher operators, as in Alertmanager.
const (
	OpEqual    = "="  // equal: the whole value, literally (* and ? are plain characters)
	OpNotEqual = "!=" // not equal
	OpRegexp   = "=~" // matches the RE2 expression, anchored at both ends
	OpNotRegex = "!~" // does not match it
)

// Matcher tests one field of an incident.
type Matcher struct {
	Name  string `json:"name"`
	Op    string `json:"op"`
	Value string `json:"value"`

	re *regexp.Regexp
}

// ParseMatcher parses "name=value", "name!=value", "name=~regexp" or
// "name!~regexp", as amtool does. A value in double quotes is unquoted
// (Go/Alertmanager escapes: \" \\ \n).
func ParseMatcher(s string) (Matcher, error) {
	i := strings.IndexAny(s, "=!")
	if i <= 0 {
		return Matcher{}, fmt.Errorf("matcher %q: want name=value, name!=value, name=~regexp or name!~regexp", s)
	}
	name, rest := strings.TrimSpace(s[:i]), s[i:]
	var m Matcher
	switch {
	case strings.HasPrefix(rest, "=~"):
		m.Op, rest = OpRegexp, rest[2:]
	case strings.HasPrefix(rest, "!~"):
		m.Op, rest = OpNotRegex, rest[2:]
	case strings.HasPrefix(rest, "!="):
		m.Op, rest = OpNotEqual, rest[2:]
	case strings.HasPrefix(rest, "="):
		m.Op, rest = OpEqual, rest[1:]
	default:
		return Matcher{}, fmt.Errorf("matcher %q: want name=value, name!=value, name=~regexp or name!~regexp", s)
	}
	m.Name = name
	m.Value = strings.TrimSpace(rest)
	if len(m.Value) >= 2 && m.Value[0] == '"' && m.Value[len(m.Value)-1] == '"' {
		v, err := strconv.Unquote(m.Value)
		if err != nil {
			return Matcher{}, fmt.Errorf("matcher %q: bad quoted value: %w", s, err)
		}
		m.Value = v
	}
	if err := m.compile(); err != nil {
		return Matcher{}, err
	}
	return m, nil
}

// compile checks the matcher and prepares its expression.
func (m *Matcher) compile() error {
	if m.Name == "" || strings.ContainsAny(m.Name, " \t=!~") {
		return fmt.Errorf("matcher %q: bad name", m.String())
	}
	switch m.Op {
	case OpEqual, OpNotEqual:
	case OpRegexp, OpNotRegex:
		re, err := regexp.Compile("^(?:" + m.Value + ")$")
		if err != nil {
			return fmt.Errorf("matcher %q: %w", m.String(), err)
		}
		m.re = re
	default:
		return fmt.Errorf("matcher %q: unknown operator %q", m.String(), m.Op)
	}
	return nil
}

// String is the matcher as ParseMatcher reads it: the value is quoted when
// it holds white space or a double quote.
func (m Matcher) String() string {
	v := m.Value
	if strings.ContainsAny(v, " \t\n\"") {
		v = strconv.Quote(v)
	}
	return m.Name + m.Op + v
}

// LooksLikeGlob reports an = or != matcher whose value holds * or ?: they
// match literally (Alertmanager's grammar), which is rarely what was
// meant; =~ takes a pattern.
func (m Matcher) LooksLikeGlob() bool {
	return (m.Op == OpEqual || m.Op == OpNotEqual) && strings.ContainsAny(m.Value, "*?")
}

// Matches reports whether the incident's field passes the matcher.
func (m *Matcher) Matches(in correlate.Incident) bool {
	v := fieldValue(in, m.Name)
	switch m.Op {
	case OpEqual, OpNotEqual:
		return (v == m.Value) == (m.Op == OpEqual)
	case OpRegexp, OpNotRegex:
		if m.re == nil {
			return false // not compiled (Validate compiles)
		}
		return m.re.MatchString(v) == (m.Op == OpRegexp)
	}
	return false
}

// fieldValue reads a matcher field: the route fields of sinks, and a bare
// name as a label, else a group key.
func fieldValue(in correlate.Incident, name string) string {
	switch {
	case name == "rule", name == "node", name == "severity", name == "id",
		strings.HasPrefix(name, "labels."), strings.HasPrefix(name, "group."):
		return sinks.FieldValue(in, name)
	}
	if v, ok := in.Labels[name]; ok {
		return v
	}
	return in.Group[name]
}

// Silence mutes the incidents its matchers all match between StartsAt and
// EndsAt.
type Silence struct {
	ID        string    `json:"id"`
	Matchers  []Matcher `json:"matchers"`
	StartsAt  time.Time `json:"starts_at"`
	EndsAt    time.Time `json:"ends_at"`
	CreatedBy string    `json:"created_by"`
	Comment   string    `json:"comment"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Silence states.
const (
	StatePending = "pending"
	StateActive  = "active"
	StateExpired = "expired"
)

// State is pending before StartsAt, active until EndsAt, then expired.
func (s *Silence) State(now time.Time) string {
	switch {
	case now.Before(s.StartsAt):
		return StatePending
	case now.Before(s.EndsAt):
		return StateActive
	}
	return StateExpired
}

// Matches reports whether every matcher matches in (whatever the time).
func (s *Silence) Matches(in correlate.Incident) bool {
	for i := range s.Matchers {
		if !s.Matchers[i].Matches(in) {
			return false
		}
	}
	return len(s.Matchers) > 0
}

// Validate checks the silence and compiles its matchers.
func (s *Silence) Validate() error {
	var errs []error
	if len(s.Matchers) == 0 {
		errs = append(errs, errors.New("at least one matcher is required"))
	}
	for i := range s.Matchers {
		if err := s.Matchers[i].compile(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.StartsAt.IsZero() || s.EndsAt.IsZero() {
		errs = append(errs, errors.New("starts_at and ends_at are required"))
	} else if s.EndsAt.Before(s.StartsAt) {
		errs = append(errs, fmt.Errorf("ends_at %s is before starts_at %s", s.EndsAt.Format(time.RFC3339), s.StartsAt.Format(time.RFC3339)))
	}
	if s.ID != "" && !validID(s.ID) {
		errs = append(errs, fmt.Errorf("id %q: letters, digits, - and _ only", s.ID))
	}
	if err := errors.Join(errs...); err != nil {
		if s.ID != "" {
			return fmt.Errorf("silence %s: %w", s.ID, err)
		}
		return fmt.Errorf("silence: %w", err)
	}
	return nil
}

func validID(id string) bool {
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return id != "" && len(id) <= 64
}

// newID returns a random UUID (version 4) as silence id.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
