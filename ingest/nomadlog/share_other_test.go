//go:build !windows

package nomadlog

import (
	"os"
	"testing"
)

// openAppendShared opens path for appending (Unix lets a file be renamed
// or removed while it is open).
func openAppendShared(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// lockExclusive makes path unreadable to others: mode 000 until unlock.
func lockExclusive(t *testing.T, path string) (unlock func()) {
	t.Helper()
	if os.Geteuid() == 0 {
		t.Skip("root can read a mode 000 file")
	}
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
