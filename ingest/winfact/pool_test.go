package winfact

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

var t0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func series(t *testing.T, name string) []PoolSample {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ReadPoolCSV(string(b), t0)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPoolEvent(t *testing.T) {
	s := PoolSample{Time: t0, PagedBytes: 480 << 20, NonpagedBytes: 210 << 20, PhysicalBytes: 16 << 30, Handles: 52000, Processes: 90,
		Procs: []ProcessPool{
			{PID: 4, Name: "System", PagedBytes: 0, NonpagedBytes: 1 << 20, Handles: 4000},
			{PID: 4242, Name: "leaky-agent.exe", PagedBytes: 2 << 20, NonpagedBytes: 300 << 20, Handles: 90000},
			{PID: 812, Name: "svchost.exe", PagedBytes: 9 << 20, NonpagedBytes: 2 << 20, Handles: 2000},
		}}
	ev := PoolEvent("win-7", s, 2)
	want := map[string]any{
		"paged_bytes": int64(480 << 20), "nonpaged_bytes": int64(210 << 20), "physical_bytes": int64(16 << 30),
		"handles": int64(52000), "processes": int64(90), "kernel": "windows",
		"top_process": "leaky-agent.exe (pid 4242)", "top_process_nonpaged_bytes": int64(300 << 20), "top_process_handles": int64(90000),
		"top_nonpaged": "leaky-agent.exe (pid 4242) 300.0 MB, svchost.exe (pid 812) 2.0 MB",
		"top_paged":    "svchost.exe (pid 812) 9.0 MB, leaky-agent.exe (pid 4242) 2.0 MB",
		"top_handles":  "leaky-agent.exe (pid 4242) 90000 handles, System (pid 4) 4000 handles",
	}
	for k, v := range want {
		if ev.Fields[k] != v {
			t.Errorf("fields.%s = %#v, want %#v", k, ev.Fields[k], v)
		}
	}
	if ev.Source != ingest.SourceNodeFact || ev.Kind != KindKernelPool || ev.Node != "win-7" || !ev.Time.Equal(t0) ||
		!strings.Contains(ev.Msg, "non-paged 210.0 MB") || ev.ID == "" {
		t.Errorf("event %+v", ev)
	}
}

func TestReadPoolCSV(t *testing.T) {
	leak := series(t, "pool_leak.csv")
	if len(leak) != 480 || !leak[1].Time.Equal(t0.Add(time.Minute)) || leak[0].Procs[0].Name != "leaky-agent.exe" || leak[0].PhysicalBytes != 16<<30 {
		t.Fatalf("%d samples; first %+v", len(leak), leak[0])
	}
	// The leak grows the non-paged pool by about 120 MB/h from hour 2.
	if d := float64(leak[479].NonpagedBytes-leak[120].NonpagedBytes) / (1 << 20); d < 650 || d > 790 {
		t.Errorf("grew %.0f MB in 6h", d)
	}
	if _, err := ReadPoolCSV("0,1,2,3", t0); err == nil {
		t.Error("short line accepted")
	}
	if _, err := ReadPoolCSV("0,1,2,3,x", t0); err == nil {
		t.Error("bad number accepted")
	}
}

type seriesSampler struct {
	mu  sync.Mutex
	s   []PoolSample
	err error
}

func (r *seriesSampler) SamplePool() (PoolSample, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return PoolSample{}, r.err
	}
	if len(r.s) == 0 {
		return PoolSample{}, errors.New("series ended")
	}
	s := r.s[0]
	r.s = r.s[1:]
	return s, nil
}

// TestPoolSourceRuns: the source publishes one event per sample and goes
// on after a failing one.
func TestPoolSourceRuns(t *testing.T) {
	r := &seriesSampler{s: series(t, "pool_steady.csv")[:3]}
	src, err := NewPool(PoolConfig{Node: "win-7", Interval: 5 * time.Millisecond, Sampler: r}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan ingest.Event, 8)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	for i := 0; i < 3; i++ {
		select {
		case ev := <-out:
			if ev.Kind != KindKernelPool || !ev.Time.Equal(t0.Add(time.Duration(i)*time.Minute)) {
				t.Errorf("sample %d: %+v", i, ev)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no sample")
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, f := src.Stats(); f >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the end of the series was not retried")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n, _ := src.Stats(); n != 3 {
		t.Errorf("%d samples published", n)
	}
	if _, err := NewPool(PoolConfig{Node: "n"}, quiet()); err == nil && !isWindows() {
		t.Error("NewPool without a sampler succeeded off Windows")
	}
}
