package main

import (
	"archive/zip"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestZipDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "rules.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"klaxon": "#!binary", "rules.d/a.yaml": "rules: []\n"}
	for name, body := range files {
		mode := os.FileMode(0o644)
		if name == "klaxon" {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "klaxon_linux_amd64.zip")
	if err := zipDir(out, dir); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.OpenReader(out)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	got := map[string]string{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		got[f.Name] = string(b)
		if f.Name == "klaxon" && f.Mode().Perm()&0o111 == 0 {
			t.Errorf("klaxon lost its executable bit: %v", f.Mode())
		}
	}
	if len(got) != len(files) {
		t.Fatalf("archive holds %v", got)
	}
	for name, body := range files {
		if got[name] != body {
			t.Errorf("%s: %q", name, got[name])
		}
	}
}
