package rules

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseDuration parses a Go duration ("90s", "1h30m") that may also use the
// unit d for days of 24 hours ("1d", "1d12h", "1.5d").
func ParseDuration(s string) (time.Duration, error) {
	in := s
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	neg := false
	if s[0] == '-' || s[0] == '+' {
		neg = s[0] == '-'
		s = s[1:]
	}
	var total time.Duration
	var rest strings.Builder
	for s != "" {
		// One number and its unit.
		i := 0
		for i < len(s) && (s[i] == '.' || s[i] >= '0' && s[i] <= '9') {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("invalid duration %q", in)
		}
		j := i
		for j < len(s) && s[j] != '.' && (s[j] < '0' || s[j] > '9') {
			j++
		}
		num, unit := s[:i], s[i:j]
		if unit == "d" {
			f, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("invalid duration %q", in)
			}
			d := f * float64(24*time.Hour)
			if d > float64(1<<62) {
				return 0, fmt.Errorf("duration %q out of range", in)
			}
			total += time.Duration(d)
		} else {
			rest.WriteString(s[:j])
		}
		s = s[j:]
	}
	if rest.Len() > 0 {
		d, err := time.ParseDuration(rest.String())
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", in)
		}
		total += d
	}
	if neg {
		total = -total
	}
	return total, nil
}

// formatDuration prints d the way rules write it: whole days as "d".
func formatDuration(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}
