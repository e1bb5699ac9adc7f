package rules

import (
	"context"
	"log/slog"
)

// WatchDir reloads the rules of dir on file changes and on reload
// requests, handing good sets to apply; a set that does not load is
// logged and the running one stays. It returns the reload function of POST
// /-/reload and the function that stops watching.
func WatchDir(dir string, apply func(*Set), requests <-chan struct{}, log *slog.Logger) (reload func() error, stop func()) {
	watcher, err := NewWatcher(dir, log, apply, func(err error) {
		log.Error("rules not reloaded; the running rules stay in place", "err", err)
	})
	if err != nil {
		log.Warn("rule file watching unavailable; reload with SIGHUP", "err", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	if watcher != nil {
		go func() { _ = watcher.Run(ctx) }()
	}
	reload = func() error {
		if watcher != nil {
			return watcher.Reload()
		}
		s, err := LoadDir(dir)
		if err != nil {
			return err
		}
		apply(s)
		return nil
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-requests:
				if err := reload(); err != nil {
					log.Error("rules not reloaded; the running rules stay in place", "err", err)
				}
			}
		}
	}()
	return reload, stop
}
