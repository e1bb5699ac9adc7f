package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is how long the Watcher waits after the last change in
// the directory before it reloads.
const DefaultDebounce = 200 * time.Millisecond

// Watcher reloads a rules directory when its rule files change. It watches
// the directory itself (so editors that save by rename, and Windows, work),
// ignores hidden and temporary files and rule tests (*_test.yaml), and
// debounces bursts of changes. A set that loads cleanly is passed to
// onChange; a load error is passed to onError and the running set stays in
// place. onChange and onError are called from one goroutine at a time.
type Watcher struct {
	dir      string
	log      *slog.Logger
	onChange func(*Set)
	onError  func(error)
	fsw      *fsnotify.Watcher
	// Debounce is the quiet time before a reload (DefaultDebounce); set it
	// before Run.
	Debounce time.Duration

	mu       sync.Mutex // serialises reloads
	lastHash string
	closeMu  sync.Mutex
	closed   bool
}

// NewWatcher starts watching dir. log may be nil (slog.Default()); onError
// may be nil (errors are logged). It does not load the directory: the
// caller has loaded the running set already.
func NewWatcher(dir string, log *slog.Logger, onChange func(*Set), onError func(error)) (*Watcher, error) {
	if log == nil {
		log = slog.Default()
	}
	if onChange == nil {
		return nil, errors.New("rules: NewWatcher: onChange is nil")
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("rules: watch %s: %w", dir, err)
	}
	if err := fsw.Add(dir); err != nil {
		fsw.Close()
		return nil, fmt.Errorf("rules: watch %s: %w", dir, err)
	}
	return &Watcher{dir: dir, log: log, onChange: onChange, onError: onError, fsw: fsw, Debounce: DefaultDebounce}, nil
}

// Run reacts to changes until ctx is done, then stops watching and returns
// nil.
func (w *Watcher) Run(ctx context.Context) error {
	defer w.Close()
	debounce := w.Debounce
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return nil
			}
			if !relevant(ev) {
				continue
			}
			w.log.Debug("rule file changed", "file", ev.Name, "op", ev.Op.String())
			timer.Reset(debounce)
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return nil
			}
			w.log.Warn("watching rule files", "dir", w.dir, "err", err)
			// Events may have been lost: reload to be sure.
			timer.Reset(debounce)
		case <-timer.C:
			if err := w.reload(true); err != nil {
				if w.onError != nil {
					w.onError(err)
				} else {
					w.log.Error("rules not reloaded; the running rules stay in place", "dir", w.dir, "err", err)
				}
			}
		}
	}
}

func relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	return isRuleFile(filepath.Base(ev.Name))
}

// Reload loads the directory now (for SIGHUP or an HTTP endpoint) and
// passes the set to onChange. On error it returns the error (without
// calling onError) and the running set stays in place.
func (w *Watcher) Reload() error {
	return w.reload(false)
}

func (w *Watcher) reload(auto bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	set, err := LoadDir(w.dir)
	if err != nil {
		return err
	}
	set.Logger = w.log
	h := set.Hash()
	if auto && h == w.lastHash {
		w.log.Debug("rule files changed but the rules did not", "dir", w.dir)
		return nil
	}
	w.lastHash = h
	w.log.Info("rules loaded", "dir", w.dir, "rules", len(set.Rules), "files", len(set.Files()))
	w.onChange(set)
	return nil
}

// Close stops watching. Run calls it when it returns.
func (w *Watcher) Close() error {
	w.closeMu.Lock()
	defer w.closeMu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	return w.fsw.Close()
}
