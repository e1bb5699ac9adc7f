package sinks

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
)

// The ordering queue keeps the changes of one incident in stream order on
// their way to a sink, across retries, hold-backs, acknowledgements and
// restarts, while up to Parallelism incidents are delivered at the same
// time. It knows nothing of NATS but stream sequences: the Dispatcher
// NAKs, acknowledges and reports progress on what it decides, and feeds it
// the clock (times are passed in).

// orderQueue schedules the changes of every incident: one change of an
// incident in flight at a time, the later ones queued behind it in order,
// and a change whose earlier one is away (NAKed for a retry, held back, or
// possibly pending from a previous run) held back until that one is back.
type orderQueue struct {
	parallelism int
	// staleAway: a change still away this long after it was due back never
	// comes back (deleted from the stream?) and is no longer waited for.
	staleAway time.Duration

	mu       sync.Mutex
	incs     map[string]*incQueue
	held     map[uint64]bool // stream sequences queued or in flight here
	active   int             // incidents being delivered
	stopping bool            // no delivery starts any more
	slotFree chan struct{}
	wg       sync.WaitGroup // one per incident being delivered
}

type incQueue struct {
	busy  bool
	queue []*item
	// away holds the changes of the incident that were NAKed for a retry
	// or held back, by stream sequence, with when they are due back. A
	// change goes ahead only when no earlier one is away.
	away map[uint64]time.Time
	// unsure holds, after a restart, the earlier changes of the incident
	// that were delivered to the previous run and may still be pending
	// (not acknowledged), with when to stop waiting for them: a later
	// change waits for them as for away ones.
	unsure map[uint64]time.Time
}

type item struct {
	msg    jetstream.Msg
	in     correlate.Incident
	seq    uint64
	repeat bool
	// unmute: send the change held for in.ID now that its silence ended.
	unmute bool
}

func newOrderQueue(parallelism int, staleAway time.Duration) *orderQueue {
	return &orderQueue{
		parallelism: parallelism, staleAway: staleAway,
		incs: map[string]*incQueue{}, held: map[uint64]bool{}, slotFree: make(chan struct{}, 1),
	}
}

// admission is what the ordering queue does with a change fetched from
// the consumer.
type admission int

const (
	// admitStart: deliver it now on a new worker (the caller starts it).
	admitStart admission = iota
	// admitQueued: queued behind the change of its incident in flight;
	// report progress so that it is not redelivered meanwhile.
	admitQueued
	// admitHold: an earlier change of its incident is away; NAK it with
	// the delay.
	admitHold
	// admitDuplicate: a redelivery of a change queued or in flight here;
	// drop it.
	admitDuplicate
)

// admit places a change fetched from the consumer.
func (o *orderQueue) admit(it *item, now time.Time) (admission, time.Duration, *incQueue) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.held[it.seq] {
		return admitDuplicate, 0, nil
	}
	q := o.queueOf(it.in.ID)
	if delay, hold := o.holdBack(q, it.seq, now); hold {
		return admitHold, delay, q
	}
	delete(q.away, it.seq)
	delete(q.unsure, it.seq)
	o.held[it.seq] = true
	if q.busy {
		q.queue = append(q.queue, it)
		return admitQueued, 0, q
	}
	q.busy = true
	o.active++
	o.wg.Add(1)
	return admitStart, 0, q
}

// recheck is admit's hold-back test again, for a change about to be sent
// after it waited in its incident's queue.
func (o *orderQueue) recheck(q *incQueue, seq uint64, now time.Time) (time.Duration, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if delay, hold := o.holdBack(q, seq, now); hold {
		return delay, true
	}
	delete(q.away, seq)
	delete(q.unsure, seq)
	return 0, false
}

func (o *orderQueue) queueOf(id string) *incQueue {
	q := o.incs[id]
	if q == nil {
		q = &incQueue{}
		o.incs[id] = q
	}
	return q
}

// holdBack reports whether change seq must wait for an earlier change of
// its incident that is away (waiting for a retry or held back itself), and
// how long; a held-back change is recorded as away too. Call with o.mu.
func (o *orderQueue) holdBack(q *incQueue, seq uint64, now time.Time) (time.Duration, bool) {
	var first time.Time
	hold := false
	for s, until := range q.unsure {
		if now.After(until) {
			delete(q.unsure, s) // acknowledged before the restart after all
			continue
		}
		if s < seq {
			// Poll: it comes back as soon as its ack wait or delay ends.
			if due := now.Add(500 * time.Millisecond); !hold || due.Before(first) {
				first = due
			}
			hold = true
		}
	}
	for s, due := range q.away {
		if now.Sub(due) > o.staleAway {
			// It never came back (deleted from the stream?): stop waiting.
			delete(q.away, s)
			continue
		}
		if s < seq {
			if !hold || due.Before(first) {
				first = due
			}
			hold = true
		}
	}
	if !hold {
		return 0, false
	}
	delay := max(first.Sub(now), 0) + 50*time.Millisecond + rand.N(50*time.Millisecond)
	if q.away == nil {
		q.away = map[uint64]time.Time{}
	}
	q.away[seq] = now.Add(delay)
	return delay, true
}

