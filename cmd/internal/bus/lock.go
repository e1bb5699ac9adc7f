package bus

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// LockFile is the file in the data directory that the process running the
// embedded server holds locked: nats-server does not lock its store, and
// two servers on one store would corrupt it.
const LockFile = "klaxon.lock"

// ErrDataDirInUse is returned by Open when another process (a running
// `klaxon run`) holds the embedded server's data directory.
var ErrDataDirInUse = errors.New("data_dir is in use by another klaxon process")

// dirLock is an exclusive, advisory lock on <dir>/klaxon.lock, released by
// unlock or when the process ends (also on SIGKILL).
type dirLock struct{ f *os.File }

func lockDataDir(dir string) (*dirLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, fmt.Errorf("%w (%s is locked)", ErrDataDirInUse, path)
		}
		return nil, fmt.Errorf("data_dir: lock %s: %w", path, err)
	}
	_ = f.Truncate(0)
	_, _ = fmt.Fprintf(f, "%d\n", os.Getpid())
	return &dirLock{f: f}, nil
}

func (l *dirLock) unlock() {
	if l == nil || l.f == nil {
		return
	}
	_ = unlockFile(l.f)
	_ = l.f.Close()
	l.f = nil
}

var errLocked = errors.New("locked")
