//go:build !unix && !windows

package nomadlog

import "os"

// fileID is not available here: files are known by their head fingerprint only.
func fileID(*os.File, os.FileInfo) (string, bool) { return "", false }
