package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/replay"
	"github.com/klaxon-dev/klaxon/rules"
)

func TestProgressLine(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name          string
		total, read   int64
		events        int64
		elapsed       time.Duration
		want, notWant []string
	}{
		{"quarter after 1s", 4 << 20, 1 << 20, 500000, time.Second,
			[]string{"replay: 1.0 MiB of 4.0 MiB (25%)", "500,000 events/s", "ETA 3s"}, nil},
		{"nothing read yet", 10 << 10, 0, 0, 0,
			[]string{"0 B of 10.0 KiB (0%)", "0 events/s"}, []string{"ETA"}},
		{"done", 3 << 30, 3 << 30, 1234567, 2 * time.Second,
			[]string{"3.0 GiB of 3.0 GiB (100%)", "617,283 events/s"}, []string{"ETA"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &replay.Progress{}
			p.Bytes.Store(tc.read)
			p.Events.Store(tc.events)
			pr := &progress{total: tc.total, p: p, start: start}
			got := pr.line(start.Add(tc.elapsed))
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("%q does not contain %q", got, w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(got, w) {
					t.Errorf("%q contains %q", got, w)
				}
			}
		})
	}
}

// TestProgressRedrawsAndClears: each tick rewrites the line in place
// (carriage return, padded over a longer previous line) and stopping
// clears it.
func TestProgressRedrawsAndClears(t *testing.T) {
	var buf bytes.Buffer
	drawn := make(chan struct{}, 3)
	p := &replay.Progress{}
	pr := &progress{w: notifyWriter{&buf, drawn}, total: 100 << 20, p: p, start: time.Now().Add(-time.Second)}
	tick, stop, done := make(chan time.Time), make(chan struct{}), make(chan struct{})
	go func() { pr.run(tick, stop); close(done) }()
	p.Bytes.Store(50 << 20)
	p.Events.Store(123456)
	tick <- time.Now()
	<-drawn // the tick is received before the line is drawn
	p.Bytes.Store(100 << 20)
	tick <- time.Now()
	<-drawn
	close(stop)
	<-done
	out := buf.String()
	lines := strings.Split(out, "\r")
	if len(lines) != 5 || lines[0] != "" { // "", line 1, line 2, blanks, ""
		t.Fatalf("want two redraws and a clear, got %q", out)
	}
	if !strings.Contains(lines[1], "50.0 MiB of 100.0 MiB (50%)") || !strings.Contains(lines[1], "ETA") {
		t.Errorf("first draw %q", lines[1])
	}
	if !strings.HasPrefix(lines[2], "replay: 100.0 MiB of 100.0 MiB (100%)") || strings.Contains(lines[2], "ETA") {
		t.Errorf("second draw %q", lines[2])
	}
	if strings.TrimSpace(lines[3]) != "" || len(lines[3]) < len(strings.TrimRight(lines[2], " ")) || lines[4] != "" {
		t.Errorf("the line is not cleared: %q", out)
	}
}

// notifyWriter writes to w, then says so on written.
type notifyWriter struct {
	w       io.Writer
	written chan<- struct{}
}

func (n notifyWriter) Write(b []byte) (int, error) {
	defer func() { n.written <- struct{}{} }()
	return n.w.Write(b)
}

// TestReplayProgressOnlyOnTerminal: replay writes nothing to stderr when it
// is not a terminal; on a (fake) terminal the progress counts every byte and
// event and leaves no text behind.
func TestReplayProgressOnlyOnTerminal(t *testing.T) {
	input := soCapture
	fi, err := os.Stat(input)
	if err != nil {
		t.Fatal(err)
	}
	for _, terminal := range []bool{false, true} {
		saved := progressTerminal
		progressTerminal = func(io.Writer) bool { return terminal }
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"replay", "--rules", "../../rules.d", input}, &stdout, &stderr)
		progressTerminal = saved
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(stdout.String(), "nomad.client.gc_pressure") {
			t.Errorf("terminal=%v: replay output lacks the gc incident:\n%s", terminal, stdout.String())
		}
		if !terminal && stderr.Len() != 0 {
			t.Errorf("not a terminal: stderr %q, want nothing", stderr.String())
		}
		if terminal && strings.TrimSpace(strings.ReplaceAll(stderr.String(), "\r", "")) != "" && !strings.HasSuffix(stderr.String(), "\r") {
			t.Errorf("terminal: the progress line is left behind: %q", stderr.String())
		}
	}
	// The counters Replay fills.
	p := &replay.Progress{}
	set := loadRulesForTest(t)
	st, err := replay.Run(context.Background(), []string{input}, replay.Options{Rules: set, Out: io.Discard, Progress: p})
	if err != nil {
		t.Fatal(err)
	}
	if p.Bytes.Load() != fi.Size() || p.Events.Load() != int64(st.Events) {
		t.Errorf("progress: %d bytes, %d events; want %d bytes, %d events", p.Bytes.Load(), p.Events.Load(), fi.Size(), st.Events)
	}
}

func loadRulesForTest(t *testing.T) *rules.Set {
	t.Helper()
	set, err := rules.LoadDir("../../rules.d")
	if err != nil {
		t.Fatal(err)
	}
	return set
}
