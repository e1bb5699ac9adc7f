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
