package stdout

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
)

func TestFormat(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 1, 58, 35, 0, time.UTC)
	in := correlate.Incident{
		ID: "0123abcd", Rule: "nomad.task.crash_loop", Status: "firing", Severity: "error",
		Node: "vm", Group: map[string]string{"node": "vm", "fields.task": "app", "fields.job": ""},
		Title: "Task app is crash-looping on vm", Summary: "2 restarts\nand more", UpdatedAt: t0, Count: 3,
	}
	tests := []struct {
		format string
		check  func(string) bool
	}{
		{"text", func(s string) bool {
			// An unknown group value (a log line's job nobody named) is left out.
			return s == "2026-11-22T01:58:35Z FIRING   error    nomad.task.crash_loop node=vm task=app count=3: Task app is crash-looping on vm — 2 restarts and more [id=0123abcd]\n"
		}},
		{"json", func(s string) bool {
			var back correlate.Incident
			return json.Unmarshal([]byte(s), &back) == nil && back.ID == in.ID && back.Group["fields.task"] == "app" &&
				strings.Count(s, "\n") == 1 && strings.Contains(s, `"resolved_at":null`)
		}},
	}
	for _, tc := range tests {
		var buf bytes.Buffer
		s, err := New("stdout", &buf, tc.format)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Send(context.Background(), in); err != nil {
			t.Fatal(err)
		}
		if !tc.check(buf.String()) {
			t.Errorf("%s: got %q", tc.format, buf.String())
		}
	}
	if _, err := New("x", &bytes.Buffer{}, "yaml"); err == nil {
		t.Error("unknown format accepted")
	}
}
