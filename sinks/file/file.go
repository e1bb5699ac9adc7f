// Package file appends incident changes to a JSON Lines file. Delivery is
// idempotent: changes already in the file (same incident, occurrence and
// sequence) are not written again, so a redelivery after a crash does not
// duplicate a line.
package file

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/klaxon-dev/klaxon/correlate"
)

// maxScan bounds how much of an existing file is read at open to learn
// which changes it holds.
const maxScan = 64 << 20

// Sink appends to a JSONL file.
type Sink struct {
	name string
	path string

	mu   sync.Mutex
	f    *os.File
	seen map[string]struct{}
}

// New opens (creating if needed) the JSONL file at path.
func New(name, path string) (*Sink, error) {
	if path == "" {
		return nil, fmt.Errorf("file sink %q: path is empty", name)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("file sink %q: %w", name, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("file sink %q: %w", name, err)
	}
	s := &Sink{name: name, path: path, f: f, seen: map[string]struct{}{}}
	if err := s.scan(); err != nil {
		f.Close()
		return nil, fmt.Errorf("file sink %q: %s: %w", name, path, err)
	}
	return s, nil
}

// scan learns the change ids already in the file (its last maxScan bytes).
func (s *Sink) scan() error {
	st, err := s.f.Stat()
	if err != nil {
		return err
	}
	off := max(st.Size()-maxScan, 0)
	r := bufio.NewReader(io.NewSectionReader(s.f, off, st.Size()-off))
	if off > 0 {
		_, _ = r.ReadString('\n') // partial first line
	}
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			var in correlate.Incident
			if json.Unmarshal(line, &in) == nil && in.ID != "" {
				s.seen[in.ChangeID()] = struct{}{}
			}
		} else if len(line) > 0 {
			// A torn last line from a crash mid-write: end it so the next
			// record starts on its own line.
			if _, err := s.f.Write([]byte("\n")); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Name implements sinks.Sink.
func (s *Sink) Name() string { return s.name }

// Send implements sinks.Sink: append one line and sync it.
func (s *Sink) Send(_ context.Context, in correlate.Incident) (bool, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := in.ChangeID()
	if _, dup := s.seen[id]; dup {
		return false, nil
	}
	if _, err := s.f.Write(append(b, '\n')); err != nil {
		return true, fmt.Errorf("file sink %q: %s: %w", s.name, s.path, err)
	}
	if err := s.f.Sync(); err != nil {
		return true, fmt.Errorf("file sink %q: %s: %w", s.name, s.path, err)
	}
	s.seen[id] = struct{}{}
	return false, nil
}

// Close implements sinks.Sink.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.Close()
}
