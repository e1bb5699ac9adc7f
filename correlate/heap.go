package correlate

// indexedHeap is a binary min-heap over a slice whose items keep their own
// index: swap moves two items and tells them their new places. The
// sources' clocks (by Latest) and the groups' timers (by due time) are
// kept in one each.
type indexedHeap interface {
	less(i, j int) bool
	swap(i, j int)
}

// siftUp moves item j up to its place.
func siftUp[H indexedHeap](h H, j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

// siftDown moves item i of the n down to its place and reports whether it
// moved.
func siftDown[H indexedHeap](h H, i, n int) bool {
	i0 := i
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && h.less(r, l) {
			j = r
		}
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > i0
}
