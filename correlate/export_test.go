package correlate

import (
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/rules"
)

// ScaleState returns a correlator (and the time its feed reached) with the
// state BenchmarkScale builds for n nodes: every node has gone through
// its template cycle twice, all bundled rules. For the checkpoint
// benchmarks of the external test package.
func ScaleState(tb testing.TB, set *rules.Set, n int) (*Correlator, time.Time) {
	tb.Helper()
	feed := newScaleFeed(n)
	c := New(set, Options{Logger: quietLog()})
	var next time.Time
	runFeed(c, feed, 2*len(quietTemplates)*n, &next)
	return c, next
}

// ScaleMore runs k more events of the scale feed of n nodes through c,
// from event number from (2 cycles × n for the state of ScaleState).
func ScaleMore(c *Correlator, n, from, k int, next *time.Time) {
	feed := newScaleFeed(n)
	feed.i = from
	runFeed(c, feed, k, next)
}

// ScaleEvents is the number of events ScaleState runs for n nodes.
func ScaleEvents(n int) int { return 2 * len(quietTemplates) * n }

// group is the copy of a group the cut holds (nil: not in it).
func (k *Cut) group(rule, key string) *group {
	for _, gc := range k.groups {
		if gc.rule == rule && gc.g.Key == key {
			return gc.g
		}
	}
	return nil
}
