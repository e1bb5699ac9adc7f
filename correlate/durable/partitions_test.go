package durable

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
