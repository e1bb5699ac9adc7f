package sinks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/sinks/internal/sinktest"
)

// hook is an HTTP endpoint whose answer the test scripts; it records the
// changes it accepted.
type hook struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	answer func(in correlate.Incident, n int) (int, http.Header) // n: requests so far, this one included
	n      int
	ok     []correlate.Incident
	times  []time.Time
	ids    []string
}

func newHook(t *testing.T, answer func(in correlate.Incident, n int) (int, http.Header)) *hook {
	h := &hook{t: t, answer: answer}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in correlate.Incident
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &in); err != nil {
			http.Error(w, "bad json", 400)
			return
		}
		h.mu.Lock()
		h.n++
		n := h.n
		h.times = append(h.times, time.Now())
		h.ids = append(h.ids, in.ID)
		answer := h.answer
		h.mu.Unlock()
		code, hdr := 200, http.Header(nil)
		if answer != nil {
			code, hdr = answer(in, n)
		}
		if code == -1 { // hang until the client gives up
			<-r.Context().Done()
			return
		}
		for k, v := range hdr {
			w.Header()[k] = v
		}
		w.WriteHeader(code)
		if code == 200 {
			h.mu.Lock()
			h.ok = append(h.ok, in)
			h.mu.Unlock()
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) setAnswer(f func(in correlate.Incident, n int) (int, http.Header)) {
	h.mu.Lock()
	h.answer = f
	h.mu.Unlock()
}

func (h *hook) delivered() []correlate.Incident {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]correlate.Incident(nil), h.ok...)
}

// httpSink is a minimal HTTP sink over DoHTTP: the Incident JSON.
type httpSink struct {
	name string
	url  string
}

