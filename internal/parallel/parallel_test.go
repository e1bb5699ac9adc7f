package parallel

import (
	"sync/atomic"
	"testing"
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
