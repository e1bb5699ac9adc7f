package sinks

import (
	"context"
	"log/slog"
	"sort"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
)

// Silencer mutes incident changes while a silence matches them, and keeps
// for every sink the latest change it muted so that it can be sent once
// the silence is over (sinks/silence implements it on a NATS KV bucket).
//
// The Dispatcher asks Silenced before it sends a change: a muted change is
// acknowledged, counted (DispatcherStats.Silenced) and held; it stays in
// KLAXON_INCIDENTS. When no silence matches a held change any more (the
// silence ended or was expired) and the incident is still open, the held
// change is sent; a newer change of the incident replaces it.
type Silencer interface {
	// Silenced returns the id of a silence active at now that matches in.
	Silenced(in correlate.Incident, now time.Time) (id string, ok bool)
	// Changed returns a channel that is closed at the next change of the
	// silences (added, changed or expired); ask again after it fired.
	Changed() <-chan struct{}
	// Hold stores the latest muted change of an incident for a sink,
	// replacing the one held before.
	Hold(ctx context.Context, sink string, h Held) error
	// Release forgets the held change of an incident for a sink.
	Release(ctx context.Context, sink, incident string) error
	// HeldFor returns the changes held for a sink.
	HeldFor(ctx context.Context, sink string) ([]Held, error)
}

// Held is a muted incident change waiting for its silence to end.
type Held struct {
	// Incident is the latest muted change.
	Incident correlate.Incident `json:"incident"`
	// Silence is the id of the silence that muted it.
	Silence string `json:"silence"`
	// Unsent is true when the sink got no change of this incident
	// occurrence at all (its firing change was muted too): a resolution
	// is then dropped instead of being sent after the silence.
	Unsent bool `json:"unsent,omitempty"`
}

// FieldValue returns the value of a route or silence field of an incident:
// "rule", "node", "severity", "id", "labels.<name>", "group.<key>"; a
// missing label or group key is the empty string.
func FieldValue(in correlate.Incident, field string) string { return fieldValue(in, field) }

// mute is the silence stage: it holds it instead of sending it when a
// silence matches it (muteStage decides); it reports whether the change
// was taken care of (held, dropped, or NAKed for another try).
func (d *Dispatcher) mute(ctx context.Context, q *incQueue, it *item, log *slog.Logger) bool {
	s := d.cfg.Silencer
	if s == nil {
		return false
	}
	in := it.in
	d.mu.Lock()
	prev, had := d.muted[in.ID]
	d.mu.Unlock()
	sid, silenced := s.Silenced(in, d.cfg.Now())
	dec := muteStage(in, sid, silenced, prev, had)
	if dec.release {
		d.release(ctx, in.ID, log)
	}
	switch dec.action {
	case mutePass:
		return false
	case muteOlder:
		d.silenced.Add(1)
		d.ack(it.msg)
		return true
	case muteDrop:
		d.silenced.Add(1)
		log.Info("change silenced; resolved while silenced, never sent", "silence", sid)
		d.ack(it.msg)
		return true
	}
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	err := s.Hold(hctx, d.sink.Name(), dec.held)
	cancel()
	if err != nil {
		log.Warn("silenced change not stored; will retry", "silence", sid, "err", err)
		d.setAway(q, it.seq, time.Second)
		_ = it.msg.NakWithDelay(time.Second)
		return true
	}
	d.mu.Lock()
	d.muted[in.ID] = dec.held
	d.mu.Unlock()
	d.silenced.Add(1)
	log.Info("change silenced", "silence", sid)
	d.ack(it.msg)
	return true
}

// release forgets the change held for an incident.
func (d *Dispatcher) release(ctx context.Context, id string, log *slog.Logger) {
	d.mu.Lock()
	delete(d.muted, id)
	d.mu.Unlock()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := d.cfg.Silencer.Release(rctx, d.sink.Name(), id); err != nil {
		log.Warn("held change not released; it may be sent again after a restart", "err", err)
	}
}

// isMuted reports whether a change of the incident is held.
func (d *Dispatcher) isMuted(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.muted[id]
	return ok
}

// loadMuted reads the changes held for this sink before a restart.
func (d *Dispatcher) loadMuted(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hs, err := d.cfg.Silencer.HeldFor(lctx, d.sink.Name())
	if err != nil {
		d.log.Warn("silenced changes not restored; they are sent with their next change", "err", err)
		return
	}
	d.mu.Lock()
	for _, h := range hs {
		if cur, ok := d.muted[h.Incident.ID]; !ok || keyOf(cur.Incident).less(keyOf(h.Incident)) {
			d.muted[h.Incident.ID] = h
		}
	}
	d.mu.Unlock()
	if len(hs) > 0 {
		d.log.Info("silenced changes restored", "held", len(hs))
	}
}

// silenceLoop sends held changes once no silence matches them any more:
// every SilenceCheck, and at once when the silences change.
func (d *Dispatcher) silenceLoop(ctx context.Context) {
	tick := d.clock.NewTicker(d.cfg.SilenceCheck)
	defer tick.Stop()
	changed := d.cfg.Silencer.Changed()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C():
		case <-changed:
			changed = d.cfg.Silencer.Changed()
		}
		d.unmuteDue(ctx)
	}
}

// unmuteDue schedules the held changes whose silence is over, each on its
// incident's queue so that it keeps its place among the incident's changes.
func (d *Dispatcher) unmuteDue(ctx context.Context) {
	now := d.cfg.Now()
	d.mu.Lock()
	var due []correlate.Incident
	for _, h := range d.muted {
		if _, ok := d.cfg.Silencer.Silenced(h.Incident, now); !ok {
			due = append(due, h.Incident)
		}
	}
	d.mu.Unlock()
	sort.Slice(due, func(i, j int) bool { return due[i].ID < due[j].ID })
	for _, in := range due {
		if ctx.Err() != nil {
			return
		}
		// A busy incident is taken by the next check.
		if !d.startIdle(ctx, &item{in: in, unmute: true}) && d.order.isStopping() {
			return
		}
	}
}

// sendMuted sends the change held for in.ID now that its silence is over,
// unless a newer change replaced it or a silence matches it again. A
// failure is tried again at the next check.
func (d *Dispatcher) sendMuted(ctx context.Context, in correlate.Incident) {
	if ctx.Err() != nil {
		return
	}
	d.mu.Lock()
	h, ok := d.muted[in.ID]
	d.mu.Unlock()
	if !ok || h.Incident.ChangeID() != in.ChangeID() {
		return
	}
	if _, again := d.cfg.Silencer.Silenced(in, d.cfg.Now()); again {
		return
	}
	log := d.log.With("incident", in.ID, "rule", in.Rule, "status", in.Status, "seq", in.Seq, "silence", h.Silence)
	if (in.Status == correlate.StatusResolved && h.Unsent) || !d.cfg.Route.Match(in) {
		d.release(ctx, in.ID, log)
		return
	}
	dec := throttleStage(d.cfg.Throttle, in)
	switch dec.Action {
	case Fold:
		d.folded.Add(1)
		d.release(ctx, in.ID, log)
		return
	case Defer:
		return
	}
	send := dec.Incident
	if d.cfg.Throttle == nil && h.Unsent {
		send.Status = correlate.StatusFiring // the sink never saw it fire
	}
	if _, err := d.send(ctx, send); err != nil {
		log.Warn("change held by a silence not sent; will retry", "err", err)
		return
	}
	d.delivered.Add(1)
	d.unsilenced.Add(1)
	if t := d.cfg.Throttle; t != nil {
		t.Delivered(send)
	}
	log.Info("silence over: held change sent")
	d.release(ctx, in.ID, log)
}
