package file

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
)

func TestFileSinkIsIdempotentAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "incidents.jsonl")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := correlate.Incident{ID: "abc", Rule: "r", Status: "firing", StartedAt: t0, Seq: 1}
	s, err := New("f", path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := s.Send(context.Background(), in); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	// A torn line from a crash mid-write.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"id":"torn`)
	f.Close()

	s, err = New("f", path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Send(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	upd := in
	upd.Status, upd.Seq = "updated", 2
	if _, err := s.Send(context.Background(), upd); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 {
		t.Fatalf("want firing, torn, updated lines; got %d:\n%s", len(lines), b)
	}
	if !strings.Contains(lines[0], `"status":"firing"`) || lines[1] != `{"id":"torn` || !strings.Contains(lines[2], `"status":"updated"`) {
		t.Fatalf("unexpected content:\n%s", b)
	}
}

func TestFileSinkErrors(t *testing.T) {
	if _, err := New("f", ""); err == nil || !strings.Contains(err.Error(), `"f"`) {
		t.Fatalf("empty path: %v", err)
	}
	dir := t.TempDir()
	if _, err := New("f", dir); err == nil {
		t.Fatal("a directory as path must fail")
	}
}
