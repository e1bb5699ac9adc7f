package sinks

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
)

// ThrottleConfig groups and throttles the notifications of one sink, so
// that a flapping node pages once, not fifty times. Zero values take the
// defaults; a negative GroupInterval or RepeatInterval turns that feature
// off.
type ThrottleConfig struct {
	// GroupWait delays the first notification of a new incident (default
	// 0): changes that arrive meanwhile are folded into it.
	GroupWait time.Duration `yaml:"group_wait"`
	// GroupInterval is the least time between two notifications of one
	// open incident (default 5m): intermediate updates are folded, the
	// latest wins.
	GroupInterval time.Duration `yaml:"group_interval"`
	// RepeatInterval re-sends a still-open incident that had no
	// notification for this long (default 4h).
	RepeatInterval time.Duration `yaml:"repeat_interval"`
	// ResolveDelay holds a resolve back (default 0). An incident that fires
	// again within it keeps its one open page: the resolve is dropped and
	// the new firing is sent as an update of the open page.
	ResolveDelay time.Duration `yaml:"resolve_delay"`
}

// Throttle defaults.
const (
	DefaultGroupInterval  = 5 * time.Minute
	DefaultRepeatInterval = 4 * time.Hour
)

// SetDefaults fills in the defaults.
func (c *ThrottleConfig) SetDefaults() {
	if c.GroupInterval == 0 {
		c.GroupInterval = DefaultGroupInterval
	}
	if c.RepeatInterval == 0 {
		c.RepeatInterval = DefaultRepeatInterval
	}
}

// Validate checks the config; prefix names the enclosing key ("sinks[2]").
func (c *ThrottleConfig) Validate(prefix string) error {
	var errs []error
	if c.GroupWait < 0 {
		errs = append(errs, fmt.Errorf("%s.group_wait: must not be negative", prefix))
	}
	if c.ResolveDelay < 0 {
		errs = append(errs, fmt.Errorf("%s.resolve_delay: must not be negative", prefix))
	}
	return errors.Join(errs...)
}

// Action is what a Throttle decides for one change.
type Action int

// Actions of a Decision.
const (
	// Deliver: send Decision.Incident now.
	Deliver Action = iota
	// Fold: do not send; a later change carries the news, or this change
	// was already delivered. Acknowledge it.
	Fold
	// Defer: offer the change again at Decision.Until.
	Defer
)

