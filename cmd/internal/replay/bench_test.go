package replay

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/internal/testkit"
)

// benchLines is the size of the generated log (the issue asks for at least 1,000,000).
const benchLines = 1_000_000

var (
	benchOnce sync.Once
	benchPath string
	benchErr  error
)

// generateBenchLog writes benchLines lines built from testkit.NomadLineShapes, in time order.
func generateBenchLog(dir string) (string, error) {
	path := filepath.Join(dir, "bench-nomad.log")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	t := time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC)
	allocs := make([]string, 64)
	for i := range allocs {
		allocs[i] = fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", r.Uint32(), r.Uint32()&0xffff, r.Uint32()&0xffff, r.Uint32()&0xffff, r.Uint64()&0xffffffffffff)
	}
	for i := 0; i < benchLines; i++ {
		t = t.Add(time.Duration(r.IntN(20)) * time.Millisecond)
		shape := testkit.NomadLineShapes[r.IntN(len(testkit.NomadLineShapes))]
		ts := t.Format("2006-01-02T15:04:05.000Z0700")
		if shape[0] == '{' {
			ts = t.Format("2006-01-02T15:04:05.000000Z07:00")
		}
		fmt.Fprintf(w, shape, ts, allocs[r.IntN(len(allocs))], r.IntN(100000))
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		return "", err
	}
	return path, f.Close()
}

func benchLog(b *testing.B) string {
	benchOnce.Do(func() {
		dir, err := os.MkdirTemp("", "klaxon-bench")
		if err != nil {
			benchErr = err
			return
		}
		benchPath, benchErr = generateBenchLog(dir)
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchPath
}

// BenchmarkReplay replays the generated log through all bundled rules.
func BenchmarkReplay(b *testing.B) {
	path := benchLog(b)
	set := bundledRules(b)
	b.ResetTimer()
	var lines int64
	for b.Loop() {
		st, err := Run(context.Background(), []string{path}, Options{Rules: set, Out: io.Discard, Log: quiet()})
		if err != nil {
			b.Fatal(err)
		}
		if st.Lines != benchLines || st.Incidents == 0 {
			b.Fatalf("stats %+v", st)
		}
		lines += st.Lines
	}
	b.ReportMetric(float64(lines)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkGrepCount is the reference: `grep -c` on the same file.
func BenchmarkGrepCount(b *testing.B) {
	path := benchLog(b)
	if _, err := exec.LookPath("grep"); err != nil {
		b.Skip("grep not found")
	}
	b.ResetTimer()
	var lines int64
	for b.Loop() {
		out, err := exec.Command("grep", "-c", "client.gc", path).Output()
		if err != nil {
			b.Fatal(err)
		}
		if len(out) == 0 {
			b.Fatal("no output")
		}
		lines += benchLines
	}
	b.ReportMetric(float64(lines)/b.Elapsed().Seconds(), "lines/s")
}
