package correlate_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/correlate/checkpoint"
	"github.com/klaxon-dev/klaxon/rules"
)

// BenchmarkCheckpointRestore builds the state of BenchmarkScale's 10,000
// nodes (all bundled rules), checkpoints it into an embedded JetStream
// (file store, the KLAXON_STATE bucket as klaxon creates it) and times the
// restore a new correlator process does: Load (read every key, claim,
// clean up) into a new correlator. It also reports the first (full)
// checkpoint, an incremental one after a second of the fleet's events,
// the state's size and its items.
//
//	go test -run '^$' -bench CheckpointRestore -benchtime 1x -count 5 ./correlate/
func BenchmarkCheckpointRestore(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) { benchRestore(b, n) })
	}
}

func benchRestore(b *testing.B, n int) {
	set, err := rules.LoadDir("../rules.d")
	if err != nil {
		b.Fatal(err)
	}
	js, kv := benchJetStream(b)
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, next := correlate.ScaleState(b, set, n)
	groups := 0
	for _, k := range c.ActiveGroups() {
		groups += k
	}
	s, err := checkpoint.New(js, kv, "correlator", checkpoint.Options{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Load(ctx, correlate.New(set, correlate.Options{Logger: quiet})); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	full, err := s.Save(ctx, c, 1)
	if err != nil {
		b.Fatal(err)
	}
	fullTime := time.Since(start)
	// One second of the fleet: every node sends an event every 31 s.
	events := correlate.ScaleEvents(n)
	step := n / 31
	correlate.ScaleMore(c, n, events, step, &next)
	start = time.Now()
	inc, err := s.Save(ctx, c, 2)
	if err != nil {
		b.Fatal(err)
	}
	incTime := time.Since(start)
	open := len(c.Open())
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		r, err := checkpoint.New(js, kv, "correlator", checkpoint.Options{Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		c2 := correlate.New(set, correlate.Options{Logger: quiet})
		seq, err := r.Load(ctx, c2)
		if err != nil {
			b.Fatal(err)
		}
		r.Close()
		if seq != 2 || len(c2.Open()) != open {
			b.Fatalf("restored seq %d with %d open incidents; want 2 and %d", seq, len(c2.Open()), open)
		}
	}
	b.StopTimer()
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/restore")
	// CPU time of the process (restore and the embedded server's part):
	// what a loaded machine does not inflate.
	b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "cpu-s/restore")
	b.ReportMetric(float64(groups), "groups")
	b.ReportMetric(float64(full.Items), "items")
	b.ReportMetric(float64(full.Bytes)/1e6, "MB")
	b.ReportMetric(fullTime.Seconds(), "s/full-checkpoint")
	b.ReportMetric(float64(inc.Items), "items/1s-checkpoint")
	b.ReportMetric(incTime.Seconds()*1e3, "ms/1s-checkpoint")
}

// benchJetStream starts an embedded NATS server with JetStream (file
// store) and the state bucket.
func benchJetStream(b *testing.B) (jetstream.JetStream, jetstream.KeyValue) {
	srv, err := server.NewServer(&server.Options{Port: -1, JetStream: true, StoreDir: b.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats-server not ready")
	}
	b.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	kv, err := js.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "KLAXON_STATE", History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	return js, kv
}
