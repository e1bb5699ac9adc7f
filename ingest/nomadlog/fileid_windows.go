//go:build windows

package nomadlog

import (
	"os"
	"strconv"
	"syscall"
)

// fileID returns the volume serial number and file index of an open file.
func fileID(f *os.File, _ os.FileInfo) (string, bool) {
	var d syscall.ByHandleFileInformation
	if err := syscall.GetFileInformationByHandle(syscall.Handle(f.Fd()), &d); err != nil {
		return "", false
	}
	idx := uint64(d.FileIndexHigh)<<32 | uint64(d.FileIndexLow)
	return "v" + strconv.FormatUint(uint64(d.VolumeSerialNumber), 16) + "-x" + strconv.FormatUint(idx, 16), true
}

// openShared opens a file for reading with FILE_SHARE_DELETE, so that the
// agent can still rename or delete its log file (rotation) while we read it.
func openShared(path string) (*os.File, error) {
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
