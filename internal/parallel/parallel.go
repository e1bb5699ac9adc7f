// Package parallel spreads independent pieces of work over the cores.
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// For runs f(0) … f(n-1) on up to GOMAXPROCS goroutines and returns when
// all are done; inline when n is small (fewer than 64 pieces per extra
// goroutine are not worth one).
func For(n int, f func(i int)) { forOn(runtime.GOMAXPROCS(0), n, f) }

// Beside is For on one core fewer than GOMAXPROCS (inline on two cores):
// for work that runs beside a goroutine that must keep a core, as a live
// checkpoint's encoding beside the correlator (on all cores it took the
// correlator's, and p99 event→incident latency followed).
func Beside(n int, f func(i int)) { forOn(runtime.GOMAXPROCS(0)-1, n, f) }

func forOn(cores, n int, f func(i int)) {
	workers := min(cores, n/64)
	if workers < 2 {
		for i := range n {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}
