package nomadevents

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/testkit"
)

// fakeNomad stands in for the Nomad agent's /v1/event/stream (no Nomad
// binary here): chunked NDJSON, one frame per line, {} heartbeats, the
// index and topic query parameters honoured like Nomad's event broker does
// (the subscription starts at the first buffered frame whose index is >=
// the requested one; frames without an event of a subscribed topic are not
// sent).
type fakeNomad struct {
	mu         sync.Mutex
	frames     []fakeFrame
	token      string
	status     int    // answer every request with this status
	minIndex   uint64 // buffer head: older frames were evicted
	maxIndex   uint64 // frames beyond are not published yet (0: all)
	closeAfter int    // the first connection ends after this many frames
	requests   []http.Request
	tokens     []string
	// api answers the agent's other endpoints by path (/v1/nodes,
	// /v1/allocations); absent paths are 404. apiQueries records their
	// requests' queries.
	api        map[string]fakeAPI
	apiQueries []url.Values
}

// fakeAPI is the answer of an API endpoint: a status (0: 200) and body,
// with the index in X-Nomad-Index.
type fakeAPI struct {
	status int
	body   []byte
	index  uint64
}

type fakeFrame struct {
	index  uint64
	events []fakeEvent
}

type fakeEvent struct {
	topic string
	raw   json.RawMessage
}

func newFakeNomad(t *testing.T, lines [][]byte) *fakeNomad {
	f := &fakeNomad{}
	for _, l := range lines {
		f.add(t, l)
	}
	return f
}

func (f *fakeNomad) add(t *testing.T, line []byte) {
	var fr struct {
		Index  uint64
		Events []json.RawMessage
	}
	if err := json.Unmarshal(line, &fr); err != nil {
		t.Fatal(err)
	}
	if fr.Index == 0 {
		return // heartbeat: the server makes its own
	}
	ff := fakeFrame{index: fr.Index}
	for _, e := range fr.Events {
		var h struct{ Topic string }
		if err := json.Unmarshal(e, &h); err != nil {
			t.Fatal(err)
		}
		ff.events = append(ff.events, fakeEvent{h.Topic, e})
	}
	f.mu.Lock()
	f.frames = append(f.frames, ff)
	f.mu.Unlock()
}

func (f *fakeNomad) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/event/stream" {
		f.mu.Lock()
		a, ok := f.api[r.URL.Path]
		f.apiQueries = append(f.apiQueries, r.URL.Query())
		f.mu.Unlock()
		switch {
		case !ok:
			http.NotFound(w, r)
		case a.status != 0:
			http.Error(w, http.StatusText(a.status), a.status)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Nomad-Index", strconv.FormatUint(a.index, 10))
			_, _ = w.Write(a.body)
		}
		return
	}
	f.mu.Lock()
	f.requests = append(f.requests, *r)
	f.tokens = append(f.tokens, r.Header.Get("X-Nomad-Token"))
	first := len(f.requests) == 1
	status, token, minIndex, maxIndex, closeAfter := f.status, f.token, f.minIndex, f.maxIndex, f.closeAfter
	frames := slices.Clone(f.frames)
	f.mu.Unlock()
	if status != 0 {
		http.Error(w, http.StatusText(status), status)
		return
	}
	if token != "" && r.Header.Get("X-Nomad-Token") != token {
		http.Error(w, "Permission denied", http.StatusForbidden)
		return
	}
	q := r.URL.Query()
	index, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	topics := map[string]bool{}
	for _, t := range q["topic"] {
		name, _, _ := strings.Cut(t, ":")
		topics[name] = true
	}
	w.Header().Set("Content-Type", "application/json")
	fl := w.(http.Flusher)
	write := func(s []byte) bool {
		if _, err := w.Write(s); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	write([]byte("{}\n"))
	if n := len(frames); n > 0 && frames[n-1].index < index {
		// Nothing buffered at or after the requested index (the server's
		// index went back): the subscription waits for new frames, which
		// are the buffered ones here.
		index = 0
	}
	sent := 0
	for _, fr := range frames {
		if fr.index < index || fr.index < minIndex || (maxIndex > 0 && fr.index > maxIndex) {
			continue
		}
		var evs []string
		for _, e := range fr.events {
			if topics[e.topic] || topics["*"] || len(topics) == 0 {
				evs = append(evs, string(e.raw))
			}
		}
		if len(evs) == 0 {
			continue
		}
		// Nomad writes the members in name order: Events, then Index.
		if !write([]byte(`{"Events":[` + strings.Join(evs, ",") + `],"Index":` + strconv.FormatUint(fr.index, 10) + "}\n")) {
			return
		}
		sent++
		if sent%5 == 0 {
			write([]byte("{}\n"))
		}
		if first && closeAfter > 0 && sent == closeAfter {
			return // the agent closes the stream (leader change)
		}
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-time.After(20 * time.Millisecond):
			if !write([]byte("{}\n")) {
				return
			}
		}
	}
}

