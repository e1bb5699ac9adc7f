//go:build windows

package main

import "context"

// reloadSignal: Windows has no SIGHUP; rules reload on file change (and
// through the HTTP endpoint).
func reloadSignal(ctx context.Context) <-chan struct{} {
	return make(chan struct{})
}
