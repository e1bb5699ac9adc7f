package correlate

// timerHeap orders groups by the time they must be woken, then by rule id
// and group key, so that changes come out in a stable order.
type timerHeap []*group

func (h timerHeap) less(i, j int) bool {
	a, b := h[i], h[j]
	if !a.due.Equal(b.due) {
		return a.due.Before(b.due)
	}
	if a.rs.rule.ID != b.rs.rule.ID {
		return a.rs.rule.ID < b.rs.rule.ID
	}
	return a.Key < b.Key
}

func (h timerHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx = i
	h[j].hidx = j
}

func (h timerHeap) up(j int) { siftUp(h, j) }

func (h timerHeap) down(i int) bool { return siftDown(h, i, len(h)) }

func (h *timerHeap) push(g *group) {
	g.hidx = len(*h)
	*h = append(*h, g)
	h.up(g.hidx)
}

// pop removes and returns the group due first.
func (h *timerHeap) pop() *group {
	old := *h
	n := len(old) - 1
	old.swap(0, n)
	g := old[n]
	old[n] = nil
	*h = old[:n]
	if n > 0 {
		h.down(0)
	}
	g.hidx = -1
	return g
}

func (h *timerHeap) fix(g *group) {
	if !h.down(g.hidx) {
		h.up(g.hidx)
	}
}

func (h *timerHeap) remove(g *group) {
	old := *h
	i := g.hidx
	n := len(old) - 1
	if i != n {
		old.swap(i, n)
	}
	old[n] = nil
	*h = old[:n]
	if i != n {
		h.fix(old[i])
	}
	g.hidx = -1
}