func (f *fakeNomad) request(i int) (http.Request, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[i], f.tokens[i]
}

func (f *fakeNomad) nrequests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

// syncBuf is a log sink safe for concurrent writes and reads.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// run runs a Source until stop is called, committing every event as it is
// received (as the bus does after JetStream acknowledged it).
type run struct {
	src    *Source
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	events []ingest.Event
}

func startSource(t *testing.T, cfg Config, log *slog.Logger) *run {
	t.Helper()
	src, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan ingest.Event)
	r := &run{src: src, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- src.Run(ctx, out) }()
	go func() {
		for {
			select {
			case ev := <-out:
				r.mu.Lock()
				r.events = append(r.events, ev)
				r.mu.Unlock()
				if ev.Commit != nil {
					ev.Commit()
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *run) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	return nil
}

func (r *run) got() []ingest.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// waitFor polls until cond holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, d, what, cond)
}

func ids(evs []ingest.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.ID)
	}
	slices.Sort(out)
	return out
}

func expectedIDs(t *testing.T, lines [][]byte, minIndex, maxIndex uint64) []string {
	t.Helper()
	var keep [][]byte
	for _, l := range lines {
		if idx := frameIndex(t, l); idx >= minIndex && (maxIndex == 0 || idx <= maxIndex) && idx > 0 {
			keep = append(keep, l)
		}
	}
	d := NewDecoder(DecoderConfig{})
	var evs []ingest.Event
	for _, l := range keep {
		_ = d.Frame(l, func(e ingest.Event) { evs = append(evs, e) })
	}
	return ids(evs)
}

func frameIndex(t *testing.T, l []byte) uint64 {
	var fr struct{ Index uint64 }
	if err := json.Unmarshal(l, &fr); err != nil {
		t.Fatal(err)
	}
	return fr.Index
}

func checkNoDuplicates(t *testing.T, evs []ingest.Event) {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[e.ID] {
			t.Errorf("event %s delivered twice", e.ID)
		}
		seen[e.ID] = true
	}
}

