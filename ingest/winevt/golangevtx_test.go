package winevt

import (
	"testing"

	"github.com/0xrawsec/golang-evtx/evtx"
)

// fastEventsCount reads a file the way golang-evtx's README does.
func fastEventsCount(tb testing.TB, path string) int {
	ef, err := evtx.OpenDirty(path)
	if err != nil && err != evtx.ErrDirtyFile {
		tb.Fatal(err)
	}
	defer ef.Close()
	n := 0
	for e := range ef.FastEvents() {
		_ = evtx.ToJSON(e)
		n++
	}
	return n
}
