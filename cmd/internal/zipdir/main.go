// Command zipdir writes a zip archive of a directory's contents (used by
// `make dist` for the release archives the Nomad jobs download; Go's
// archive/zip instead of a zip program the build machine may lack).
//
//	go run ./cmd/internal/zipdir OUT.zip DIR
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: zipdir OUT.zip DIR")
		os.Exit(2)
	}
	if err := zipDir(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "zipdir:", err)
		os.Exit(1)
	}
}
