package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Checkpoints is a file of source positions (file offsets, stream indexes,
// record ids), keyed by a source-chosen string. Writes are atomic: the file
// is written beside the target, synced, then renamed over it, so a crash
// leaves either the old or the new content, never a torn file.
type Checkpoints struct {
	path string

	mu        sync.Mutex
	state     map[string]json.RawMessage
	dirty     bool
	lastFlush time.Time
}

// OpenCheckpoints reads the checkpoint file at path (absent is empty).
func OpenCheckpoints(path string) (*Checkpoints, error) {
	c := &Checkpoints{path: path, state: map[string]json.RawMessage{}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return c, nil
	case err != nil:
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	if len(b) == 0 {
		return c, nil
	}
	if err := json.Unmarshal(b, &c.state); err != nil {
		return nil, fmt.Errorf("checkpoints: %s: %w", path, err)
	}
	return c, nil
}

// Get decodes the position stored under key into v; ok is false when none is stored.
func (c *Checkpoints) Get(key string, v any) (ok bool, err error) {
	c.mu.Lock()
	raw, found := c.state[key]
	c.mu.Unlock()
	if !found {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("checkpoints: %s: key %q: %w", c.path, key, err)
	}
	return true, nil
}

// Set stores v under key in memory; Flush writes it out.
func (c *Checkpoints) Set(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.state[key] = b
	c.dirty = true
	c.mu.Unlock()
	return nil
}

// Delete forgets key.
func (c *Checkpoints) Delete(key string) {
	c.mu.Lock()
	if _, ok := c.state[key]; ok {
		delete(c.state, key)
		c.dirty = true
	}
	c.mu.Unlock()
}

// Flush writes the positions atomically when anything changed since the last flush.
func (c *Checkpoints) Flush() error {
	c.mu.Lock()
	if !c.dirty {
		c.mu.Unlock()
		return nil
	}
	b, err := json.MarshalIndent(c.state, "", "  ")
	c.dirty = false
	c.lastFlush = time.Now()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(c.path, b, 0o600); err != nil {
		c.mu.Lock()
		c.dirty = true
		c.mu.Unlock()
		return fmt.Errorf("checkpoints: %w", err)
	}
	return nil
}

// LastFlush returns when positions were last written (zero: never).
func (c *Checkpoints) LastFlush() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastFlush
}

// WriteFileAtomic writes data to path through a synced temporary file in the
// same directory and a rename.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // directory entry; not supported everywhere
		d.Close()
	}
	return nil
}
