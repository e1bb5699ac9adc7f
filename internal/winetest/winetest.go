// Package winetest tells the tests of klaxon's Windows build that they run
// under Wine (make test-windows runs them there, .ci/wine), so that a test
// needing what Wine does not do skips saying so, while the rest of its
// package runs. Off Windows nothing runs under Wine.
package winetest

import "testing"

// Detected reports whether the process runs under Wine: ntdll exports
// wine_get_version there and nowhere else.
func Detected() bool { return version() != "" }

// Version is Wine's version ("8.0") under Wine, "" otherwise.
func Version() string { return version() }

// Skip skips t under Wine, giving why ("under Wine 8.0: " + why), and does
// nothing elsewhere.
func Skip(t testing.TB, why string) {
	t.Helper()
	if v := version(); v != "" {
		t.Skipf("under Wine %s: %s", v, why)
	}
}

// SkipLinuxProgram skips t under Wine when it would start the Linux program
// name (Debian package pkg): Wine shows the Linux file system (Z:), so the
// program looks installed, but a Windows process cannot start it.
func SkipLinuxProgram(t testing.TB, name, pkg string) {
	t.Helper()
	Skip(t, name+" is a Linux program (Debian package "+pkg+"); a Windows test binary cannot start it")
}
