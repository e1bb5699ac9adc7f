package checkpoint

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/testkit"
	"github.com/klaxon-dev/klaxon/internal/winetest"
	"github.com/klaxon-dev/klaxon/rules"
)

// externalEnv runs a nats-server binary as a process (Debian's 2.9.10 from
// PATH, or $KLAXON_NATS_SERVER) instead of the embedded server: the store
// uses only what that version has (expected last subject sequence, purge
// by subject and sequence, KV watch).
func externalEnv(t *testing.T) *env {
	t.Helper()
	bin := os.Getenv("KLAXON_NATS_SERVER")
	if bin == "" {
		winetest.SkipLinuxProgram(t, "nats-server", "nats-server")
		var err error
		if bin, err = exec.LookPath("nats-server"); err != nil {
			if os.Getenv("KLAXON_REQUIRE_EXTERNAL") == "1" {
				t.Fatal("nats-server not in PATH; KLAXON_REQUIRE_EXTERNAL=1 requires it")
			}
			t.Skip("nats-server not in PATH (apt-get install nats-server, or set KLAXON_NATS_SERVER)")
		}
	}
	port := testkit.FreePort(t)
	var out testkit.SyncBuffer
	cmd := exec.Command(bin, "-js", "-sd", filepath.Join(t.TempDir(), "store"), "-a", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	var nc *nats.Conn
	deadline := time.Now().Add(15 * time.Second)
	for {
		var err error
		if nc, err = nats.Connect(url); err == nil && strings.Contains(out.String(), "Server is ready") {
			break
		} else if nc != nil {
			nc.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server not ready: %s", out.String())
		}
		time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
	}
	t.Cleanup(nc.Close)
	t.Logf("nats-server %s", nc.ConnectedServerVersion())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: bucket, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.LoadFiles("../testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return &env{nc: nc, js: js, kv: kv, set: set}
}

// TestOnExternalServer: save and restore with chunks, a cut checkpoint, a
// fenced writer and deletions, against a nats-server process (Debian's
// 2.9.10 when installed).
func TestOnExternalServer(t *testing.T) {
	e := externalEnv(t)
	ctx := context.Background()
	const nodes = 200
	opts := Options{ChunkSize: 256} // items are compressed: most of them chunked
	s, c, _ := e.load(t, "ext", opts)
	feed(0, 3*nodes, nodes, c)
	st, err := s.Save(ctx, c, 1)
	if err != nil {
		t.Fatal(err)
	}
	assertNewest(t, e, s, "ext")
	ref := e.correlator()
	feed(0, 3*nodes, nodes, ref)
	// Cut before the meta record: the restore is the first checkpoint.
	feed(3*nodes, 4*nodes, nodes, c)
	s.hook = crashAt("commit", 0)
	if _, err := s.Save(ctx, c, 2); err == nil {
		t.Fatal("cut save stored")
	}
	sb, cb, seq := e.load(t, "ext", opts)
	if seq != 1 {
		t.Fatalf("seq %d after the cut checkpoint, want 1", seq)
	}
	sameState(t, "after the cut checkpoint", ref, cb)
	// The old writer is fenced; the new one writes over its late records.
	s.hook = nil
	if _, err := s.Save(ctx, c, 3); !errors.Is(err, ErrFenced) {
		t.Fatalf("save of the fenced writer: %v", err)
	}
	feed(3*nodes, 4*nodes, nodes, cb, ref)
	if _, err := sb.Save(ctx, cb, 4); err != nil {
		t.Fatal(err)
	}
	// Much later: every group is dropped (tombstones, then purged).
	keys := len(e.keys(t, "ext"))
	for _, cc := range []*correlate.Correlator{cb, ref} {
		cc.Settle(t0.Add(48*time.Hour), func(correlate.Incident) {})
	}
	st2, err := sb.Save(ctx, cb, 5)
	if err != nil {
		t.Fatal(err)
	}
	if st2.Deleted == 0 {
		t.Fatal("nothing deleted after 48 hours")
	}
	if after := len(e.keys(t, "ext")); after >= keys {
		t.Errorf("%d keys before the deletions, %d after: tombstoned items are not purged", keys, after)
	}
	_, cd, seq := e.load(t, "ext", opts)
	if seq != 5 {
		t.Errorf("seq %d, want 5", seq)
	}
	sameState(t, "after deletions", ref, cd)
	if st.Messages <= st.Items+1 {
		t.Errorf("first save: %d messages for %d items: nothing chunked", st.Messages, st.Items)
	}
}
