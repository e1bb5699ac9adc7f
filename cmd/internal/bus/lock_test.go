package bus

import (
	"errors"
	"testing"
)

// A second embedded server on a data dir in use is refused (nats-server
// does not lock its store); after Close the dir is free again.
func TestEmbeddedDataDirLock(t *testing.T) {
	dir := t.TempDir()
	b := openEmbedded(t, Config{DataDir: dir})
	_, err := Open(testContext(t), Config{DataDir: dir}, newTestLogger(t))
	if !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("second Open on %s: %v, want ErrDataDirInUse", dir, err)
	}
	closeBus(t, b)
	b2 := openEmbedded(t, Config{DataDir: dir})
	if !b2.Embedded() {
		t.Error("not embedded")
	}
}
