//go:build !windows

package ingest

import "os"

// OpenShared opens a file for reading (on Windows without keeping its
// writer from renaming or deleting it).
func OpenShared(path string) (*os.File, error) { return os.Open(path) }
