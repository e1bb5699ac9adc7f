//go:build unix

package nomadlog

import (
	"os"
	"strconv"
	"syscall"
)

// fileID returns the device and inode of an open file.
func fileID(f *os.File, fi os.FileInfo) (string, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", false
	}
	return "d" + strconv.FormatUint(uint64(st.Dev), 16) + "-i" + strconv.FormatUint(uint64(st.Ino), 16), true
}