// setAway records change seq as away (NAKed) until due.
func (o *orderQueue) setAway(q *incQueue, seq uint64, due time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if q.away == nil {
		q.away = map[uint64]time.Time{}
	}
	q.away[seq] = due
}

// markUnsure records change seq of incident id as possibly pending from a
// previous run until until.
func (o *orderQueue) markUnsure(id string, seq uint64, until time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.queueOf(id)
	if q.unsure == nil {
		q.unsure = map[uint64]time.Time{}
	}
	q.unsure[seq] = until
}

func (q *incQueue) idle() bool {
	return !q.busy && len(q.queue) == 0 && len(q.away) == 0 && len(q.unsure) == 0
}

// next is called by an incident's worker when it is done with it: it
// returns the incident's next queued change and those queued behind it (to
// report progress on), or nil when the worker is to end (its slot is
// freed then).
func (o *orderQueue) next(id string, q *incQueue, it *item) (*item, []*item) {
	o.mu.Lock()
	if !it.repeat && !it.unmute { // one from the consumer
		delete(o.held, it.seq)
	}
	if len(q.queue) == 0 {
		q.busy = false
		o.active--
		if q.idle() {
			delete(o.incs, id)
		}
		o.mu.Unlock()
		select {
		case o.slotFree <- struct{}{}:
		default:
		}
		return nil, nil
	}
	it = q.queue[0]
	q.queue = q.queue[1:]
	rest := append([]*item(nil), q.queue...)
	o.mu.Unlock()
	return it, rest
}

// startIdle takes incident id for a change that does not come from the
// consumer (a repeat, a change held by a silence) when the incident has
// nothing queued, away or in flight, a slot is free and the queue is not
// stopping; the caller then runs the worker.
func (o *orderQueue) startIdle(id string) (*incQueue, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.incs[id]
	if (q != nil && !q.idle()) || o.active >= o.parallelism || o.stopping {
		return nil, false
	}
	q = o.queueOf(id)
	q.busy = true
	o.active++
	o.wg.Add(1) // under o.mu: stop sets stopping under it before it waits
	return q, true
}

// waitSlots blocks until a worker slot is free and returns how many are
// (0 when ctx is done).
func (o *orderQueue) waitSlots(ctx context.Context) int {
	for {
		o.mu.Lock()
		free := o.parallelism - o.active
		o.mu.Unlock()
		if free > 0 {
			return free
		}
		select {
		case <-ctx.Done():
			return 0
		case <-o.slotFree:
		}
	}
}

func (o *orderQueue) isStopping() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.stopping
}

// stop lets no delivery start any more and waits for those under way.
func (o *orderQueue) stop() {
	o.mu.Lock()
	o.stopping = true
	o.mu.Unlock()
	o.wg.Wait()
}

// ackWait is the consumer's ack wait: a change a killed run had in flight
// comes back after it. Sends end within SendTimeout, and changes queued
// behind a send report progress, so a live run never sees a redelivery of
// what it holds.
func (d *Dispatcher) ackWait() time.Duration { return d.cfg.SendTimeout + 10*time.Second }

// unsureWait is how long after a restart a change waits for earlier
// changes of its incident that the previous run had not acknowledged.
// Those it had NAKed (retries, held-back changes, a shutdown) come back
// within it. One it had in flight when it was killed comes back only after
// the ack wait; if a newer change of its incident went out meanwhile, it is
// not sent (the supersede stage): the sink sees each incident's changes in
// order, ending with the newest. JetStream does not tell which changes
// above the ack floor were acknowledged, so an incident whose change was
// acknowledged there waits this long once.
const unsureWait = 5 * time.Second

// restoreOrder keeps the order of each incident's changes across a
// restart: every change between the ack floor and the last one delivered
// to the previous run is marked unsure, and a later change of its incident
// waits until it came back or unsureWait passed.
func (d *Dispatcher) restoreOrder(ctx context.Context, info *jetstream.ConsumerInfo) {
	floor, last := info.AckFloor.Stream, info.Delivered.Stream
	if info.NumAckPending == 0 || last <= floor {
		return
	}
	until := d.clock.Now().Add(unsureWait)
	n := 0
	err := d.scanChanges(ctx, floor+1, last, func(seq uint64, _ time.Time, in correlate.Incident) {
		d.order.markUnsure(in.ID, seq, until)
		n++
	})
	if err != nil {
		d.log.Warn("order of pending changes not fully restored", "err", err)
	}
	if n > 0 {
		d.log.Info("changes possibly pending from the previous run; later changes of their incidents wait for them", "changes", n)
	}
}
