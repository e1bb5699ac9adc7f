// Package stdout prints incident changes to a writer: one readable line per
// change, or one JSON object per line.
package stdout

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
)

// Formats accepted by New and Format.
const (
	FormatText = "text"
	FormatJSON = "json"
)

// Sink writes incident changes to W.
type Sink struct {
	name   string
	format string
	mu     sync.Mutex
	w      io.Writer
}

// New returns a sink writing to w in format (text or json).
func New(name string, w io.Writer, format string) (*Sink, error) {
	if format == "" {
		format = FormatText
	}
	if format != FormatText && format != FormatJSON {
		return nil, fmt.Errorf("stdout sink %q: format %q: want text or json", name, format)
	}
	return &Sink{name: name, format: format, w: w}, nil
}

// Name implements sinks.Sink.
func (s *Sink) Name() string { return s.name }

// Send implements sinks.Sink. A write error is retryable.
func (s *Sink) Send(_ context.Context, in correlate.Incident) (bool, error) {
	b, err := Format(in, s.format)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.w.Write(b); err != nil {
		return true, err
	}
	return false, nil
}

// Close implements sinks.Sink.
func (s *Sink) Close() error { return nil }

// Format renders one change as a line (with its newline).
func Format(in correlate.Incident, format string) ([]byte, error) {
	if format == FormatJSON {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		return append(b, '\n'), nil
	}
	var b strings.Builder
	b.WriteString(in.UpdatedAt.UTC().Format(time.RFC3339))
	b.WriteByte(' ')
	fmt.Fprintf(&b, "%-8s %-8s %s", strings.ToUpper(in.Status), in.Severity, in.Rule)
	keys := make([]string, 0, len(in.Group))
	for k := range in.Group {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if (keys[i] == "node") != (keys[j] == "node") {
			return keys[i] == "node" // node first
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		if in.Group[k] == "" && k != "node" {
			continue // unknown (a log line's job no stream or agent named)
		}
		// "fields.prev_node|node" shows as its last alternative: node.
		name := k[strings.LastIndexByte(k, '|')+1:]
		fmt.Fprintf(&b, " %s=%s", strings.TrimPrefix(name, "fields."), quoteIfNeeded(in.Group[k]))
	}
	fmt.Fprintf(&b, " count=%d: %s", in.Count, oneLine(in.Title))
	if in.Summary != "" {
		b.WriteString(" — ")
		b.WriteString(oneLine(in.Summary))
	}
	fmt.Fprintf(&b, " [id=%s]\n", in.ID)
	return []byte(b.String()), nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\"=") {
		return fmt.Sprintf("%q", s)
	}
	return s
}
