package ruletest

import (
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest/winfact"
	"github.com/klaxon-dev/klaxon/rules"
)

// runSeries feeds a recorded kernel pool series of winfact's testdata
// through the bundled rules, as the sidecar publishes it (one sample a
// minute), and returns the changes of windows.pool_leak.
func runSeries(t *testing.T, name string) (start time.Time, changes []correlate.Incident) {
	t.Helper()
	set, err := rules.LoadDir("../../../rules.d")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../../../ingest/winfact/testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	samples, err := winfact.ReadPoolCSV(string(b), start)
	if err != nil {
		t.Fatal(err)
	}
	c := correlate.New(set, correlate.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	emit := func(in correlate.Incident) {
		if in.Rule == "windows.pool_leak" {
			changes = append(changes, in)
		} else {
			t.Errorf("unexpected incident %s %s", in.Rule, in.Status)
		}
	}
	for _, s := range samples {
		ev := winfact.PoolEvent("win-client-3", s, winfact.DefaultPoolTop)
		c.Advance(ev.Time, emit)
		c.Process(&ev, emit)
	}
	c.Settle(samples[len(samples)-1].Time.Add(2*time.Hour), emit)
	return start, changes
}

// TestPoolLeakSeries: on the recording of a node whose process leaks
// non-paged pool at 120 MB/h from hour 2, windows.pool_leak fires within
// two hours of the leak's start, when the pool is still far from its
// limit, naming the process; a healthy node whose backup takes 150 MB for
// 20 minutes every 4 hours never fires it.
func TestPoolLeakSeries(t *testing.T) {
	start, changes := runSeries(t, "pool_leak.csv")
	if len(changes) == 0 {
		t.Fatal("the leak was not found")
	}
	fired := changes[0]
	at := fired.UpdatedAt.Sub(start)
	t.Logf("fired after %s: %s\n%s", at, fired.Title, fired.Summary)
	if fired.Status != correlate.StatusFiring || at < 2*time.Hour || at > 4*time.Hour {
		t.Errorf("fired %s after the start (the leak began at 2h)", at)
	}
	for _, want := range []string{"Most non-paged pool: leaky-agent.exe (pid 4242)", "MB/h", "alarm at 2048 MB"} {
		if !strings.Contains(strings.Join(strings.Fields(fired.Summary), " "), want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	for _, in := range changes[1:] {
		if in.Status == correlate.StatusFiring {
			t.Errorf("fired again at %s", in.UpdatedAt.Sub(start))
		}
	}
	if _, steady := runSeries(t, "pool_steady.csv"); len(steady) != 0 {
		t.Errorf("a healthy node fired: %s %s at %s", steady[0].Status, steady[0].Summary, steady[0].UpdatedAt)
	}
}
