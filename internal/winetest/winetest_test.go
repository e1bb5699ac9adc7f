package winetest

import (
	"os"
	"runtime"
	"testing"
)

// TestDetected: make test-windows sets KLAXON_EXPECT_WINE=1; elsewhere the
// process is not under Wine.
func TestDetected(t *testing.T) {
	t.Logf("GOOS %s, Wine %q", runtime.GOOS, Version())
	want := os.Getenv("KLAXON_EXPECT_WINE") == "1"
	if Detected() != want {
		t.Errorf("Detected() = %v, want %v (KLAXON_EXPECT_WINE=%q)", Detected(), want, os.Getenv("KLAXON_EXPECT_WINE"))
	}
	if runtime.GOOS != "windows" && Detected() {
		t.Error("Wine detected off Windows")
	}
}
