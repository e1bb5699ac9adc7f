package durable

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/internal/natstest"
)

// TestLeaseHeldDuringRestore: a restore longer than the lease lives (seconds
// for a large state on busy servers) keeps the partition's lease: without
// renewals the entry would expire and the partition be taken from under it.
func TestLeaseHeldDuringRestore(t *testing.T) {
	_, js := natstest.Start(t)
	ctx := context.Background()
	const ttl = 500 * time.Millisecond
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "leases", TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	c := &Correlators{leases: kv, id: "me", cfg: Config{LeaseTTL: ttl}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	rev, err := kv.Create(ctx, leaseKey(0), []byte(c.id))
	if err != nil {
		t.Fatal(err)
	}
	w := &partitionWorker{p: 0, rev: rev}
	c.holdLease(ctx, w, func() { time.Sleep(4 * ttl) })
	e, err := kv.Get(ctx, leaseKey(0))
	if err != nil {
		t.Fatalf("the lease after a restore of 4 TTLs: %v", err)
	}
	if string(e.Value()) != c.id || e.Revision() != w.rev || w.rev == rev {
		t.Fatalf("lease %q at revision %d, worker at %d (claimed at %d); want ours, renewed, the worker's revision current", e.Value(), e.Revision(), w.rev, rev)
	}
	// Without holding, the same wait loses it.
	time.Sleep(4 * ttl)
	if _, err := kv.Get(ctx, leaseKey(0)); err == nil {
		t.Fatal("the lease outlived its TTL without renewals: the test proves nothing")
	}
}

// TestConsumerMadeAgainAfterFailures: making the consumer is tried again
// while it fails (here: the stream is not there yet), instead of giving up
// the partition (and restoring its state once more) at the first failure.
func TestConsumerMadeAgainAfterFailures(t *testing.T) {
	_, js := natstest.Start(t)
	r := &correlatorRole{js: js, scope: wholeStream, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	go func() {
		time.Sleep(1200 * time.Millisecond) // after two failed attempts
		natstest.CreateStreams(t, js, jetstream.StreamConfig{Storage: jetstream.MemoryStorage},
			map[string]string{natslayout.EventsStream: natslayout.EventsSubjects})
	}()
	cc := jetstream.ConsumerConfig{Durable: wholeStream.consumer, FilterSubject: wholeStream.filter, AckPolicy: jetstream.AckAllPolicy}
	cons, err := r.resetConsumer(context.Background(), cc)
	if err != nil {
		t.Fatalf("resetConsumer: %v", err)
	}
	if info := cons.CachedInfo(); info.Name != wholeStream.consumer {
		t.Fatalf("consumer %q, want %q", info.Name, wholeStream.consumer)
	}
	// With the stream gone for good it gives up after its attempts.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := js.DeleteStream(ctx, natslayout.EventsStream); err != nil {
		t.Fatal(err)
	}
	if _, err := r.resetConsumer(ctx, cc); err == nil {
		t.Fatal("no stream: resetConsumer succeeded")
	}
}