func (s *httpSink) Name() string { return s.name }
func (s *httpSink) Close() error { return nil }
func (s *httpSink) Send(ctx context.Context, in correlate.Incident) (bool, error) {
	b, _ := json.Marshal(in)
	_, r, err := DoHTTP(ctx, nil, HTTPRequest{URL: s.url, Body: b})
	return r, err
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// lifecycle returns firing, updated…, resolved changes of incident id.
func lifecycle(id string, updates int) []correlate.Incident {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var out []correlate.Incident
	n := updates + 2
	for s := 1; s <= n; s++ {
		st := correlate.StatusUpdated
		switch s {
		case 1:
			st = correlate.StatusFiring
		case n:
			st = correlate.StatusResolved
		}
		in := correlate.Incident{ID: id, Rule: "r", Status: st, Severity: "error", Node: "n-" + id, Title: "T " + id,
			StartedAt: t0, UpdatedAt: t0.Add(time.Duration(s) * time.Minute), Seq: s, Count: s,
			Group: map[string]string{"node": "n-" + id}, Labels: map[string]string{}}
		if st == correlate.StatusResolved {
			r := in.UpdatedAt
			in.ResolvedAt = &r
		}
		out = append(out, in)
	}
	return out
}

func runDispatcher(t *testing.T, d *Dispatcher) (cancel func()) { return sinktest.Run(t, d) }

// checkOncePerChangeInOrder: every change arrived exactly once, and the
// changes of each incident in order.
func checkOncePerChangeInOrder(t *testing.T, got []correlate.Incident, want []correlate.Incident) {
	t.Helper()
	seen := map[string]int{}
	last := map[string]int{}
	for _, in := range got {
		seen[in.ChangeID()]++
		if in.Seq <= last[in.ID] {
			t.Errorf("incident %s: seq %d delivered after seq %d", in.ID, in.Seq, last[in.ID])
		}
		last[in.ID] = in.Seq
	}
	for _, in := range want {
		if seen[in.ChangeID()] != 1 {
			t.Errorf("change %s delivered %d times, want once", in.ChangeID(), seen[in.ChangeID()])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d deliveries, want %d", len(got), len(want))
	}
}

func TestDispatcherRetriesKeepOrderPerIncident(t *testing.T) {
	js := startJetStream(t)
	// The endpoint fails with 500 for a while, then works; incident
	// "stuck" fails longer, and must not hold up the others.
	start := time.Now()
	h := newHook(t, func(in correlate.Incident, n int) (int, http.Header) {
		if n <= 8 || (in.ID == "stuck" && time.Since(start) < 2*time.Second) {
			return 500, nil
		}
		return 200, nil
	})
	var all []correlate.Incident
	chs := [][]correlate.Incident{lifecycle("a", 2), lifecycle("b", 2), lifecycle("c", 2), lifecycle("stuck", 1)}
	for i := 0; i < 4; i++ { // interleave the incidents
		for _, c := range chs {
			if i < len(c) {
				sinktest.Publish(t, js, c[i])
				all = append(all, c[i])
			}
		}
	}
	d := NewDispatcher(js, &httpSink{name: "hook", url: h.srv.URL}, DispatcherConfig{
		MaxAttempts: 100, SendTimeout: 2 * time.Second, Parallelism: 3,
		Backoff: func(n int) time.Duration { return 20 * time.Millisecond * time.Duration(n) },
	}, quietLog())
	runDispatcher(t, d)
	sinktest.WaitFor(t, "the others while stuck fails", 10*time.Second, func() bool {
		n := 0
		for _, in := range h.delivered() {
			if in.ID != "stuck" {
				n++
			}
		}
		return n == 12
	})
	if time.Since(start) > 2*time.Second {
		t.Logf("note: the other incidents took %s", time.Since(start))
	}
	for _, in := range h.delivered() {
		if in.ID == "stuck" && time.Since(start) < 2*time.Second {
			t.Fatal("stuck delivered before it was fixed")
		}
	}
	sinktest.WaitFor(t, "every change", 20*time.Second, func() bool { return len(h.delivered()) >= len(all) })
	time.Sleep(200 * time.Millisecond) // a late duplicate would show here
	checkOncePerChangeInOrder(t, h.delivered(), all)
	st := d.Stats()
	if st.Retried == 0 || st.Delivered != uint64(len(all)) || st.DeadLettered != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestDispatcherHangingSinkDoesNotHoldUpOthers(t *testing.T) {
	js := startJetStream(t)
	var hangMu sync.Mutex
	hang := true
	slow := newHook(t, func(correlate.Incident, int) (int, http.Header) {
		hangMu.Lock()
		defer hangMu.Unlock()
		if hang {
			return -1, nil
		}
		return 200, nil
	})
	fast := newHook(t, nil)
	var all []correlate.Incident
	for i := 0; i < 5; i++ {
		in := lifecycle(fmt.Sprint("h", i), 0)[0]
		sinktest.Publish(t, js, in)
		all = append(all, in)
	}
	cfg := DispatcherConfig{SendTimeout: 300 * time.Millisecond, MaxAttempts: 100, Parallelism: 2,
		Backoff: func(int) time.Duration { return 50 * time.Millisecond }}
	dSlow := NewDispatcher(js, &httpSink{name: "slow", url: slow.srv.URL}, cfg, quietLog())
	dFast := NewDispatcher(js, &httpSink{name: "fast", url: fast.srv.URL}, cfg, quietLog())
	t0 := time.Now()
	runDispatcher(t, dSlow)
	runDispatcher(t, dFast)
	sinktest.WaitFor(t, "the fast sink", 5*time.Second, func() bool { return len(fast.delivered()) == 5 })
	if el := time.Since(t0); el > 2*time.Second {
		t.Errorf("fast sink took %s while the other hung", el)
	}
	sinktest.WaitFor(t, "a second timed-out attempt of one incident", 10*time.Second, func() bool {
		slow.mu.Lock()
		defer slow.mu.Unlock()
		n := 0
		for _, id := range slow.ids {
			if id == slow.ids[0] {
				n++
			}
		}
		return n >= 2
	})
	if len(slow.delivered()) != 0 {
		t.Fatal("hanging sink delivered")
	}
	// The timeout applies: the attempts of one incident are SendTimeout
	// plus back-off apart.
	slow.mu.Lock()
	var first []time.Time
	for i, id := range slow.ids {
		if id == slow.ids[0] {
			first = append(first, slow.times[i])
		}
	}
	slow.mu.Unlock()
	if len(first) < 2 {
		t.Fatalf("incident tried %d times", len(first))
	}
	if gap := first[1].Sub(first[0]); gap < 300*time.Millisecond || gap > 3*time.Second {
		t.Errorf("attempts %s apart; want about SendTimeout + back-off", gap)
	}
	hangMu.Lock()
	hang = false
	hangMu.Unlock()
	sinktest.WaitFor(t, "the slow sink after it recovered", 10*time.Second, func() bool { return len(slow.delivered()) >= 5 })
	checkOncePerChangeInOrder(t, slow.delivered(), all)
}

func TestDeadLetterListReplayToOneSink(t *testing.T) {
	js := startJetStream(t)
	bad := newHook(t, func(correlate.Incident, int) (int, http.Header) { return 400, nil })
	good := newHook(t, nil)
	in := lifecycle("dl", 0)[0]
	in.Rule = "nomad.client.gc_pressure"
	sinktest.Publish(t, js, in)
	cfg := DispatcherConfig{MaxAttempts: 5, Backoff: func(int) time.Duration { return 10 * time.Millisecond }}
	dBad := NewDispatcher(js, &httpSink{name: "bad.sink", url: bad.srv.URL}, cfg, quietLog())
	dGood := NewDispatcher(js, &httpSink{name: "good", url: good.srv.URL}, cfg, quietLog())
	runDispatcher(t, dBad)
	runDispatcher(t, dGood)
	sinktest.WaitFor(t, "dead letter", 10*time.Second, func() bool { return dBad.Stats().DeadLettered == 1 })
	sinktest.WaitFor(t, "good delivery", 10*time.Second, func() bool { return len(good.delivered()) == 1 })
	if bad.n != 1 {
		t.Errorf("a 400 was tried %d times, want once", bad.n)
	}
	ctx := context.Background()
	list, err := ListDLQ(ctx, js, "bad.sink", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("ListDLQ: %+v", list)
	}
	dl := list[0]
	if dl.Sink != "bad.sink" || dl.IncidentID != "dl" || dl.Rule != in.Rule || dl.Status != "firing" || dl.Seq == 0 ||
		!strings.Contains(dl.Error, "HTTP 400") || dl.Subject != "klaxon.incidents.error."+in.Rule || dl.Attempts != 1 || time.Since(dl.Time) > time.Minute {
		t.Errorf("dead letter %+v", dl)
	}
	if other, _ := ListDLQ(ctx, js, "good", 10); len(other) != 0 {
		t.Errorf("good has dead letters: %+v", other)
	}
	// The fix, then the replay: only the failed sink gets it.
	bad.setAnswer(nil)
	n, err := ReplayDLQ(ctx, js, "bad.sink", nil)
	if err != nil || n != 1 {
		t.Fatalf("ReplayDLQ = %d, %v", n, err)
	}
	sinktest.WaitFor(t, "replayed delivery", 10*time.Second, func() bool { return len(bad.delivered()) == 1 })
	sinktest.WaitFor(t, "the other sink skipping the replay", 10*time.Second, func() bool { return dGood.Stats().Skipped == 1 })
	if got := len(good.delivered()); got != 1 {
		t.Errorf("good sink got %d deliveries, want 1", got)
	}
	if got := bad.delivered()[0]; got.ChangeID() != in.ChangeID() {
		t.Errorf("replayed %s, want %s", got.ChangeID(), in.ChangeID())
	}
	if list, _ := ListDLQ(ctx, js, "bad.sink", 10); len(list) != 0 {
		t.Errorf("dead letter not deleted after replay: %+v", list)
	}
	// Replaying it again is a no-op (deleted), and a bad sequence is an error.
	if n, err := ReplayDLQ(ctx, js, "bad.sink", []uint64{dl.Seq}); n != 0 || err == nil {
		t.Errorf("second replay = %d, %v", n, err)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	js := startJetStream(t)
	h := newHook(t, func(_ correlate.Incident, n int) (int, http.Header) {
		if n == 1 {
			return 429, http.Header{"Retry-After": {"2"}}
		}
		return 200, nil
	})
	sinktest.Publish(t, js, lifecycle("ra", 0)[0])
	d := NewDispatcher(js, &httpSink{name: "ra", url: h.srv.URL}, DispatcherConfig{
		Backoff: func(int) time.Duration { return 10 * time.Millisecond },
	}, quietLog())
	runDispatcher(t, d)
	sinktest.WaitFor(t, "delivery", 10*time.Second, func() bool { return len(h.delivered()) == 1 })
	h.mu.Lock()
	gap := h.times[1].Sub(h.times[0])
	h.mu.Unlock()
	if gap < 2*time.Second || gap > 4*time.Second {
		t.Fatalf("retried %s after a 429 with Retry-After: 2", gap)
	}
	t.Logf("retried %s after the 429", gap.Round(time.Millisecond))
}

func TestCancelledDispatcherLosesNothing(t *testing.T) {
	js := startJetStream(t)
	h := newHook(t, func(correlate.Incident, int) (int, http.Header) {
		time.Sleep(30 * time.Millisecond)
		return 200, nil
	})
	var all []correlate.Incident
	for i := 0; i < 10; i++ {
		for _, in := range lifecycle(fmt.Sprint("k", i), 1) {
			sinktest.Publish(t, js, in)
			all = append(all, in)
		}
	}
	// A short send timeout keeps the ack wait (and so the wait for changes
	// acknowledged above the ack floor after the restart) within the test.
	cfg := DispatcherConfig{Parallelism: 4, SendTimeout: 2 * time.Second}
	d1 := NewDispatcher(js, &httpSink{name: "k", url: h.srv.URL}, cfg, quietLog())
	stop := runDispatcher(t, d1)
	sinktest.WaitFor(t, "some deliveries", 10*time.Second, func() bool { return len(h.delivered()) >= 5 })
	stop()
	if n := len(h.delivered()); n >= len(all) {
		t.Fatalf("all %d delivered before the cancel; the test proves nothing", n)
	}
	d2 := NewDispatcher(js, &httpSink{name: "k", url: h.srv.URL}, cfg, quietLog())
	runDispatcher(t, d2)
	sinktest.WaitFor(t, "every change after the restart", 20*time.Second, func() bool {
		seen := map[string]bool{}
		for _, in := range h.delivered() {
			seen[in.ChangeID()] = true
		}
		return len(seen) == len(all)
	})
	// Order per incident holds across the restart (a change cancelled in
	// flight may arrive twice: at-least-once).
	last := map[string]int{}
	for _, in := range h.delivered() {
		if in.Seq < last[in.ID] {
			t.Errorf("incident %s: seq %d after %d", in.ID, in.Seq, last[in.ID])
		}
		last[in.ID] = in.Seq
	}
}

var _ = bytes.NewReader

// TestOlderChangeAfterNewerIsNotSent: a change delivered again after a
// newer change of its incident went out (its ack was lost in a crash) is
// acknowledged without being sent: a stale firing after the resolution
// would reopen the page. An operator's DLQ replay is still sent.
func TestOlderChangeAfterNewerIsNotSent(t *testing.T) {
	js := startJetStream(t)
	h := newHook(t, func(correlate.Incident, int) (int, http.Header) { return 200, nil })
	d := NewDispatcher(js, &httpSink{name: "hook", url: h.srv.URL}, DispatcherConfig{SendTimeout: 2 * time.Second}, quietLog())
	runDispatcher(t, d)
	ch := lifecycle("x", 1) // firing, updated, resolved
	sinktest.Publish(t, js, ch[0])
	sinktest.Publish(t, js, ch[2])
	sinktest.WaitFor(t, "firing and resolved delivered", 10*time.Second, func() bool { return len(h.delivered()) == 2 })
	// The stale update, published as a redelivery would arrive.
	sinktest.Publish(t, js, ch[1])
	sinktest.WaitFor(t, "the stale change acknowledged", 10*time.Second, func() bool { return d.Stats().Superseded == 1 })
	if got := h.delivered(); len(got) != 2 || got[1].Status != correlate.StatusResolved {
		t.Fatalf("deliveries %+v", got)
	}
	// A replay for this sink goes out even though it is older.
	b, _ := json.Marshal(ch[1])
	msg := nats.NewMsg("klaxon.incidents.error.r")
	msg.Data = b
	msg.Header.Set(HeaderOnlySink, "hook")
	if _, err := js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	sinktest.WaitFor(t, "the replayed change delivered", 10*time.Second, func() bool { return len(h.delivered()) == 3 })
}

// TestOrderKeptAcrossACrash: a run is killed while the firing change of
// an incident waits for a retry (NAKed with a delay) and its update was
// held back behind it (NAKed at once). The next run holds the update until
// the firing came back, so the incident's changes arrive in order.
func TestOrderKeptAcrossACrash(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	ch := lifecycle("x", 1)
	sinktest.Publish(t, js, ch[0])
	sinktest.Publish(t, js, ch[1])
	cfg := DispatcherConfig{SendTimeout: time.Second}
	probe := NewDispatcher(js, &httpSink{name: "k"}, cfg, quietLog())
	cons, err := js.CreateOrUpdateConsumer(ctx, "KLAXON_INCIDENTS", jetstream.ConsumerConfig{
		Durable: ConsumerName("k"), FilterSubject: natslayout.IncidentsSubjects, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: probe.ackWait(), MaxDeliver: -1, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != 2 {
		t.Fatalf("fetched %d", len(msgs))
	}
	if err := msgs[0].NakWithDelay(2 * time.Second); err != nil { // the firing's retry
		t.Fatal(err)
	}
	if err := msgs[1].Nak(); err != nil { // the update, back at once
		t.Fatal(err)
	}
	h := newHook(t, func(correlate.Incident, int) (int, http.Header) { return 200, nil })
	runDispatcher(t, NewDispatcher(js, &httpSink{name: "k", url: h.srv.URL}, cfg, quietLog()))
	sinktest.WaitFor(t, "both changes", 20*time.Second, func() bool { return len(h.delivered()) == 2 })
	got := h.delivered()
	if got[0].Seq != 1 || got[1].Seq != 2 {
		t.Fatalf("delivered seq %d then %d, want 1 then 2", got[0].Seq, got[1].Seq)
	}
}
