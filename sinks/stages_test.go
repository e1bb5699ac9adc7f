package sinks

import (
	"errors"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
)

// The stages decide without NATS; these tests give them the time.

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestRouteStage(t *testing.T) {
	in := correlate.Incident{ID: "i", Rule: "r", Severity: "warning"}
	errOnly, _ := NewRoute(RouteConfig{MinSeverity: "error"})
	tests := []struct {
		name  string
		route *Route
		only  string
		want  routeVerdict
	}{
		{"no route takes all", nil, "", routeTake},
		{"replay for this sink", nil, "hook", routeTake},
		{"replay for another sink", nil, "other", routeSkip},
		{"replay for another sink beats the route", errOnly, "other", routeSkip},
		{"route does not take it", errOnly, "", routeFilter},
		{"replay for this sink still routed", errOnly, "hook", routeFilter},
	}
	for _, tc := range tests {
		if got := routeStage("hook", tc.route, tc.only, in); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMuteStage(t *testing.T) {
	firing, updated, resolved := change(correlate.StatusFiring, 0, 1), change(correlate.StatusUpdated, 0, 2), change(correlate.StatusResolved, 0, 3)
	nextOcc := change(correlate.StatusFiring, 1, 1)
	tests := []struct {
		name        string
		in          correlate.Incident
		silenced    bool
		prev        *Held
		want        muteAction
		release     bool
		wantUnsent  bool
		wantHeldSeq int
	}{
		{"no silence, nothing held", updated, false, nil, mutePass, false, false, 0},
		{"no silence, newer than held: release", updated, false, &Held{Incident: firing}, mutePass, true, false, 0},
		{"no silence, same as held: release", firing, false, &Held{Incident: firing}, mutePass, true, false, 0},
		{"no silence, older than held: keep it", firing, false, &Held{Incident: updated}, mutePass, false, false, 0},
		{"silenced firing: held unsent", firing, true, nil, muteHold, false, true, 1},
		{"silenced update of a sent incident", updated, true, nil, muteHold, false, false, 2},
		{"silenced update keeps unsent", updated, true, &Held{Incident: firing, Unsent: true}, muteHold, false, true, 2},
		{"silenced redelivery older than held", firing, true, &Held{Incident: updated}, muteOlder, false, false, 0},
		{"resolved, never sent: dropped and released", resolved, true, &Held{Incident: firing, Unsent: true}, muteDrop, true, false, 0},
		{"resolved of a sent incident: held", resolved, true, &Held{Incident: updated}, muteHold, false, false, 3},
		{"new occurrence does not inherit unsent", change(correlate.StatusUpdated, 1, 2), true, &Held{Incident: firing, Unsent: true}, muteHold, false, false, 2},
		{"new occurrence firing held unsent", nextOcc, true, &Held{Incident: updated}, muteHold, false, true, 1},
	}
	for _, tc := range tests {
		var prev Held
		if tc.prev != nil {
			prev = *tc.prev
		}
		sid := ""
		if tc.silenced {
			sid = "s1"
		}
		got := muteStage(tc.in, sid, tc.silenced, prev, tc.prev != nil)
		if got.action != tc.want || got.release != tc.release {
			t.Errorf("%s: got action %v release %v, want %v %v", tc.name, got.action, got.release, tc.want, tc.release)
			continue
		}
		if got.action == muteHold && (got.held.Unsent != tc.wantUnsent || got.held.Incident.Seq != tc.wantHeldSeq || got.held.Silence != "s1") {
			t.Errorf("%s: held %+v, want unsent %v seq %d silence s1", tc.name, got.held, tc.wantUnsent, tc.wantHeldSeq)
		}
	}
}

func TestThrottleStage(t *testing.T) {
	in := change(correlate.StatusUpdated, 0, 2)
	if dec := throttleStage(nil, in); dec.Action != Deliver || dec.Incident.Status != correlate.StatusUpdated {
		t.Errorf("no throttle: %+v, want the change delivered as it is", dec)
	}
	c := &clock{t: t0}
	th := NewThrottle(ThrottleConfig{GroupWait: time.Minute}, c.now)
	dec := throttleStage(th, in)
	if dec.Action != Defer || !dec.Until.Equal(t0.Add(time.Minute)) {
		t.Fatalf("group_wait: %+v", dec)
	}
	for _, tc := range []struct {
		now  time.Time
		want time.Duration
	}{
		{t0, time.Minute},
		{t0.Add(59 * time.Second), time.Second},
		{t0.Add(time.Minute), 10 * time.Millisecond},
		{t0.Add(time.Hour), 10 * time.Millisecond},
	} {
		if got := deferWait(dec.Until, tc.now); got != tc.want {
			t.Errorf("deferWait at %s: %s, want %s", tc.now.Sub(t0), got, tc.want)
		}
	}
	c.step(time.Minute)
	if dec := throttleStage(th, in); dec.Action != Deliver || dec.Incident.Status != correlate.StatusFiring {
		t.Errorf("after group_wait: %+v, want delivered as firing", dec)
	}
}

func TestNewestDelivered(t *testing.T) {
	n := newNewestDelivered(time.Hour)
	first, second, third := change(correlate.StatusFiring, 0, 1), change(correlate.StatusUpdated, 0, 2), change(correlate.StatusResolved, 0, 3)
	steps := []struct {
		deliver *correlate.Incident
		at      time.Duration
		check   correlate.Incident
		want    bool
	}{
		{nil, 0, first, false},
		{&second, 0, first, true},
		{nil, 0, second, false},
		{nil, 0, third, false},
		{&first, time.Second, first, true}, // an older change does not lower the newest
		{&third, 2 * time.Second, second, true},
		{nil, 0, change(correlate.StatusFiring, 1, 1), false}, // a new occurrence is newer
		// Forgotten once older than keep (checked at most once a minute).
		{&correlate.Incident{ID: "other", StartedAt: t0}, 2 * time.Hour, second, false},
	}
	for i, s := range steps {
		if s.deliver != nil {
			n.delivered(*s.deliver, t0.Add(s.at))
		}
		if got := n.superseded(s.check); got != s.want {
			t.Errorf("step %d: superseded(seq %d) = %v, want %v", i, s.check.Seq, got, s.want)
		}
	}
}

type retryAfterErr time.Duration

func (e retryAfterErr) Error() string             { return "slow down" }
func (e retryAfterErr) RetryAfter() time.Duration { return time.Duration(e) }
func linearBackoff(attempt int) time.Duration     { return time.Duration(attempt) * time.Second }
func wrapped(err error) error                     { return errors.Join(errors.New("HTTP 429"), err) }
func (o outcome) String() string                  { return [...]string{"delivered", "retry", "give up"}[o] }
func (v routeVerdict) String() string             { return [...]string{"take", "skip", "filter"}[v] }
func (a muteAction) String() string               { return [...]string{"pass", "older", "drop", "hold"}[a] }
func (a admission) String() string                { return [...]string{"start", "queued", "hold", "duplicate"}[a] }

func TestRetryPolicy(t *testing.T) {
	p := retryPolicy{maxAttempts: 3, backoff: linearBackoff}
	fail := errors.New("boom")
	tests := []struct {
		name      string
		attempt   int
		retryable bool
		err       error
		want      outcome
		delay     time.Duration
	}{
		{"success", 1, true, nil, outDelivered, 0},
		{"success on the last attempt", 3, false, nil, outDelivered, 0},
		{"retryable failure", 1, true, fail, outRetry, time.Second},
		{"back-off grows", 2, true, fail, outRetry, 2 * time.Second},
		{"last attempt gives up", 3, true, fail, outGiveUp, 0},
		{"permanent failure gives up at once", 1, false, fail, outGiveUp, 0},
		{"longer Retry-After wins", 1, true, retryAfterErr(time.Minute), outRetry, time.Minute},
		{"shorter Retry-After loses", 2, true, retryAfterErr(time.Millisecond), outRetry, 2 * time.Second},
		{"wrapped Retry-After", 1, true, wrapped(retryAfterErr(time.Minute)), outRetry, time.Minute},
	}
	for _, tc := range tests {
		got, delay := p.decide(tc.attempt, tc.retryable, tc.err)
		if got != tc.want || delay != tc.delay {
			t.Errorf("%s: got %v %s, want %v %s", tc.name, got, delay, tc.want, tc.delay)
		}
	}
	var a attemptCounter
	if a.add(7) != 1 || a.add(7) != 2 || a.add(8) != 1 {
		t.Error("attempts not counted per change")
	}
	a.forget(7)
	if a.add(7) != 1 {
		t.Error("forgotten attempts still counted")
	}
}

func TestOrderQueue(t *testing.T) {
	inc := func(id string, seq uint64) *item { return &item{in: correlate.Incident{ID: id}, seq: seq} }
	type op struct {
		name string
		do   func(o *orderQueue) (admission, time.Duration)
		want admission
		// the hold-back delay is due back + [50ms, 100ms) jitter
		minDelay, maxDelay time.Duration
	}
	admitAt := func(it *item, at time.Duration) func(o *orderQueue) (admission, time.Duration) {
		return func(o *orderQueue) (admission, time.Duration) {
			a, d, _ := o.admit(it, t0.Add(at))
			return a, d
		}
	}
	a1, a2, a3, b1 := inc("a", 1), inc("a", 2), inc("a", 3), inc("b", 4)
	tests := []struct {
		name string
		prep func(o *orderQueue)
		ops  []op
	}{
		{"one in flight per incident, others queue", nil, []op{
			{"first starts", admitAt(a1, 0), admitStart, 0, 0},
			{"second queues", admitAt(a2, 0), admitQueued, 0, 0},
			{"redelivery dropped", admitAt(a2, 0), admitDuplicate, 0, 0},
			{"other incident starts", admitAt(b1, 0), admitStart, 0, 0},
		}},
		{"an earlier change away holds later ones back", func(o *orderQueue) {
			o.setAway(o.queueOf("a"), 1, t0.Add(time.Second))
		}, []op{
			{"later held until the earlier is due", admitAt(a2, 0), admitHold, 1050 * time.Millisecond, 1100 * time.Millisecond},
			{"and the one after it too", admitAt(a3, 0), admitHold, 1050 * time.Millisecond, 1100 * time.Millisecond},
			{"the away one itself goes", admitAt(a1, time.Second), admitStart, 0, 0},
		}},
		{"a change away too long is no longer waited for", func(o *orderQueue) {
			o.setAway(o.queueOf("a"), 1, t0)
		}, []op{
			{"past staleAway", admitAt(a2, 2*time.Minute), admitStart, 0, 0},
		}},
		{"unsure changes after a restart", func(o *orderQueue) {
			o.markUnsure("a", 1, t0.Add(unsureWait))
		}, []op{
			{"later change polls", admitAt(a2, 0), admitHold, 550 * time.Millisecond, 600 * time.Millisecond},
			{"after unsureWait the held-back one still holds later ones", admitAt(a3, unsureWait+time.Second), admitHold, 50 * time.Millisecond, 100 * time.Millisecond},
		}},
		{"unsure expired", func(o *orderQueue) {
			o.markUnsure("a", 1, t0.Add(unsureWait))
		}, []op{
			{"goes at once", admitAt(a2, unsureWait+time.Millisecond), admitStart, 0, 0},
		}},
	}
	for _, tc := range tests {
		o := newOrderQueue(4, time.Minute)
		if tc.prep != nil {
			tc.prep(o)
		}
		for _, op := range tc.ops {
			got, delay := op.do(o)
			if got != op.want || delay < op.minDelay || (op.maxDelay > 0 && delay >= op.maxDelay) {
				t.Errorf("%s: %s: got %v %s, want %v in [%s, %s)", tc.name, op.name, got, delay, op.want, op.minDelay, op.maxDelay)
			}
		}
	}
}

func TestOrderQueueWorkers(t *testing.T) {
	o := newOrderQueue(1, time.Minute)
	a1, a2 := &item{in: correlate.Incident{ID: "a"}, seq: 1}, &item{in: correlate.Incident{ID: "a"}, seq: 2}
	_, _, q := o.admit(a1, t0)
	if adm, _, _ := o.admit(a2, t0); adm != admitQueued {
		t.Fatalf("second change: %v", adm)
	}
	if _, ok := o.startIdle("b"); ok {
		t.Error("a repeat started with no slot free")
	}
	if _, ok := o.startIdle("a"); ok {
		t.Error("a repeat started on a busy incident")
	}
	next, rest := o.next("a", q, a1)
	if next != a2 || len(rest) != 0 {
		t.Fatalf("next = %v %v, want the queued change", next, rest)
	}
	if recheckDelay, hold := o.recheck(q, a2.seq, t0); hold {
		t.Errorf("nothing away, yet held %s", recheckDelay)
	}
	if next, _ := o.next("a", q, a2); next != nil || o.active != 0 || len(o.incs) != 0 || len(o.held) != 0 {
		t.Errorf("after the last change: next %v, active %d, incidents %d, held %d", next, o.active, len(o.incs), len(o.held))
	}
	o.wg.Done()
	q, ok := o.startIdle("b")
	if !ok {
		t.Fatal("a repeat did not start on an idle queue")
	}
	o.next("b", q, &item{in: correlate.Incident{ID: "b"}, repeat: true})
	o.wg.Done()
	o.stop()
	if _, ok := o.startIdle("b"); ok || !o.isStopping() {
		t.Error("a repeat started after stop")
	}
}

func TestDeadLetterMsg(t *testing.T) {
	at := t0.Add(90 * time.Second)
	tests := []struct {
		name, only, reason string
		attempts           int
		wantID             string
	}{
		{"gave up", "", "HTTP 400", 3, "dlq:hook:42:"},
		{"replay gave up again", "hook", "HTTP 400", 1, "dlq:hook:42:hook"},
		{"undecodable", "", "invalid character", 0, "dlq:hook:42:"},
	}
	for _, tc := range tests {
		msg := deadLetterMsg("klaxon.dlq", "hook", 42, "klaxon.incidents.error.r", []byte(`{"id":"i","rule":"r"}`), tc.only, tc.reason, tc.attempts, at)
		if msg.Subject != "klaxon.dlq.hook" || msg.Header.Get("Nats-Msg-Id") != tc.wantID || msg.Header.Get(HeaderStreamSeq) != "42" {
			t.Errorf("%s: subject %s, headers %v", tc.name, msg.Subject, msg.Header)
		}
		dl := deadLetterOf(7, msg.Header, msg.Data, t0)
		want := DeadLetter{Seq: 7, Sink: "hook", Error: tc.reason, Time: at, Attempts: tc.attempts, Subject: "klaxon.incidents.error.r", IncidentID: "i", Rule: "r"}
		if dl != want {
			t.Errorf("%s: read back %+v, want %+v", tc.name, dl, want)
		}
	}
}
