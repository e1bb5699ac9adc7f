//go:build windows

package ingest

import (
	"os"
	"syscall"
)

// OpenShared opens a file for reading with FILE_SHARE_READ|WRITE|DELETE,
// so that its writer keeps writing, renaming or deleting it while it is
// read: the Nomad agent rotating its log file, the Event Log service its
// channel files.
func OpenShared(path string) (*os.File, error) {
	p, err := syscall.UTF16PtrFromString(path)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	h, err := syscall.CreateFile(p, syscall.GENERIC_READ,
		syscall.FILE_SHARE_READ|syscall.FILE_SHARE_WRITE|syscall.FILE_SHARE_DELETE,
		nil, syscall.OPEN_EXISTING, syscall.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(h), path), nil
}
