package parallel

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestForRunsEachOnce(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 1000, 100_000} {
		seen := make([]atomic.Int32, n)
		For(n, func(i int) { seen[i].Add(1) })
		for i := range seen {
			if got := seen[i].Load(); got != 1 {
				t.Fatalf("n=%d: f(%d) ran %d times, want once", n, i, got)
			}
		}
	}
}

// TestBesideLeavesACore: Beside runs each piece once, on at most one
// goroutine fewer than GOMAXPROCS (and inline on two cores).
func TestBesideLeavesACore(t *testing.T) {
	for _, procs := range []int{2, 4} {
		old := runtime.GOMAXPROCS(procs)
		const n = 1000
		seen := make([]atomic.Int32, n)
		var running, most atomic.Int32
		Beside(n, func(i int) {
			r := running.Add(1)
			for m := most.Load(); r > m && !most.CompareAndSwap(m, r); m = most.Load() {
			}
			time.Sleep(50 * time.Microsecond)
			seen[i].Add(1)
			running.Add(-1)
		})
		runtime.GOMAXPROCS(old)
		for i := range seen {
			if got := seen[i].Load(); got != 1 {
				t.Fatalf("GOMAXPROCS %d: f(%d) ran %d times, want once", procs, i, got)
			}
		}
		if got := int(most.Load()); got != procs-1 {
			t.Errorf("GOMAXPROCS %d: up to %d pieces at once, want %d", procs, got, procs-1)
		}
	}
}
