package rules

import (
	"fmt"
	"strings"
)

// PosError is one load error, located in its rule file. Loading joins every
// error of a file (errors.Join), so callers can list them with errors.As on
// each joined error or by unwrapping with interface{ Unwrap() []error }.
type PosError struct {
	File      string
	Line, Col int
	// Rule is the id of the rule the error belongs to ("" for file-level
	// errors; "#N" when the rule has no id).
	Rule string
	Msg  string
}

// Error formats the error as "file:line:col: rule <id>: <msg>".
func (e *PosError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Col)
	}
	b.WriteString(": ")
	if e.Rule != "" {
		b.WriteString("rule ")
		b.WriteString(e.Rule)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors flattens an error returned by the loaders into its *PosError
// parts, in order. Errors that are not *PosError are wrapped in one without
// position.
func Errors(err error) []*PosError {
	if err == nil {
		return nil
	}
	var out []*PosError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case *PosError:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		default:
			out = append(out, &PosError{Msg: err.Error()})
		}
	}
	walk(err)
	return out
}

// suggest returns the candidate closest to word when it is close enough to
// be a likely typo.
func suggest(word string, candidates []string) string {
	best, bestD := "", 1<<30
	for _, c := range candidates {
		d := editDistance(strings.ToLower(word), strings.ToLower(c))
		if d < bestD {
			best, bestD = c, d
		}
	}
	if len(word) < 3 {
		return ""
	}
	limit := 2
	if len(word) == 3 {
		limit = 1
	}
	if bestD <= limit || (bestD <= 3 && len(word) >= 8) {
		return best
	}
	return ""
}

// editDistance is the Levenshtein distance of a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
