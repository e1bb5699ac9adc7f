package externaltest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
)

// The real Nomad 2.0.5 of ../shared/tools/nomad (beside the repository):
// linux/amd64, xz-compressed (see that folder's README).
const (
	nomadArchive      = "nomad_2.0.5_linux_amd64.xz"
	nomadBinarySHA256 = "3fb8681cd3080f9816c5fd47bf24833c6a1ecf57fa6610e0bb044a887c090e6d"
)

var (
	nomadOnce sync.Once
	nomadPath string
	nomadErr  error
)

// NomadArchive returns the path of the Nomad archive: ../shared/tools/nomad
// beside the module's root (found from the working directory up).
func NomadArchive() string {
	dir, _ := os.Getwd()
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(filepath.Dir(d), "shared", "tools", "nomad", nomadArchive)
		}
		if filepath.Dir(d) == d {
			return filepath.Join("..", "shared", "tools", "nomad", nomadArchive)
		}
	}
}

// NomadBinary unpacks the Nomad binary once into the user cache (checked
// against its sha256) and returns its path. The test skips only when the
// archive is absent (or on a system the linux/amd64 binary does not run
// on); a bad archive fails it.
func NomadBinary(t testing.TB) string {
	t.Helper()
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skipf("the Nomad binary is linux/amd64, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	archive := NomadArchive()
	if _, err := os.Stat(archive); err != nil {
		t.Skipf("no Nomad binary at %s: %v", archive, err)
	}
	nomadOnce.Do(func() { nomadPath, nomadErr = unpackNomad(archive) })
	if nomadErr != nil {
		t.Fatal(nomadErr)
	}
	return nomadPath
}

func unpackNomad(archive string) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "klaxon-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, "nomad-2.0.5")
	if b, err := os.ReadFile(p); err == nil && sha(b) == nomadBinarySHA256 {
		return p, nil
	}
	out, err := exec.Command("xz", "-dc", archive).Output()
	if err != nil {
		return "", fmt.Errorf("xz -dc %s: %v (Debian package xz-utils)", archive, err)
	}
	if got := sha(out); got != nomadBinarySHA256 {
		return "", fmt.Errorf("nomad binary sha256 %s, want %s", got, nomadBinarySHA256)
	}
	tmp := p + ".tmp" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, out, 0o755); err != nil {
		return "", err
	}
	return p, os.Rename(tmp, p)
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
