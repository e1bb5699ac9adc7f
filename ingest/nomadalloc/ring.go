package nomadalloc

// ring is the insertion order of a bounded map: adding a key to a full one
// forgets the oldest.
type ring struct {
	keys []string
	next int
}

// addBounded records k, a key new to m, and deletes the oldest key from m when
// limit keys are recorded already.
func addBounded[V any](r *ring, m map[string]V, k string, limit int) {
	if len(r.keys) < limit {
		r.keys = append(r.keys, k)
		return
	}
	delete(m, r.keys[r.next])
	r.keys[r.next] = k
	r.next = (r.next + 1) % limit
}
