package nomadlog

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// shapes are the line shapes of the crashloop capture (Nomad 2.0.5, text,
// DEBUG), in about the proportions they have there; %[1]s is an alloc id,
// %[2]d a counter.
var shapes = []string{
	`[DEBUG] client.driver_mgr.raw_exec.executor: launching command: driver=raw_exec task_name=app command=/bin/sh args=["-c", "sleep 2; exit 1"]`,
	`[INFO]  client.alloc_runner.task_runner: Task event: alloc_id=%[1]s task=app type=Terminated msg="Exit Code: 1" failed=false`,
	`[INFO]  client.alloc_runner.task_runner: restarting task: alloc_id=%[1]s task=app reason="Restart within policy" delay=16.83s`,
	`[DEBUG] client: updated allocations: index=%[2]d total=14 pulled=1 filtered=13`,
	`[DEBUG] client: allocation updates: added=0 removed=0 updated=1 ignored=13`,
	`[DEBUG] client: allocation updates applied: added=0 removed=0 updated=1 ignored=13 errors=0`,
	`[WARN]  client.gc: garbage collection skipped because no terminal allocations: reason="number of allocations (14) is over the limit (6)"`,
	`[INFO]  client.gc: garbage collecting allocation: alloc_id=%[1]s reason="number of allocations (14) is over the limit (6)"`,
	`[DEBUG] client.alloc_runner.task_runner.task_hook.logmon.nomad: opening fifo: alloc_id=%[1]s task=app @module=logmon path=/tmp/NomadClient/%[1]s/alloc/logs/.app.stdout.fifo timestamp=2026-11-22T01:58:24.772Z`,
	`[DEBUG] client.alloc_runner.task_runner.task_hook.logmon: plugin started: alloc_id=%[1]s task=app path=/opt/nomad/bin/nomad pid=%[2]d`,
	`[DEBUG] worker: dequeued evaluation: worker_id=b9a6edad-4128-7b17-d71b-4a5eab1901a0 eval_id=%[1]s type=service namespace=default job_id=crashloop node_id="" triggered_by=alloc-failure`,
	`[DEBUG] http: request complete: method=GET path=/v1/allocation/%[1]s duration="297.611µs"`,
	`[INFO]  nomad: serf: EventMemberJoin: vm.global 127.0.0.1`,
	`[DEBUG] watch.checks: check became unhealthy. Will restart if check doesn't become healthy: alloc_id=%[1]s check="service: \"unhealthy\" check" task=srv time_limit=20s`,
}

func genInput(n int) []byte {
	var b bytes.Buffer
	t0 := time.Date(2026, 11, 22, 1, 57, 47, 0, time.UTC)
	for i := 0; i < n; i++ {
		alloc := fmt.Sprintf("%08x-16c7-3c2d-0d2a-1b9dfe0c%04x", i*2654435761%(1<<32), i%65536)
		b.WriteString(t0.Add(time.Duration(i) * time.Millisecond).Format("2006-01-02T15:04:05.000Z0700"))
		b.WriteByte(' ')
		fmt.Fprintf(&b, shapes[i%len(shapes)], alloc, i)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func benchDecode(b *testing.B, input []byte) {
	lines := bytes.Count(input, []byte("\n"))
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	b.ResetTimer()
	events := 0
	for i := 0; i < b.N; i++ {
		_, err := ReadAll(context.Background(), bytes.NewReader(input), DecoderConfig{IDPrefix: "bench"}, func(ingest.Event) { events++ })
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(lines*b.N)/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(lines*b.N), "ns/line")
	if events != lines*b.N {
		b.Fatalf("events %d, want %d", events, lines*b.N)
	}
}

// BenchmarkDecoder decodes generated text lines of the crashloop capture's
// shapes (ReadAll: reading, splitting, parsing, events).
func BenchmarkDecoder(b *testing.B) {
	benchDecode(b, genInput(20000))
}

// BenchmarkDecoderCapture decodes the real capture (skipped when absent).
func BenchmarkDecoderCapture(b *testing.B) {
	p := filepath.Join(sharedDir, "captures/crashloop-gc-checkrestart/nomad.log")
	input, err := os.ReadFile(p)
	if err != nil {
		b.Skip("capture absent")
	}
	benchDecode(b, input)
}

// BenchmarkDecoderJSON decodes the JSON capture of win-client-2 (skipped when absent).
func BenchmarkDecoderJSON(b *testing.B) {
	p := filepath.Join(sharedDir, "captures/reconnect/client-win-client-2.json.log")
	input, err := os.ReadFile(p)
	if err != nil {
		b.Skip("capture absent")
	}
	benchDecode(b, bytes.Repeat(input, 20))
}

func TestGenInputParses(t *testing.T) {
	evs, st := decodeBytes(t, genInput(len(shapes)*3), DecoderConfig{})
	if len(evs) != len(shapes)*3 || st.Unparsed != 0 {
		t.Fatalf("%d %+v", len(evs), st)
	}
	for _, e := range evs {
		if e.Kind == "" || e.Msg == "" || (e.Kind != "nomad" && len(e.Fields) == 0) {
			t.Errorf("shape did not parse: %+v", e)
		}
	}
}
