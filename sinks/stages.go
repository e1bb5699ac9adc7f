package sinks

import (
	"errors"
	"sync"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
)

// A change fetched from a sink's consumer goes through these stages, as an
// alert does through Alertmanager's notify pipeline; each decides and the
// Dispatcher carries the decision out on the JetStream message (ack, NAK
// with a delay, publish a dead letter):
//
//	route      routeStage: HeaderOnlySink and the sink's Route
//	order      orderQueue (ordering.go): per-incident order, hold-backs
//	silence    muteStage: hold a change a silence matches
//	throttle   throttleStage: group_wait, group_interval, resolve_delay
//	supersede  newestDelivered: without a throttle, drop a change older
//	           than one already delivered
//	deliver    retryStage: send, then retry with back-off or give up
//	dead letter deadLetterMsg (dlq.go): what a sink gave up on

// routeVerdict is the route stage's answer.
type routeVerdict int

const (
	// routeTake: the change is for this sink.
	routeTake routeVerdict = iota
	// routeSkip: a replay for another sink (HeaderOnlySink).
	routeSkip
	// routeFilter: the sink's route does not take it.
	routeFilter
)

// routeStage decides whether sink takes change in; only is the change's
// HeaderOnlySink.
func routeStage(sink string, r *Route, only string, in correlate.Incident) routeVerdict {
	if only != "" && only != sink {
		return routeSkip
	}
	if !r.Match(in) {
		return routeFilter
	}
	return routeTake
}

// muteAction is the silence stage's answer.
type muteAction int

const (
	// mutePass: no silence matches; send the change (after releasing the
	// held change when muteDecision.release).
	mutePass muteAction = iota
	// muteOlder: older than the change held already (a redelivery):
	// acknowledge it, silenced.
	muteOlder
	// muteDrop: resolved before the sink heard of the incident: nothing to
	// send later; release the held change when muteDecision.release and
	// acknowledge it, silenced.
	muteDrop
	// muteHold: store muteDecision.held in place of the change held
	// before, and acknowledge the change, silenced.
	muteHold
)

type muteDecision struct {
	action  muteAction
	held    Held // muteHold
	release bool // mutePass, muteDrop: release the held change
}

// muteStage decides what happens to change in: sid and silenced are the
// silence that matches it (if any), prev the change held for its
// incident (if had). A change that no silence matches and that is newer
// than the held one releases it: the newer change carries the news.
func muteStage(in correlate.Incident, sid string, silenced bool, prev Held, had bool) muteDecision {
	if !silenced {
		return muteDecision{action: mutePass, release: had && !keyOf(in).less(keyOf(prev.Incident))}
	}
	h := Held{Incident: in, Silence: sid, Unsent: in.Status == correlate.StatusFiring}
	if had && prev.Incident.StartedAt.Equal(in.StartedAt) {
		if keyOf(in).less(keyOf(prev.Incident)) {
			return muteDecision{action: muteOlder}
		}
		h.Unsent = h.Unsent || prev.Unsent
	}
	if in.Status == correlate.StatusResolved && h.Unsent {
		return muteDecision{action: muteDrop, release: had}
	}
	return muteDecision{action: muteHold, held: h}
}

// throttleStage asks the throttle (nil: none, every change is delivered
// as it comes) what to do with change in.
func throttleStage(t *Throttle, in correlate.Incident) Decision {
	if t == nil {
		return Decision{Action: Deliver, Incident: in}
	}
	return t.Offer(in)
}

// deferWait is how long a change the throttle deferred until until waits
// before it is offered again.
func deferWait(until, now time.Time) time.Duration {
	return max(until.Sub(now), 10*time.Millisecond)
}

// newestDelivered is the supersede stage: it remembers the newest change
// delivered per incident, so that an older change delivered again (its
// ack lost in a crash) is not sent after it: a stale "firing" after a
// "resolved" would reopen a page. A throttle folds such changes itself.
type newestDelivered struct {
	keep time.Duration // how long an incident's newest change is remembered

	mu   sync.Mutex
	m    map[string]deliveredKey
	gcAt time.Time
}

type deliveredKey struct {
	key changeKey
	at  time.Time
}

// newestKeep is how long the newest delivered change of an incident is
// remembered: longer than any redelivery takes (ack wait and back-off).
const newestKeep = time.Hour

func newNewestDelivered(keep time.Duration) *newestDelivered {
	return &newestDelivered{keep: keep, m: map[string]deliveredKey{}}
}

// superseded reports whether a newer change of in's incident than in was
// delivered.
func (n *newestDelivered) superseded(in correlate.Incident) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	d, ok := n.m[in.ID]
	return ok && keyOf(in).less(d.key)
}

// delivered records in as delivered at now and forgets what is older than
// keep (at most once a minute).
func (n *newestDelivered) delivered(in correlate.Incident, now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if d, ok := n.m[in.ID]; !ok || !keyOf(in).less(d.key) {
		n.m[in.ID] = deliveredKey{keyOf(in), now}
	}
	if now.Sub(n.gcAt) > time.Minute {
		n.gcAt = now
		for id, d := range n.m {
			if now.Sub(d.at) > n.keep {
				delete(n.m, id)
			}
		}
	}
}

// outcome is the deliver stage's answer after an attempt.
type outcome int

const (
	// outDelivered: acknowledge.
	outDelivered outcome = iota
	// outRetry: NAK with the delay.
	outRetry
	// outGiveUp: publish a dead letter.
	outGiveUp
)

// retryPolicy is the deliver stage: attempts and back-off.
type retryPolicy struct {
	maxAttempts int
	backoff     func(attempt int) time.Duration
}

// decide returns what follows the attempt-th failed or successful send: a
// retryable failure before the last attempt is retried after the back-off
// (or the error's RetryAfter when longer); any other failure gives up.
func (p retryPolicy) decide(attempt int, retryable bool, err error) (outcome, time.Duration) {
	switch {
	case err == nil:
		return outDelivered, 0
	case retryable && attempt < p.maxAttempts:
		delay := p.backoff(attempt)
		var ra RetryAfter
		if errors.As(err, &ra) && ra.RetryAfter() > delay {
			delay = ra.RetryAfter()
		}
		return outRetry, delay
	}
	return outGiveUp, 0
}

// attemptCounter counts delivery attempts per stream sequence, in memory
// (JetStream's delivery count also counts the hold-backs).
type attemptCounter struct {
	mu sync.Mutex
	n  map[uint64]int
}

// add counts an attempt at change seq and returns its number.
func (a *attemptCounter) add(seq uint64) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == nil {
		a.n = map[uint64]int{}
	}
	a.n[seq]++
	return a.n[seq]
}

func (a *attemptCounter) forget(seq uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.n, seq)
}
