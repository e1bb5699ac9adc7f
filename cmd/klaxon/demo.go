package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// hclogTime is the timestamp layout of hclog text lines.
const hclogTime = "2006-01-02T15:04:05.000Z0700"

func cmdDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", "klaxon demo [--from DIR] --out DIR", stderr)
	from := fs.String("from", "deploy/demo/logs", "directory of the bundled demo logs")
	out := fs.String("out", "data/demo/logs", "directory to write the demo logs to")
	if err := parse(fs, args); err != nil {
		return err
	}
	n, err := writeDemo(*from, *out, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d demo logs to %s with timestamps ending now\n", n, *out)
	return nil
}

// writeDemo copies the *.log files of from into out, shifting every hclog
// timestamp by one offset so that the newest line of all files is now.
func writeDemo(from, out string, now time.Time) (int, error) {
	files, err := filepath.Glob(filepath.Join(from, "*.log"))
	if err != nil {
		return 0, err
	}
	if len(files) == 0 {
		return 0, fmt.Errorf("demo: no *.log in %s", from)
	}
	sort.Strings(files)
	contents := make([][]byte, len(files))
	var newest time.Time
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		contents[i] = b
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if t, ok := lineTime(sc.Bytes()); ok && t.After(newest) {
				newest = t
			}
		}
	}
	shift := now.Sub(newest)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return 0, err
	}
	for i, f := range files {
		var buf bytes.Buffer
		sc := bufio.NewScanner(bytes.NewReader(contents[i]))
		for sc.Scan() {
			line := sc.Bytes()
			if t, ok := lineTime(line); ok {
				buf.WriteString(t.Add(shift).UTC().Format(hclogTime))
				line = line[bytes.IndexByte(line, ' '):]
			}
			buf.Write(line)
			buf.WriteByte('\n')
		}
		if err := os.WriteFile(filepath.Join(out, filepath.Base(f)), buf.Bytes(), 0o644); err != nil {
			return 0, err
		}
	}
	return len(files), nil
}

func lineTime(line []byte) (time.Time, bool) {
	i := bytes.IndexByte(line, ' ')
	if i < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(hclogTime, string(line[:i]))
	return t, err == nil
}
