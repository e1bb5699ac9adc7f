package jspull

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/internal/natstest"
)

// TestPullDeliversEveryMessageInOrder: Pull delivers a backlog of
// several batches and then a message published after its request expired
// (an idle stream), each once and in the consumer's order, to a reader
// slower than the stream; ending its context ends it and closes its channel at
// once, though its request is still waiting on the server.
func TestPullDeliversEveryMessageInOrder(t *testing.T) {
	_, js := natstest.Start(t)
	ctx := context.Background()
	natstest.CreateStreams(t, js, jetstream.StreamConfig{Storage: jetstream.MemoryStorage}, map[string]string{"PULLTEST": "pulltest.>"})
	cons, err := js.CreateOrUpdateConsumer(ctx, "PULLTEST", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckAllPolicy, MaxAckPending: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	const batch = 512
	const backlog = 3*batch + 17
	for i := range backlog {
		if _, err := js.PublishAsync(fmt.Sprintf("pulltest.%d", i%7), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	msgs := make(chan jetstream.Msg, 8)
	pullCtx, stop := context.WithCancel(ctx)
	defer stop()
	go Pull(pullCtx, cons, batch, msgs, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var want uint64 = 1
	take := func(n int) {
		t.Helper()
		for range n {
			select {
			case m := <-msgs:
				md, err := m.Metadata()
				if err != nil {
					t.Fatal(err)
				}
				if md.Sequence.Consumer != want || string(m.Data()) != fmt.Sprint(want-1) {
					t.Fatalf("delivery %d (%q), want %d", md.Sequence.Consumer, m.Data(), want)
				}
				want++
				if want%100 == 0 {
					time.Sleep(time.Millisecond) // a reader slower than the stream
				}
			case <-time.After(Expiry + 5*time.Second):
				t.Fatalf("no delivery %d", want)
			}
		}
	}
	take(backlog)
	time.Sleep(Expiry + time.Second) // the waiting request expires
	if _, err := js.Publish(ctx, "pulltest.late", []byte(fmt.Sprint(backlog))); err != nil {
		t.Fatal(err)
	}
	take(1)
	select {
	case m := <-msgs:
		t.Fatalf("an extra delivery: %q", m.Data())
	case <-time.After(100 * time.Millisecond):
	}
	stop()
	select {
	case _, ok := <-msgs:
		if ok {
			t.Fatal("a delivery after its context ended")
		}
	case <-time.After(time.Second):
		t.Fatal("Pull did not end within a second of its context")
	}
}
