package bus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
)

func TestEmbeddedLayout(t *testing.T) {
	dir := t.TempDir()
	b := openEmbedded(t, Config{DataDir: dir})
	t.Logf("embedded nats-server %s", b.NC.ConnectedServerVersion())
	if !b.Embedded() {
		t.Fatal("not embedded")
	}
	checkLayout(t, b, Config{})
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		t.Errorf("store not under data dir: %v", err)
	}
	if b.ClientURL() != "" {
		t.Errorf("in-process bus has a client URL %q", b.ClientURL())
	}
}

func TestEmbeddedUpdatesLimits(t *testing.T) {
	dir := t.TempDir()
	b := openEmbedded(t, Config{DataDir: dir})
	closeBus(t, b)
	cfg := Config{DataDir: dir, EventsMaxAge: 24 * time.Hour, EventsMaxBytes: 64 << 20,
		DuplicateWindow: 5 * time.Minute, IncidentsMaxAge: 7 * 24 * time.Hour}
	b = openEmbedded(t, cfg)
	checkLayout(t, b, cfg)
}

func TestPublishSubjects(t *testing.T) {
	b := openEmbedded(t, Config{})
	evs := []ingest.Event{testEvent(1, "win-client-7"), testEvent(2, "a.b c*>"), testEvent(3, "")}
	evs[0].Source = ingest.SourceWinEvt
	evs[0].Fields = map[string]any{"n": 3.5, "ok": true}
	st := publishAll(t, b, evs)
	if st.Published != 3 || st.Duplicates != 0 {
		t.Fatalf("stats = %+v", st)
	}
	ctx := testContext(t)
	s, err := b.JS.Stream(ctx, natslayout.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"klaxon.events.winevt.win-client-7", "klaxon.events.nomad_log.a_b_c__", "klaxon.events.nomad_log._"}
	for i, subj := range want {
		m, err := s.GetMsg(ctx, uint64(i+1))
		if err != nil {
			t.Fatalf("msg %d: %v", i+1, err)
		}
		if m.Subject != subj {
			t.Errorf("msg %d subject = %q, want %q", i+1, m.Subject, subj)
		}
		if got := m.Header.Get(jetstream.MsgIDHeader); got != evs[i].ID {
			t.Errorf("msg %d Nats-Msg-Id = %q, want %q", i+1, got, evs[i].ID)
		}
		ev, err := natslayout.DecodeEvent(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if ev.ID != evs[i].ID || ev.Node != evs[i].Node || ev.Msg != evs[i].Msg || !ev.Time.Equal(evs[i].Time) {
			t.Errorf("msg %d decoded = %+v, want %+v", i+1, ev, evs[i])
		}
	}
	m, _ := s.GetMsg(ctx, 1)
	ev, _ := natslayout.DecodeEvent(m.Data)
	if ev.Fields["n"] != 3.5 || ev.Fields["ok"] != true {
		t.Errorf("fields = %v", ev.Fields)
	}
}

func TestDuplicateDropped(t *testing.T) {
	b := openEmbedded(t, Config{})
	ev := testEvent(1, "vm")
	st := publishAll(t, b, []ingest.Event{ev})
	if st.Published != 1 {
		t.Fatalf("stats = %+v", st)
	}
	var committed atomic.Int32
	ev.Commit = func() { committed.Add(1) }
	st = publishAll(t, b, []ingest.Event{ev, ev})
	if st.Duplicates != 2 || st.Published != 0 {
		t.Fatalf("re-sent: stats = %+v, want 2 duplicates", st)
	}
	if committed.Load() != 2 {
		t.Errorf("duplicates committed %d times, want 2", committed.Load())
	}
	if n := streamMsgs(t, b, natslayout.EventsStream); n != 1 {
		t.Errorf("stream holds %d messages, want 1", n)
	}
	// The PubAck itself says so.
	data, _ := natslayout.EncodeEvent(&ev)
	ack, err := b.JS.Publish(testContext(t), natslayout.EventSubject(ev.Source, ev.Node), data, jetstream.WithMsgID(ev.ID))
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate {
		t.Errorf("PubAck.Duplicate = false for a re-sent id")
	}
}

// TestCommitOrder publishes many events and checks that commits come in
// emission order, and only for stored events: at some events the Commit
// callback reads the stream and finds the event there.
func TestCommitOrder(t *testing.T) {
	n := 20000
	if testing.Short() {
		n = 2000
	}
	b := openEmbedded(t, Config{})
	ctx := testContext(t)
	stream, err := b.JS.Stream(ctx, natslayout.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		order   []int
		checked int
		errs    []string
	)
	in := make(chan ingest.Event, 64)
	go func() {
		defer close(in)
		for i := 0; i < n; i++ {
			node := fmt.Sprintf("node-%d", i%7)
			check := i%(n/10) == n/20 || i == n-1
			if check {
				node = fmt.Sprintf("check-%d", i)
			}
			ev := testEvent(i, node)
			ev.Commit = func() {
				mu.Lock()
				defer mu.Unlock()
				order = append(order, i)
				if !check {
					return
				}
				checked++
				m, err := stream.GetLastMsgForSubject(ctx, natslayout.EventSubject(ev.Source, node))
				if err != nil {
					errs = append(errs, fmt.Sprintf("event %d committed but not in the stream: %v", i, err))
					return
				}
				if got, _ := natslayout.DecodeEvent(m.Data); got.ID != ev.ID {
					errs = append(errs, fmt.Sprintf("event %d: stored %q", i, got.ID))
				}
				info, err := stream.Info(ctx)
				if err != nil {
					errs = append(errs, err.Error())
				} else if info.State.Msgs < uint64(i+1) {
					errs = append(errs, fmt.Sprintf("event %d committed with %d messages stored", i, info.State.Msgs))
				}
			}
			in <- ev
		}
	}()
	p := b.NewPublisher(newTestLogger(t), PublisherOptions{})
	start := time.Now()
	if err := p.Run(ctx, in); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	t.Logf("%d events in %v (%.0f/s), stats %+v", n, el, float64(n)/el.Seconds(), p.Stats())
	mu.Lock()
	defer mu.Unlock()
	for _, e := range errs {
		t.Error(e)
	}
	if len(order) != n {
		t.Fatalf("%d commits, want %d", len(order), n)
	}
	for i, v := range order {
		if v != i {
			t.Fatalf("commit %d is event %d", i, v)
		}
	}
	if checked < 10 {
		t.Errorf("only %d commits checked against the stream", checked)
	}
	if got := streamMsgs(t, b, natslayout.EventsStream); got != uint64(n) {
		t.Errorf("stream holds %d, want %d", got, n)
	}
	if st := p.Stats(); st.Published != uint64(n) {
		t.Errorf("stats = %+v", st)
	}
}

// TestPublisherKeep: the events Keep leaves out are not stored and are
// committed in their turn: never before an event emitted earlier is stored.
func TestPublisherKeep(t *testing.T) {
	b := openEmbedded(t, Config{})
	ctx := testContext(t)
	stream, err := b.JS.Stream(ctx, natslayout.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	var (
		mu    sync.Mutex
		order []int
		errs  []string
	)
	in := make(chan ingest.Event, n)
	for i := range n {
		ev := testEvent(i, fmt.Sprintf("node-%d", i%5))
		ev.Commit = func() {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, i)
			if i%3 != 0 || i == 0 {
				return
			}
			// A left-out event commits only after the kept one before it
			// is stored.
			prev := testEvent(i-1, fmt.Sprintf("node-%d", (i-1)%5))
			info, err := stream.Info(ctx)
			if err != nil {
				errs = append(errs, err.Error())
			} else if want := uint64(i - i/3); info.State.Msgs < want {
				errs = append(errs, fmt.Sprintf("event %d committed with %d messages stored, want ≥ %d (%s)", i, info.State.Msgs, want, prev.ID))
			}
		}
		in <- ev
	}
	close(in)
	p := b.NewPublisher(newTestLogger(t), PublisherOptions{Keep: func(ev *ingest.Event) bool {
		var i int
		fmt.Sscanf(ev.ID, "test:%d", &i)
		return i%3 != 0
	}})
	if err := p.Run(ctx, in); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, e := range errs {
		t.Error(e)
	}
	if len(order) != n || !slices.IsSorted(order) {
		t.Fatalf("%d commits (want %d), in order: %v", len(order), n, slices.IsSorted(order))
	}
	kept := uint64(n - (n+2)/3)
	if got := streamMsgs(t, b, natslayout.EventsStream); got != kept {
		t.Errorf("stream holds %d, want %d", got, kept)
	}
	if st := p.Stats(); st.Published != kept || st.Filtered != uint64(n)-kept {
		t.Errorf("stats = %+v, want %d published, %d filtered", st, kept, uint64(n)-kept)
	}
}

func TestRestartKeepsMessages(t *testing.T) {
	dir := t.TempDir()
	ctx := testContext(t)
	b, err := Open(ctx, Config{DataDir: dir}, newTestLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var evs []ingest.Event
	for i := 0; i < 100; i++ {
		evs = append(evs, testEvent(i, "vm"))
	}
	publishAll(t, b, evs)
	kv, _ := b.JS.KeyValue(ctx, natslayout.StateBucket)
	if _, err := kv.Put(ctx, "snap", []byte("state-1")); err != nil {
		t.Fatal(err)
	}
	closeBus(t, b)
	if !b.NC.IsClosed() {
		t.Error("connection not closed")
	}

	b = openEmbedded(t, Config{DataDir: dir})
	if n := streamMsgs(t, b, natslayout.EventsStream); n != 100 {
		t.Fatalf("after restart the stream holds %d, want 100", n)
	}
	kv, _ = b.JS.KeyValue(ctx, natslayout.StateBucket)
	if e, err := kv.Get(ctx, "snap"); err != nil || string(e.Value()) != "state-1" {
		t.Fatalf("state after restart: %v", err)
	}
	// Dedup state survives too: re-sending after a crash adds nothing.
	st := publishAll(t, b, evs[90:])
	if st.Duplicates != 10 {
		t.Errorf("re-sent after restart: %+v", st)
	}
}

func TestCloseIdempotent(t *testing.T) {
	b, err := OpenEmbedded(testContext(t), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if b.srv.Running() {
		t.Error("server still running")
	}
}

// TestPublisherRetries removes the events stream under a running publisher:
// publishes fail (no stream answers) and are retried until the stream is
// back; nothing is skipped, commits stay in order.
func TestPublisherRetries(t *testing.T) {
	b := openEmbedded(t, Config{})
	ctx := testContext(t)
	if err := b.JS.DeleteStream(ctx, natslayout.EventsStream); err != nil {
		t.Fatal(err)
	}
	const n = 50
	var mu sync.Mutex
	var order []int
	in := make(chan ingest.Event, n)
	for i := 0; i < n; i++ {
		ev := testEvent(i, "vm")
		ev.Commit = func() { mu.Lock(); order = append(order, i); mu.Unlock() }
		in <- ev
	}
	close(in)
	p := b.NewPublisher(newTestLogger(t), PublisherOptions{Timeout: time.Second, RetryInitial: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, in) }()

	deadline := time.Now().Add(30 * time.Second)
	for p.Stats().Retries == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no retry seen")
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	if len(order) != 0 {
		t.Errorf("%d events committed with no stream", len(order))
	}
	mu.Unlock()
	if err := b.ensure(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("publisher did not finish")
	}
	st := p.Stats()
	t.Logf("stats %+v", st)
	if st.Published != n || st.Errors == 0 {
		t.Errorf("stats = %+v", st)
	}
	if len(order) != n {
		t.Fatalf("%d commits, want %d", len(order), n)
	}
	for i, v := range order {
		if v != i {
			t.Fatalf("commit %d is event %d", i, v)
		}
	}
	if got := streamMsgs(t, b, natslayout.EventsStream); got != n {
		t.Errorf("stream holds %d, want %d", got, n)
	}
}

func TestPublisherStopsOnContext(t *testing.T) {
	b := openEmbedded(t, Config{})
	ctx, cancel := context.WithCancel(testContext(t))
	in := make(chan ingest.Event)
	done := make(chan error, 1)
	p := b.NewPublisher(nil, PublisherOptions{})
	go func() { done <- p.Run(ctx, in) }()
	in <- testEvent(1, "vm")
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}

func TestEmbeddedListen(t *testing.T) {
	b := openEmbedded(t, Config{Listen: "127.0.0.1:0"})
	url := b.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":0") {
		t.Fatalf("ClientURL = %q", url)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("external client: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	ev := testEvent(1, "ext")
	data, _ := natslayout.EncodeEvent(&ev)
	if _, err := js.Publish(ctx, natslayout.EventSubject(ev.Source, ev.Node), data, jetstream.WithMsgID(ev.ID)); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, b, natslayout.EventsStream); n != 1 {
		t.Errorf("stream holds %d, want 1", n)
	}
	// And a second bus can use it as an external server.
	b2, err := Open(ctx, Config{URL: url}, newTestLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer closeBus(t, b2)
	checkLayout(t, b2, Config{})
}

func TestEmbeddedListenToken(t *testing.T) {
	const token = "listen-token-8f3a"
	b := openEmbedded(t, Config{Listen: "127.0.0.1:0", Token: token})
	url := b.ClientURL()
	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("connected without the token")
	}
	nc, err := nats.Connect(url, nats.Token(token))
	if err != nil {
		t.Fatalf("with token: %v", err)
	}
	nc.Close()
	ctx := testContext(t)
	_, err = Open(ctx, Config{URL: url, Token: "wrong-token-1234"}, nil)
	if err == nil {
		t.Fatal("wrong token accepted")
	}
	if strings.Contains(err.Error(), "wrong-token-1234") {
		t.Errorf("error leaks the token: %v", err)
	}
	t.Logf("wrong token: %v", err)
}

// TestPublisherOversizedEvent: an event over the server's max payload is
// stored without its fields (it could never be stored whole) rather than
// retried forever or lost.
func TestPublisherOversizedEvent(t *testing.T) {
	b := openEmbedded(t, Config{})
	big := testEvent(1, "vm")
	big.Msg = strings.Repeat("m", 2<<20)
	big.Fields = map[string]any{"blob": strings.Repeat("f", 2<<20)}
	st := publishAll(t, b, []ingest.Event{big, testEvent(2, "vm")})
	if st.Published != 2 {
		t.Fatalf("stats = %+v", st)
	}
	s, _ := b.JS.Stream(testContext(t), natslayout.EventsStream)
	m, err := s.GetMsg(testContext(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := natslayout.DecodeEvent(m.Data)
	if ev.ID != big.ID || ev.Fields["klaxon_truncated"] != true || len(ev.Msg) == 0 || int64(len(m.Data)) > b.NC.MaxPayload() {
		t.Errorf("stored %d bytes: id %q fields %v", len(m.Data), ev.ID, ev.Fields)
	}
}

func BenchmarkPublisher(b *testing.B) {
	bus := openEmbedded(b, Config{})
	in := make(chan ingest.Event, 1024)
	go func() {
		defer close(in)
		for i := 0; i < b.N; i++ {
			in <- testEvent(i, "vm")
		}
	}()
	p := bus.NewPublisher(nil, PublisherOptions{})
	b.ResetTimer()
	if err := p.Run(testContext(b), in); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
