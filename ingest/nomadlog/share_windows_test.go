package nomadlog

import (
	"os"
	"syscall"
	"testing"
)

// openAppendShared opens path for appending as a writer that lets its log
// be rotated under it: with FILE_SHARE_DELETE, without which Windows
// refuses to rename or delete a file while it is open (os.OpenFile does
// not share delete).
func openAppendShared(t *testing.T, path string) *os.File {
	t.Helper()
	p, err := syscall.UTF16PtrFromString(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := syscall.CreateFile(p, syscall.FILE_APPEND_DATA|syscall.SYNCHRONIZE,
		syscall.FILE_SHARE_READ|syscall.FILE_SHARE_WRITE|syscall.FILE_SHARE_DELETE,
		nil, syscall.OPEN_EXISTING, syscall.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return os.NewFile(uintptr(h), path)
}

// lockExclusive makes path unreadable to others, as Windows does: it holds
// the file open sharing nothing until unlock is called.
func lockExclusive(t *testing.T, path string) (unlock func()) {
	t.Helper()
	p, err := syscall.UTF16PtrFromString(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := syscall.CreateFile(p, syscall.GENERIC_READ, 0, nil, syscall.OPEN_EXISTING, syscall.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	f := os.NewFile(uintptr(h), path)
	t.Cleanup(func() { f.Close() })
	return func() { f.Close() }
}