func TestSourceStreamsResumesAndContinues(t *testing.T) {
	lines := readLinesOf(t, capturePath(t, "reconnect"))
	want := expectedIDs(t, lines, 0, 0)
	fake := newFakeNomad(t, lines)
	fake.token = "s3cret-token"
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	cpPath := filepath.Join(t.TempDir(), "checkpoints.json")
	cps, err := ingest.OpenCheckpoints(cpPath)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := Config{Address: srv.URL, Token: "s3cret-token", Checkpoints: cps, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}

	r1 := startSource(t, cfg, log)
	waitFor(t, "all events", 10*time.Second, func() bool { return len(r1.got()) >= len(want) })
	// The stream goes quiet: the state of the last frame is checkpointed.
	key := "nomadevents:" + srv.URL
	waitFor(t, "checkpoint", 5*time.Second, func() bool {
		var cp checkpoint
		ok, _ := cps.Get(key, &cp)
		return ok && cp.Index == 65
	})
	if err := r1.stop(t); err != nil {
		t.Fatal(err)
	}
	got := r1.got()
	checkNoDuplicates(t, got)
	if g := ids(got); !slices.Equal(g, want) {
		t.Errorf("delivered %d events, want %d", len(g), len(want))
	}
	st := r1.src.Stats()
	if st.Heartbeats == 0 || st.LastIndex != 65 || st.Gaps != 0 || st.Malformed != 0 || st.Reconnects != 0 {
		t.Errorf("stats %+v", st)
	}
	req, tok := fake.request(0)
	if tok != "s3cret-token" || req.URL.Query().Get("index") != "" || req.URL.Query().Get("namespace") != "*" {
		t.Errorf("first request %s token %q", req.URL, tok)
	}
	if topics := req.URL.Query()["topic"]; !slices.Equal(topics, DefaultTopics) {
		t.Errorf("topics %v", topics)
	}

	// Restart from the checkpoint file: nothing is delivered again; a new
	// change continues the transitions (prev_status from the saved state).
	fake.add(t, []byte(`{"Index":70,"Events":[{"Topic":"Node","Type":"NodeStreamEvent","Key":"0c2557ad-86d2-4d20-684e-5591a33d72a1","Index":70,"Payload":{"Node":{"ID":"0c2557ad-86d2-4d20-684e-5591a33d72a1","Name":"win-client-2","Status":"down","StatusUpdatedAt":1795313100,"Events":[{"Message":"Node heartbeat missed","Timestamp":"2026-11-22T02:05:00Z"}]}}}]}`))
	cps2, err := ingest.OpenCheckpoints(cpPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Checkpoints = cps2
	cfg.Identity = ingest.NewIdentity()
	r2 := startSource(t, cfg, log)
	waitFor(t, "the new change", 10*time.Second, func() bool { return len(r2.got()) >= 1 })
	time.Sleep(200 * time.Millisecond) // anything else would arrive with it
	if err := r2.stop(t); err != nil {
		t.Fatal(err)
	}
	got2 := r2.got()
	if len(got2) != 1 || got2[0].ID != "nomadev:70:NodeStreamEvent:0c2557ad-86d2-4d20-684e-5591a33d72a1" {
		t.Fatalf("after restart: %v", ids(got2))
	}
	if e := got2[0]; e.Field("prev_status") != "ready" || e.Node != "win-client-2" || e.Msg != "node win-client-2 is down (was ready)" {
		t.Errorf("restored transition: %s %v", e.Msg, e.Fields)
	}
	if req, _ := fake.request(1); req.URL.Query().Get("index") != "65" {
		t.Errorf("resumed with %s", req.URL)
	}
	if s := r2.src.Stats(); s.Resent != 1 || s.Gaps != 0 {
		t.Errorf("stats after restart %+v", s)
	}
	if strings.Contains(logs.String(), "s3cret") {
		t.Error("the token appears in the logs")
	}
}

// The agent closes the stream mid-way (leader change), between the two
// frames that carry index 14: the reconnect resumes at 14, nothing is lost
// or delivered twice.
func TestSourceSurvivesStreamClose(t *testing.T) {
	lines := readLinesOf(t, capturePath(t, "reconnect"))
	want := expectedIDs(t, lines, 0, 0)
	fake := newFakeNomad(t, lines)
	fake.closeAfter = 7 // frames 8..13, then the first frame of index 14
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	r := startSource(t, Config{Address: srv.URL, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}, discard)
	waitFor(t, "all events", 10*time.Second, func() bool { return len(r.got()) >= len(want) })
	time.Sleep(100 * time.Millisecond)
	_ = r.stop(t)
	got := r.got()
	checkNoDuplicates(t, got)
	if g := ids(got); !slices.Equal(g, want) {
		t.Errorf("delivered %d events, want %d", len(g), len(want))
	}
	if fake.nrequests() < 2 {
		t.Fatal("no reconnect")
	}
	if req, _ := fake.request(1); req.URL.Query().Get("index") != "14" {
		t.Errorf("reconnected with %s", req.URL)
	}
	if st := r.src.Stats(); st.Reconnects < 1 || st.Resent != 2 || st.DuplicateTopics != 0 || st.Gaps != 0 {
		t.Errorf("stats %+v", st)
	}
}

// The resume index left the agent's buffer: a klaxon.Gap event and the
// Gaps metric.
func TestSourceReportsGap(t *testing.T) {
	lines := readLinesOf(t, capturePath(t, "reconnect"))
	fake := newFakeNomad(t, lines)
	fake.maxIndex = 20
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	cps, err := ingest.OpenCheckpoints(filepath.Join(t.TempDir(), "cp.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Address: srv.URL, Checkpoints: cps, MinBackoff: 5 * time.Millisecond}
	r1 := startSource(t, cfg, discard)
	want1 := expectedIDs(t, lines, 0, 20)
	waitFor(t, "events up to index 20", 10*time.Second, func() bool { return len(r1.got()) >= len(want1) })
	waitFor(t, "checkpoint", 5*time.Second, func() bool {
		var cp checkpoint
		ok, _ := cps.Get("nomadevents:"+srv.URL, &cp)
		return ok && cp.Index == 20
	})
	_ = r1.stop(t)

	// Meanwhile the agent's buffer moved on: it holds index 40 and later.
	fake.mu.Lock()
	fake.maxIndex, fake.minIndex = 0, 40
	fake.mu.Unlock()
	r2 := startSource(t, cfg, discard)
	// What a decoder that saw the frames up to 20, then those from 40 on,
	// emits for the latter (task events emitted before are not repeated).
	var want2 []string
	{
		d := NewDecoder(DecoderConfig{})
		var evs []ingest.Event
		for _, l := range lines {
			idx := frameIndex(t, l)
			switch {
			case idx > 0 && idx <= 20:
				_ = d.Frame(l, func(ingest.Event) {})
			case idx >= 40:
				_ = d.Frame(l, func(e ingest.Event) { evs = append(evs, e) })
			}
		}
		want2 = ids(evs)
	}
	waitFor(t, "events from index 40", 10*time.Second, func() bool { return len(r2.got()) >= len(want2)+1 })
	_ = r2.stop(t)
	got := r2.got()
	g := got[0]
	if g.Kind != KindGap || g.Level != ingest.LevelWarn || g.Field("from_index") != "21" || g.Field("to_index") != "40" ||
		g.Msg != "event stream gap: resumed at index 40, wanted 21; changes in between were not seen" {
		t.Errorf("gap event %+v", g)
	}
	if st := r2.src.Stats(); st.Gaps != 1 {
		t.Errorf("gaps %d", st.Gaps)
	}
	if rest := ids(got[1:]); !slices.Equal(rest, want2) {
		t.Errorf("after the gap: %d events, want %d", len(rest), len(want2))
	}
}

// TestSourceFollowsAnIndexReset: the server's index went back below the
// checkpoint (a dev agent restarted without its state, a restored cluster):
// its frames are followed from the new index, said once at WARN with both
// indexes and counted, not dropped as stale, and no gap is reported.
func TestSourceFollowsAnIndexReset(t *testing.T) {
	lines := readLinesOf(t, capturePath(t, "reconnect"))
	var early [][]byte
	for _, l := range lines {
		if idx := frameIndex(t, l); idx > 0 && idx <= 30 {
			early = append(early, l)
		}
	}
	fake := newFakeNomad(t, lines)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	cps, err := ingest.OpenCheckpoints(filepath.Join(t.TempDir(), "cp.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Address: srv.URL, Checkpoints: cps, MinBackoff: 5 * time.Millisecond}
	r1 := startSource(t, cfg, discard)
	want1 := expectedIDs(t, lines, 0, 0)
	waitFor(t, "the whole recording", 10*time.Second, func() bool { return len(r1.got()) >= len(want1) })
	var last uint64
	for _, l := range lines {
		last = max(last, frameIndex(t, l))
	}
	waitFor(t, "checkpoint", 5*time.Second, func() bool {
		var cp checkpoint
		ok, _ := cps.Get("nomadevents:"+srv.URL, &cp)
		return ok && cp.Index == last
	})
	_ = r1.stop(t)

	// The server comes back with its state gone: its index starts again
	// and its first frames are the early part of the recording.
	fake.mu.Lock()
	fake.frames = nil
	fake.mu.Unlock()
	for _, l := range early {
		fake.add(t, l)
	}
	var logs syncBuf
	r2 := startSource(t, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	// What the decoder that saw the recording emits for the new server's
	// frames: not the task events it already emitted (a restored cluster
	// sends its allocations' old events again), every other change anew.
	var want2 []string
	{
		d := NewDecoder(DecoderConfig{})
		var evs []ingest.Event
		for _, l := range lines {
			_ = d.Frame(l, func(ingest.Event) {})
		}
		d.resetIndex()
		for _, l := range early {
			_ = d.Frame(l, func(e ingest.Event) { evs = append(evs, e) })
		}
		want2 = ids(evs)
	}
	waitFor(t, "the new server's events", 10*time.Second, func() bool { return len(r2.got()) >= len(want2) })
	_ = r2.stop(t)
	got := r2.got()
	if len(got) != len(want2) {
		t.Errorf("%d events after the reset, want %d", len(got), len(want2))
	}
	for i, ev := range got {
		if ev.Kind == KindGap {
			t.Errorf("event %d: a gap reported for an index reset: %s", i, ev.Msg)
		}
	}
	// New IDs: an index used again is not taken for a re-send.
	old := map[string]bool{}
	for _, ev := range r1.got() {
		old[ev.ID] = true
	}
	for _, ev := range got {
		if old[ev.ID] {
			t.Errorf("event %s after the reset has the ID of an event before it", ev.ID)
		}
	}
	st := r2.src.Stats()
	if st.Resets != 1 || st.Stale != 0 || st.Gaps != 0 {
		t.Errorf("stats: resets %d stale %d gaps %d, want 1 0 0", st.Resets, st.Stale, st.Gaps)
	}
	if n := strings.Count(logs.String(), "event index went backwards"); n != 1 {
		t.Errorf("%d reset warnings, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), fmt.Sprintf("checkpoint_index=%d", last)) {
		t.Errorf("the warning does not name the checkpoint index %d:\n%s", last, logs.String())
	}
	var cp checkpoint
	if ok, _ := cps.Get("nomadevents:"+srv.URL, &cp); !ok || cp.Index > 30 {
		t.Errorf("checkpoint index %d after the reset, want the new server's (≤ 30)", cp.Index)
	}
}

func TestSourceRefused(t *testing.T) {
	tests := []struct {
		status int
		want   []string
	}{
		{403, []string{"nomad event stream: 403 Permission denied", `the token needs node:read for topic Node and namespace read-job on "*" for topics Allocation, Evaluation, Deployment, Job`}},
		{401, []string{"401", "the token needs node:read"}},
		{400, []string{"400", "rejected the request"}},
	}
	for _, tc := range tests {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			fake := &fakeNomad{status: tc.status}
			if tc.status == 403 {
				fake.status, fake.token = 0, "the-right-one"
			}
			srv := httptest.NewServer(fake)
			t.Cleanup(srv.Close)
			var logs syncBuf
			src, err := New(Config{Address: srv.URL, Token: "wrong-s3cret", MinBackoff: time.Millisecond}, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = src.Run(ctx, make(chan ingest.Event))
			if err == nil {
				t.Fatal("Run returned nil")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "wrong-s3cret") || strings.Contains(logs.String(), "wrong-s3cret") {
				t.Error("the token leaked into the error or the logs")
			}
			if fake.nrequests() != 1 {
				t.Errorf("%d requests: a refusal must not be retried", fake.nrequests())
			}
		})
	}
}

// An unreachable agent is retried with growing, jittered delays.
func TestSourceBackoff(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + l.Addr().String()
	l.Close() // nothing listens there any more
	var logs syncBuf
	log := slog.New(slog.NewTextHandler(&logs, nil))
	r := startSource(t, Config{Address: addr, MinBackoff: 20 * time.Millisecond, MaxBackoff: 400 * time.Millisecond}, log)
	re := regexp.MustCompile(`reconnecting".* in=(\S+)`)
	var delays []time.Duration
	waitFor(t, "6 attempts", 10*time.Second, func() bool {
		delays = delays[:0]
		for _, m := range re.FindAllStringSubmatch(logs.String(), -1) {
			d, err := time.ParseDuration(m[1])
			if err != nil {
				t.Fatal(err)
			}
			delays = append(delays, d)
		}
		return len(delays) >= 6
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	// Jitter is ±50% around 20, 40, 80, 160, 320, 400 ms.
	if delays[0] > 30*time.Millisecond || delays[3] <= delays[0] || delays[5] < 160*time.Millisecond || slices.Max(delays) > 600*time.Millisecond {
		t.Errorf("delays %v", delays)
	}
	if st := r.src.Stats(); st.Reconnects < 5 {
		t.Errorf("reconnects %d", st.Reconnects)
	}
}

func TestSourceTokenSources(t *testing.T) {
	fake := &fakeNomad{}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("  from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOMAD_TOKEN", "from-env")
	for i, cfg := range []Config{
		{Token: "from-config", TokenFile: tokenFile},
		{TokenFile: tokenFile},
		{},
	} {
		cfg.Address = srv.URL
		r := startSource(t, cfg, discard)
		waitFor(t, "request", 5*time.Second, func() bool { return fake.nrequests() > i })
		_ = r.stop(t)
		_, tok := fake.request(i)
		if want := []string{"from-config", "from-file", "from-env"}[i]; tok != want {
			t.Errorf("case %d: token %q, want %q", i, tok, want)
		}
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{Address: "ftp://x"}, "address"},
		{Config{Address: "http://"}, "address"},
		{Config{Address: "http://x", Topics: []string{"Node", "Frobs"}}, "topics[1]"},
		{Config{Address: "http://x", Topics: []string{"Node:a:b"}}, "topics[0]"},
		{Config{Address: "http://x", MinBackoff: -1}, "min_backoff"},
		{Config{Address: "http://x", MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "max_backoff"},
		{Config{Address: "http://x", TokenFile: "/nonexistent/token"}, "token_file"},
		{Config{Address: "http://x", TLS: TLSConfig{CACert: "/nonexistent/ca.pem"}}, "tls.ca_cert"},
		{Config{Address: "http://x", TLS: TLSConfig{ClientCert: "/etc/hostname"}}, "tls.client_key"},
	}
	for _, tc := range tests {
		_, err := New(tc.cfg, discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
	s, err := New(Config{Address: "http://nomad.example:4646"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Name() != "nomadevents:http://nomad.example:4646" || s.cfg.Namespace != "*" || !slices.Equal(s.cfg.Topics, DefaultTopics) ||
		s.cfg.MinBackoff != DefaultMinBackoff || s.cfg.MaxBackoff != DefaultMaxBackoff {
		t.Errorf("defaults: %+v", s.cfg)
	}
	if got := fmt.Sprint(s.cfg.Token); got != "" {
		t.Errorf("token prints %q", got)
	}
}

// TestPlanResultIsNotLate: a plan's allocation updates keep the
// ModifyTime the scheduler read (seconds before the plan is applied); their
// events are timed when the stream tells them, never before the events
// already seen (in the recording some were 12 s older and counted late).
func TestPlanResultIsNotLate(t *testing.T) {
	lines := readLinesOf(t, capturePath(t, "reconnect"))
	d := NewDecoder(DecoderConfig{Log: discard})
	var newest time.Time
	plans, older := 0, 0
	for _, l := range lines {
		_ = d.Frame(l, func(ev ingest.Event) {
			if ev.Kind == "Allocation.PlanResult" {
				plans++
				if ev.Time.Before(newest) {
					older++
					t.Errorf("%s at %s, before %s seen already", ev.ID, ev.Time.Format(time.RFC3339Nano), newest.Format(time.RFC3339Nano))
				}
			}
			if ev.Time.After(newest) {
				newest = ev.Time
			}
		})
	}
	if plans == 0 {
		t.Fatal("no PlanResult allocation updates in the recording")
	}
}