func (a Action) String() string {
	switch a {
	case Deliver:
		return "deliver"
	case Fold:
		return "fold"
	case Defer:
		return "defer"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Decision is a Throttle's answer for one change.
type Decision struct {
	Action Action
	// Incident is what to send (Deliver). Its status is what the sink's
	// receiver should see: "firing" for the first notification of a page
	// (even when earlier changes were folded into it), "updated" for a
	// change of a page that is open (even a new firing after a suppressed
	// flap).
	Incident correlate.Incident
	// Until is when to offer the change again (Defer).
	Until time.Time
	// Reason explains Fold and Defer for logs.
	Reason string
}

// Throttle keeps, per incident, what one sink was last sent and decides
// what to do with each change. It is safe for concurrent use.
//
// The state is in memory. The Dispatcher acknowledges a change only once
// it is delivered or folded into a later change that is still in the
// stream, and rebuilds the state at start from the acknowledged part of the
// stream (Restore), so a restart costs at worst one duplicate notification
// (a group_wait, group_interval or resolve_delay starts over; a repeat may
// come early) and never loses one.
type Throttle struct {
	cfg ThrottleConfig
	now func() time.Time

	mu   sync.Mutex
	incs map[string]*tstate
}

type changeKey struct {
	started int64
	seq     int
}

func keyOf(in correlate.Incident) changeKey {
	return changeKey{in.StartedAt.UnixNano(), in.Seq}
}

func (a changeKey) less(b changeKey) bool {
	if a.started != b.started {
		return a.started < b.started
	}
	return a.seq < b.seq
}

type tstate struct {
	latest    changeKey // latest change offered or delivered
	hasLatest bool
	occ       int64     // occurrence (StartedAt) of latest
	occSeen   time.Time // when occ was first seen
	occFiring bool      // a non-resolved change of occ was offered
	seenAt    map[changeKey]time.Time

	delivered bool // lastKey is set
	lastKey   changeKey
	lastAt    time.Time // last notification (repeats included)
	last      correlate.Incident
	open      bool // the last notification was not a resolve
	touched   time.Time
}

// NewThrottle returns a throttle; now is the clock (time.Now in
// production, a stepped clock in tests). cfg gets its defaults.
func NewThrottle(cfg ThrottleConfig, now func() time.Time) *Throttle {
	cfg.SetDefaults()
	if cfg.GroupInterval < 0 {
		cfg.GroupInterval = 0
	}
	if cfg.RepeatInterval < 0 {
		cfg.RepeatInterval = 0
	}
	if now == nil {
		now = time.Now
	}
	return &Throttle{cfg: cfg, now: now, incs: map[string]*tstate{}}
}

// Config returns the effective configuration (defaults applied, turned-off
// features zero).
func (t *Throttle) Config() ThrottleConfig { return t.cfg }

func (t *Throttle) state(id string) *tstate {
	st := t.incs[id]
	if st == nil {
		st = &tstate{seenAt: map[changeKey]time.Time{}}
		t.incs[id] = st
	}
	return st
}

// Offer decides what to do with a change that arrived (or arrived again
// after a Defer).
func (t *Throttle) Offer(in correlate.Incident) Decision {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	st := t.state(in.ID)
	st.touched = now
	k := keyOf(in)
	if !st.hasLatest || st.latest.less(k) {
		st.latest, st.hasLatest = k, true
	}
	if st.occSeen.IsZero() || k.started > st.occ {
		st.occ, st.occSeen, st.occFiring = k.started, now, false
	}
	if k.started == st.occ && in.Status != correlate.StatusResolved {
		st.occFiring = true
	}
	if _, ok := st.seenAt[k]; !ok {
		st.seenAt[k] = now
	}
	if st.delivered && !st.lastKey.less(k) {
		delete(st.seenAt, k)
		return Decision{Action: Fold, Reason: "already delivered or older than the last delivered change"}
	}
	if k.less(st.latest) {
		delete(st.seenAt, k)
		return Decision{Action: Fold, Reason: "superseded by a later change"}
	}
	out := in
	if in.Status == correlate.StatusResolved {
		if !st.open && st.occFiring && k.started == st.occ && !(st.delivered && st.lastKey.started == k.started) {
			delete(st.seenAt, k)
			return Decision{Action: Fold, Reason: "resolved before it was notified"}
		}
		if due := st.seenAt[k].Add(t.cfg.ResolveDelay); now.Before(due) {
			return Decision{Action: Defer, Until: due, Reason: "resolve_delay"}
		}
		return Decision{Action: Deliver, Incident: out}
	}
	if !st.open {
		if due := st.occSeen.Add(t.cfg.GroupWait); now.Before(due) {
			return Decision{Action: Defer, Until: due, Reason: "group_wait"}
		}
		out.Status = correlate.StatusFiring
		return Decision{Action: Deliver, Incident: out}
	}
	if t.cfg.GroupInterval > 0 {
		if due := st.lastAt.Add(t.cfg.GroupInterval); now.Before(due) {
			return Decision{Action: Defer, Until: due, Reason: "group_interval"}
		}
	}
	out.Status = correlate.StatusUpdated
	return Decision{Action: Deliver, Incident: out}
}

// Delivered records that in reached the sink now: pass Decision.Incident
// (the presented change), or the incident of a repeat from Due.
func (t *Throttle) Delivered(in correlate.Incident) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	st := t.state(in.ID)
	k := keyOf(in)
	delete(st.seenAt, k)
	if !st.hasLatest || st.latest.less(k) {
		st.latest, st.hasLatest = k, true
	}
	st.delivered, st.lastKey, st.lastAt, st.touched = true, k, now, now
	st.open = in.Status != correlate.StatusResolved
	st.last = in
}

// Forget drops the pending-change bookkeeping of a change that left the
// dispatcher without being delivered (dead-lettered).
func (t *Throttle) Forget(in correlate.Incident) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if st := t.incs[in.ID]; st != nil {
		delete(st.seenAt, keyOf(in))
	}
}

// Restore records a change as delivered at time at, without sending it:
// the Dispatcher rebuilds the state from acknowledged changes at start.
func (t *Throttle) Restore(in correlate.Incident, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.state(in.ID)
	k := keyOf(in)
	if st.delivered && k.less(st.lastKey) {
		return
	}
	if !st.hasLatest || st.latest.less(k) {
		st.latest, st.hasLatest = k, true
	}
	st.occ, st.occSeen, st.occFiring = k.started, at, in.Status != correlate.StatusResolved
	st.delivered, st.lastKey, st.lastAt, st.touched = true, k, at, t.now()
	st.open = in.Status != correlate.StatusResolved
	st.last = in
}

// Due returns the open incidents to notify again (repeat_interval): the
// last delivered change of each, with nothing newer pending. Record a
// successful repeat with Delivered.
func (t *Throttle) Due() []correlate.Incident {
	if t.cfg.RepeatInterval <= 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var out []correlate.Incident
	for _, st := range t.incs {
		if st.open && st.delivered && st.latest == st.lastKey && !now.Before(st.lastAt.Add(t.cfg.RepeatInterval)) {
			out = append(out, st.last)
		}
	}
	return out
}

// Prune forgets incidents that are closed (or never notified) and were
// last touched more than keep ago, and pending changes first seen more than
// keep ago (they left the stream).
func (t *Throttle) Prune(keep time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for id, st := range t.incs {
		for k, at := range st.seenAt {
			if now.Sub(at) > keep {
				delete(st.seenAt, k)
			}
		}
		if !st.open && len(st.seenAt) == 0 && now.Sub(st.touched) > keep {
			delete(t.incs, id)
		}
	}
}

// Len returns the number of incidents tracked.
func (t *Throttle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.incs)
}
