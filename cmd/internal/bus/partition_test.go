package bus

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
)

// TestPartitionedEvents: with Partitions set, the embedded server (the
// nats-server version klaxon embeds) stores each node's events under
// klaxon.events.<partition>.<source>.<node>, the partition being the one
// PartitionOf computes; a bus opened later with Partitions 0 keeps the
// stream's partitioning, and Partitions 1 removes it.
func TestPartitionedEvents(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			b := openEmbedded(t, Config{DataDir: t.TempDir(), Partitions: n})
			ctx := testContext(t)
			if got, err := b.Partitions(ctx); err != nil || got != n {
				t.Fatalf("Partitions() = %d, %v; want %d", got, err, n)
			}
			var evs []ingest.Event
			seen := map[int]bool{}
			for i := 0; i < 40; i++ {
				ev := testEvent(i, fmt.Sprintf("node-%d.example.com", i))
				if i%2 == 1 {
					ev.Source = ingest.SourceWinEvt
				}
				evs = append(evs, ev)
			}
			publishAll(t, b, evs)
			st, err := b.JS.Stream(ctx, natslayout.EventsStream)
			if err != nil {
				t.Fatal(err)
			}
			for i, ev := range evs {
				m, err := st.GetMsg(ctx, uint64(i+1))
				if err != nil {
					t.Fatal(err)
				}
				p := PartitionOf(ev.Node, n)
				seen[p] = true
				want := fmt.Sprintf("klaxon.events.%d.%s.%s", p, natslayout.Token(ev.Source), natslayout.Token(ev.Node))
				if m.Subject != want {
					t.Errorf("event of %s stored as %q, want %q", ev.Node, m.Subject, want)
				}
				if !strings.HasPrefix(m.Subject, strings.TrimSuffix(natslayout.PartitionSubjects(p, n), ">")) {
					t.Errorf("%q outside PartitionSubjects(%d, %d) = %q", m.Subject, p, n, natslayout.PartitionSubjects(p, n))
				}
			}
			if len(seen) != n {
				t.Errorf("40 nodes fell into partitions %v of %d", seen, n)
			}
		})
	}

	// Partitions 0 keeps what the stream has; 1 removes it.
	b := openEmbedded(t, Config{DataDir: dir, Partitions: 4})
	closeBus(t, b)
	for _, c := range []struct{ set, want int }{{0, 4}, {1, 1}, {0, 1}} {
		b := openEmbedded(t, Config{DataDir: dir, Partitions: c.set})
		got, err := b.Partitions(testContext(t))
		if err != nil || got != c.want {
			t.Errorf("Partitions %d: stream has %d partitions (%v), want %d", c.set, got, err, c.want)
		}
		closeBus(t, b)
	}
}

func TestPartitionSubjectsAndTransform(t *testing.T) {
	for _, c := range []struct {
		p, n int
		want string
	}{{0, 1, "klaxon.events.>"}, {0, 0, "klaxon.events.>"}, {1, 2, "klaxon.events.1.>"}, {7, 8, "klaxon.events.7.>"}} {
		if got := natslayout.PartitionSubjects(c.p, c.n); got != c.want {
			t.Errorf("PartitionSubjects(%d, %d) = %q, want %q", c.p, c.n, got, c.want)
		}
	}
	for _, n := range []int{0, 1, 2, 5, 1024} {
		want := max(n, 1)
		if got := partitionsOf(eventsTransform(n)); got != want {
			t.Errorf("partitionsOf(eventsTransform(%d)) = %d", n, got)
		}
	}
	if got := partitionsOf(&jetstream.SubjectTransformConfig{Source: "other.>", Destination: "x.{{partition(3,1)}}"}); got != 1 {
		t.Errorf("a foreign transform counts as %d partitions", got)
	}
	if PartitionOf("any", 1) != 0 {
		t.Error("one partition is partition 0")
	}
}

// TestPartitionsNeedNewServer: Debian's nats-server 2.9 drops stream
// subject transforms; Open says so instead of storing unpartitioned events.
func TestPartitionsNeedNewServer(t *testing.T) {
	bin := natsServerBinary(t)
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "v2.9.") {
		t.Skipf("%s is %s; this test is about 2.9", bin, strings.TrimSpace(string(out)))
	}
	p := startNATS(t, "")
	_, err = Open(testContext(t), Config{URL: p.url("nats"), Partitions: 2}, newTestLogger(t))
	if err == nil || !strings.Contains(err.Error(), "correlator.partitions") || !strings.Contains(err.Error(), "2.10") {
		t.Fatalf("Open with 2 partitions on %s: %v; want an error naming correlator.partitions and 2.10", strings.TrimSpace(string(out)), err)
	}
}
