// Package redact keeps secrets out of text that is logged or shown.
package redact

import (
	"net/url"
	"strconv"
	"strings"
)

// Scrub replaces every secret in s (as is, path- and query-escaped, and
// quoted) by "<secret>"; secrets shorter than 4 bytes are left alone.
func Scrub(s string, secrets ...string) string {
	for _, sec := range secrets {
		if len(sec) < 4 {
			continue
		}
		for _, form := range []string{sec, url.PathEscape(sec), url.QueryEscape(sec), strconv.Quote(sec)} {
			s = strings.ReplaceAll(s, form, "<secret>")
		}
	}
	return s
}
