package durable

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/internal/natstest"
)

func incidentMsg(i int) *nats.Msg {
	msg := nats.NewMsg(natslayout.IncidentSubject("error", "r"))
	msg.Data = fmt.Appendf(nil, `{"n":%d}`, i)
	msg.Header.Set(nats.MsgIdHdr, fmt.Sprintf("change-%d", i))
	return msg
}

// newTestIncidentPublisher is an incident publisher on an embedded NATS
// server without streams, the server's JetStream and the fenced flag.
func newTestIncidentPublisher(t *testing.T) (*incidentPublisher, jetstream.JetStream, *atomic.Bool) {
	t.Helper()
	nc, js := natstest.Start(t)
	ijs, err := newIncidentJetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	fenced := new(atomic.Bool)
	return &incidentPublisher{js: ijs, log: slog.New(slog.NewTextHandler(io.Discard, nil)), fenced: fenced}, js, fenced
}

// TestIncidentAwaitStoresEverything: changes published while the
// incidents stream cannot take them (it does not exist yet: every async
// publish fails) are published again by await until stored, once each
// and in order; await returns only then.
func TestIncidentAwaitStoresEverything(t *testing.T) {
	p, js, _ := newTestIncidentPublisher(t)
	ctx := context.Background()
	for i := range 50 {
		p.publish(ctx, incidentMsg(i), fmt.Sprint(i))
	}
	pubs := p.take()
	if len(pubs) != 50 || len(p.inflight) != 0 {
		t.Fatalf("took %d changes, %d left; want 50, 0", len(pubs), len(p.inflight))
	}
	done := make(chan error, 1)
	go func() {
		unstored, err := p.await(ctx, pubs)
		if len(unstored) != 0 {
			t.Errorf("await left %d changes unstored", len(unstored))
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("await returned (%v) while no change could be stored", err)
	case <-time.After(300 * time.Millisecond):
	}
	natstest.CreateStreams(t, js, jetstream.StreamConfig{Storage: jetstream.MemoryStorage, Duplicates: time.Minute},
		map[string]string{natslayout.IncidentsStream: natslayout.IncidentsSubjects})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("await did not return once the stream existed")
	}
	st, err := js.Stream(ctx, natslayout.IncidentsStream)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		m, err := st.GetMsg(ctx, uint64(i+1))
		if err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		if want := fmt.Sprintf(`{"n":%d}`, i); string(m.Data) != want {
			t.Fatalf("message %d is %s; want %s (once each, in order)", i+1, m.Data, want)
		}
	}
	if info, _ := st.Info(ctx); info.State.Msgs != 50 {
		t.Fatalf("%d changes stored; want 50", info.State.Msgs)
	}
}

// TestIncidentAwaitGivesUp: await stops when the partition is fenced, and
// after five attempts of a change once ctx is done (the checkpoint is then
// not written); the changes it could not store are handed back, and
// requeued they come before those published since, so that the next
// checkpoint waits for them.
func TestIncidentAwaitGivesUp(t *testing.T) {
	p, _, fenced := newTestIncidentPublisher(t)
	p.publish(context.Background(), incidentMsg(1), "1")
	fenced.Store(true)
	if unstored, err := p.await(context.Background(), p.take()); !errors.Is(err, errFenced) || len(unstored) != 1 {
		t.Fatalf("fenced: await = %d unstored, %v; want 1, errFenced", len(unstored), err)
	}
	fenced.Store(false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p.publish(ctx, incidentMsg(2), "2")
	p.publish(ctx, incidentMsg(3), "3")
	unstored, err := p.await(ctx, p.take())
	if err == nil || len(unstored) != 2 || unstored[0].id != "2" {
		t.Fatalf("stopping with changes that cannot be stored: await = %d unstored, %v; want both, an error", len(unstored), err)
	}
	p.publish(context.Background(), incidentMsg(4), "4")
	p.requeue(unstored)
	var ids []string
	for _, pb := range p.take() {
		ids = append(ids, pb.id)
	}
	if fmt.Sprint(ids) != "[2 3 4]" {
		t.Fatalf("after requeue the next checkpoint waits for %v; want [2 3 4]", ids)
	}
}
