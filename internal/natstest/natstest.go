// Package natstest runs an embedded NATS server with JetStream for tests.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Start runs an embedded NATS server with JetStream, storing in a
// temporary directory of the test, and connects to it; both end with the
// test.
func Start(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// CreateStreams creates streams by name, each on its subjects filter, with
// the other settings of base.
func CreateStreams(t testing.TB, js jetstream.JetStream, base jetstream.StreamConfig, subjects map[string]string) {
	t.Helper()
	for name, subj := range subjects {
		cfg := base
		cfg.Name, cfg.Subjects = name, []string{subj}
		if _, err := js.CreateStream(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
	}
}
