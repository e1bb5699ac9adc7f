package main

import (
	"archive/zip"
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// zipDir writes the files below dir to the zip archive out, with paths
// relative to dir and their modes (the executable bit matters to Nomad's
// artifact unpacking). Windows keeps no mode bits (a file is 0666 or
// 0444 there), so an archive made on Windows gets Unix modes by content:
// 0755 for a program (ELF, Mach-O, #! script), 0644 for the rest.
func zipDir(out, dir string) (err error) {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	zw := zip.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := zip.FileInfoHeader(info)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		hdr.Method = zip.Deflate
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		head := make([]byte, 4)
		n, err := io.ReadFull(src, head)
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return err
		}
		head = head[:n]
		if runtime.GOOS == "windows" {
			mode := fs.FileMode(0o644)
			if isProgram(head) {
				mode = 0o755
			}
			hdr.SetMode(mode)
		}
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			return err
		}
		_, err = io.Copy(w, io.MultiReader(bytes.NewReader(head), src))
		return err
	})
	if err != nil {
		return err
	}
	return zw.Close()
}

// isProgram reports whether a file starting with head is a Unix program:
// an ELF or Mach-O executable or a #! script.
func isProgram(head []byte) bool {
	for _, magic := range []string{"\x7fELF", "\xfe\xed\xfa\xce", "\xfe\xed\xfa\xcf", "\xce\xfa\xed\xfe", "\xcf\xfa\xed\xfe", "#!"} {
		if bytes.HasPrefix(head, []byte(magic)) {
			return true
		}
	}
	return false
}
