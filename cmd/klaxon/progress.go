package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/cmd/internal/replay"
	"golang.org/x/term"
)

// progressEvery is how often the progress line is redrawn.
const progressEvery = 250 * time.Millisecond

// isTerminal reports whether w is a terminal (progress is drawn only then).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progress draws replay's progress on one terminal line: bytes read of the
// total, events per second and the time left.
type progress struct {
	w     io.Writer
	total int64
	p     *replay.Progress
	start time.Time
	width int // of the last line drawn, to clear it
}

// line renders the state at now.
func (pr *progress) line(now time.Time) string {
	read, events := pr.p.Bytes.Load(), pr.p.Events.Load()
	el := now.Sub(pr.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(events) / el
	}
	s := fmt.Sprintf("replay: %s of %s", size(read), size(pr.total))
	if pr.total > 0 {
		s += fmt.Sprintf(" (%d%%)", min(100, read*100/pr.total))
	}
	s += fmt.Sprintf(", %s events/s", count(int64(rate)))
	if read > 0 && pr.total > read && el > 0 {
		left := time.Duration(float64(pr.total-read) / (float64(read) / el) * float64(time.Second))
		s += ", ETA " + left.Round(time.Second).String()
	}
	return s
}

// draw rewrites the line in place.
func (pr *progress) draw(now time.Time) {
	s := pr.line(now)
	pad := ""
	if n := pr.width - len(s); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprint(pr.w, "\r"+s+pad)
	pr.width = len(s)
}

// clear removes the line.
func (pr *progress) clear() {
	if pr.width > 0 {
		fmt.Fprint(pr.w, "\r"+strings.Repeat(" ", pr.width)+"\r")
		pr.width = 0
	}
}

// run draws every tick until stop is closed, then clears the line.
func (pr *progress) run(tick <-chan time.Time, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			pr.clear()
			return
		case now := <-tick:
			pr.draw(now)
		}
	}
}

// startProgress draws replay's progress on stderr when it is a terminal
// (terminal is isTerminal, replaced in tests); the returned function stops
// and clears it.
func startProgress(stderr io.Writer, terminal func(io.Writer) bool, files []string, p *replay.Progress) func() {
	if !terminal(stderr) {
		return func() {}
	}
	var total int64
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			total += fi.Size()
		}
	}
	pr := &progress{w: stderr, total: total, p: p, start: time.Now()}
	t := time.NewTicker(progressEvery)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { pr.run(t.C, stop); close(done) }()
	return func() { t.Stop(); close(stop); <-done }
}

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// count formats n with thousands separators.
func count(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
