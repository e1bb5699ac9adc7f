package main

import (
	"fmt"
	"io"
	"runtime"
)

func cmdVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "klaxon version", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "klaxon %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
