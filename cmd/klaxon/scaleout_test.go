package main

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/cmd/internal/bus"
	"github.com/klaxon-dev/klaxon/cmd/internal/rulesync"
	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/correlate/checkpoint"
	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/nomadlog"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/internal/winetest"
	"github.com/klaxon-dev/klaxon/rules"
	"github.com/klaxon-dev/klaxon/sinks"
)

// The scale-out test runs klaxon as it is deployed at scale: a three-node
// NATS cluster with JetStream (R3 streams), one `klaxon ingest` and two
// `klaxon correlate` replicas (partitions 0 and 1), all separate processes.
//
// Partitioning needs stream subject transforms (nats-server 2.10+), which
// Debian's nats-server 2.9.10 lacks, so the cluster runs the nats-server
// version klaxon embeds, built as a standalone binary from the module cache
// (`go build github.com/nats-io/nats-server/v2`), or the binary named by
// $KLAXON_NATS_SERVER. Without either the test skips, unless
// KLAXON_REQUIRE_EXTERNAL=1.

// soCapture is the real crash-loop capture: 1,319 lines of a dev agent whose
// node is "vm" (node_id 31cfa6ea-…), firing gc_pressure, crash_loop and
// unhealthy_restarts.
var soCapture = filepath.Join("..", "..", "..", "shared", "testdata", "nomad", "captures", "crashloop-gc-checkrestart", "nomad.log")

const (
	soCaptureNodeID = "31cfa6ea-3a38-f6c5-d1ba-57b1207d485c"
	soChunks        = 12 // the copies are appended in this many steps
)

// soNATSServer returns a nats-server binary that supports stream subject
// transforms.
func soNATSServer(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("KLAXON_NATS_SERVER"); p != "" {
		return p
	}
	winetest.Skip(t, "builds nats-server with the go command (none for Windows here)")
	bin := filepath.Join(t.TempDir(), "nats-server")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("cannot build nats-server from the module cache: %v\n%s", err, out)
		if os.Getenv("KLAXON_REQUIRE_EXTERNAL") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

func soFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// soProc is a child process whose output goes to a file in the test's dir.
type soProc struct {
	name string
	cmd  *exec.Cmd
	out  string
	done chan struct{}
}

func soStart(t *testing.T, dir, name, bin string, args ...string) *soProc {
	t.Helper()
	p := &soProc{name: name, out: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.out)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *soProc) log() string { b, _ := os.ReadFile(p.out); return string(b) }

func (p *soProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *soProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// soCluster starts three clustered nats-servers with JetStream on loopback
// ports and waits until JetStream has a meta leader.
func soCluster(t *testing.T, dir, bin string) (procs []*soProc, urls []string) {
	t.Helper()
	var client, route [3]int
	for i := range 3 {
		client[i], route[i] = soFreePort(t), soFreePort(t)
	}
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", route[i]))
	}
	for i := range 3 {
		conf := fmt.Sprintf(`server_name: n%d
listen: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster {
  name: klaxon-test
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, i+1, client[i], filepath.Join(dir, fmt.Sprintf("n%d-store", i+1)), route[i], strings.Join(routes, ", "))
		cf := filepath.Join(dir, fmt.Sprintf("n%d.conf", i+1))
		if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, soStart(t, dir, fmt.Sprintf("nats-n%d", i+1), bin, "-c", cf))
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", client[i]))
	}
	nc, js := soConnect(t, urls)
	defer nc.Close()
	waitFor(t, 30*time.Second, "a JetStream meta leader in the cluster", func() bool {
		for _, p := range procs {
			if p.exited() {
				t.Fatalf("%s exited:\n%s", p.name, p.log())
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		// An R3 stream can be placed: every peer is known and online.
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"probe"}, Replicas: 3, Storage: jetstream.MemoryStorage})
		return err == nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, "PROBE"); err != nil {
		t.Fatal(err)
	}
	return procs, urls
}

func soConnect(t *testing.T, urls []string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// soNodes picks node names so that each of the two partitions gets two.
func soNodes() []string {
	var out []string
	per := map[int]int{}
	for i := 0; len(out) < 4; i++ {
		n := fmt.Sprintf("node-%d", i)
		if p := bus.PartitionOf(n, 2); per[p] < 2 {
			per[p]++
			out = append(out, n)
		}
	}
	return out
}

// soCopies returns the capture rewritten for each node (its own node name and
// node ID), split into soChunks chunks of whole lines.
func soCopies(t *testing.T, nodes []string) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(soCapture)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for i, n := range nodes {
		text := strings.ReplaceAll(string(raw), "node_name=vm", "node_name="+n)
		text = strings.ReplaceAll(text, soCaptureNodeID, fmt.Sprintf("%08x", i+1)+soCaptureNodeID[8:])
		lines := strings.SplitAfter(text, "\n")
		if lines[len(lines)-1] == "" {
			lines = lines[:len(lines)-1]
		}
		size := (len(lines) + soChunks - 1) / soChunks
		for c := range soChunks {
			lo, hi := min(c*size, len(lines)), min((c+1)*size, len(lines))
			out[n] = append(out[n], strings.Join(lines[lo:hi], ""))
		}
	}
	return out
}

// soExpected is the undisturbed outcome: every copy through the real
// decoder, rules and correlator in one process, with the correlator options
// of the live run. Rules group by node (and task), so each node's incidents
// depend only on that node's events in file order, however the nodes are
// spread over partitions.
type soExpected struct {
	events    int
	kept      int                           // what the edge filter keeps
	incidents map[string]correlate.Incident // by id: the last change
	fired     map[string]int                // by id: how many times it fired
	final     map[string]int                // incident id → count in the state
}

func soReference(t *testing.T, set *rules.Set, copies map[string][]string) soExpected {
	t.Helper()
	nodes := make([]string, 0, len(copies))
	for n := range copies {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	return soReplay(t, set, func(yield func(prefix, text string) bool) {
		for _, n := range nodes {
			if !yield(n, strings.Join(copies[n], "")) {
				return
			}
		}
	})
}

// soReplay runs the logs (ID prefix and text of each, in turn) through the
// decoder, the rules and one correlator, and counts the events the edge
// filter keeps.
func soReplay(t *testing.T, set *rules.Set, logs iter.Seq2[string, string]) soExpected {
	t.Helper()
	r := newSoReplayer(set, correlate.Options{UpdateInterval: soUpdateInterval})
	for prefix, text := range logs {
		r.feed(prefix, text)
	}
	return r.result()
}

// soReplayer is the reference of the scale-out test and the soak: the
// decoder, the edge filter and one correlator. Texts of one prefix are one
// log read in parts: one decoder reads them all, as the tailer reads a
// growing file (flushed after each part).
type soReplayer struct {
	exp     soExpected
	corr    *correlate.Correlator
	filter  *rulesync.Filter
	ident   *ingest.Identity
	readers map[string]*soReader
	// edge: the correlator sees only what the edge filter keeps, as
	// behind sidecars with edge_filter on (its clocks too).
	edge bool
}

type soReader struct {
	dec *nomadlog.Decoder
	off int64
}

func newSoReplayer(set *rules.Set, opts correlate.Options) *soReplayer {
	r := &soReplayer{
		exp:     soExpected{incidents: map[string]correlate.Incident{}, fired: map[string]int{}, final: map[string]int{}},
		corr:    correlate.New(set, opts),
		filter:  rulesync.NewFilter(nil),
		ident:   ingest.NewIdentity(),
		readers: map[string]*soReader{},
	}
	r.filter.SetRules(set)
	return r
}

func (r *soReplayer) incident(in correlate.Incident) {
	r.exp.incidents[in.ID] = in
	if in.Status == correlate.StatusFiring {
		r.exp.fired[in.ID]++
	}
}

func (r *soReplayer) event(ev ingest.Event) {
	r.exp.events++
	kept := r.filter.Keep(&ev)
	if kept {
		r.exp.kept++
	}
	if kept || !r.edge {
		r.corr.Process(&ev, r.incident)
	}
}

// feed reads the next part of the log of prefix.
func (r *soReplayer) feed(prefix, text string) {
	rd := r.readers[prefix]
	if rd == nil {
		rd = &soReader{dec: nomadlog.NewDecoder(nomadlog.DecoderConfig{IDPrefix: prefix, DefaultNode: "ingest-host", Identity: r.ident})}
		r.readers[prefix] = rd
	}
	for line := range strings.Lines(text) {
		end := rd.off + int64(len(line))
		rd.dec.Line([]byte(strings.TrimSuffix(line, "\n")), rd.off, end, r.event)
		rd.off = end
	}
	rd.dec.Flush(r.event)
}

// advance moves the correlator's processing clock, as the durable
// correlator's tick does.
func (r *soReplayer) advance(now time.Time) { r.corr.Advance(now, r.incident) }

func (r *soReplayer) result() soExpected {
	for _, in := range r.corr.Open() {
		r.exp.final[in.ID] = in.Count
	}
	return r.exp
}

// The correlators' time is driven by the events only: the capture is days
// old, and the wall clock must not resolve its incidents at whatever moment
// a tick happens to come; updates wait for escalations (none here).
const (
	soUpdateInterval = 1000 * time.Hour
	soLateness       = 100000 * time.Hour
)

// soOutcome is what a run left: the sink files and the final state of both
// partitions.
type soOutcome struct {
	sinks map[string][]correlate.Incident // by replica
	final map[string]int
}

// TestScaleOutFailover is the done-when of the scale-out issue: the recorded
// stream is replayed through the cluster; one NATS node and then one
// correlator are SIGKILLed mid-run; the survivor takes the dead replica's
// partition over from its snapshot, and the incidents at its sink equal
// those of an undisturbed run (same change ids, statuses and counts), none
// lost, none duplicated, and the final counts of both partitions' state
// equal the undisturbed ones (every event counted once).
func TestScaleOutFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("builds klaxon and nats-server and runs a cluster")
	}
	natsBin := soNATSServer(t)
	out, _ := exec.Command(natsBin, "--version").Output()
	t.Logf("nats-server: %s (%s)", strings.TrimSpace(string(out)), natsBin)
	bin := buildKlaxon(t)
	rulesDir, err := filepath.Abs("../../rules.d")
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.LoadDir(rulesDir)
	if err != nil {
		t.Fatal(err)
	}
	nodes := soNodes()
	copies := soCopies(t, nodes)
	exp := soReference(t, set, copies)
	if len(exp.final) < 6 {
		t.Fatalf("reference: %d incidents, want the capture's 3 per node", len(exp.final))
	}
	t.Logf("nodes %v; reference: %d events, %d incidents", nodes, exp.events, len(exp.final))

	start := time.Now()
	got := soRun(t, bin, rulesDir, set, copies, exp)
	t.Logf("disturbed run: %v", time.Since(start).Round(time.Millisecond))

	// The sinks: no change delivered twice; at the survivor's, every
	// incident of the reference fired exactly once, with its rule and node,
	// and nothing else.
	for _, r := range []string{"a", "b"} {
		seen := map[string]bool{}
		for _, in := range got.sinks[r] {
			if seen[in.ChangeID()] {
				t.Errorf("replica %s's sink: change %s (%s %s) delivered twice", r, in.ChangeID(), in.Rule, in.Node)
			}
			seen[in.ChangeID()] = true
			if _, ok := exp.final[in.ID]; !ok {
				t.Errorf("replica %s's sink: unexpected incident %s: %s %s node=%s count=%d", r, in.ID, in.Status, in.Rule, in.Node, in.Count)
			}
		}
	}
	fired := map[string]int{}
	last := map[string]correlate.Incident{}
	for _, in := range got.sinks["a"] {
		if in.Status == correlate.StatusFiring {
			fired[in.ID]++
		}
		last[in.ID] = in
	}
	for id, want := range exp.incidents {
		got, ok := last[id]
		switch {
		case !ok:
			t.Errorf("incident %s (%s node=%s) lost: not at the survivor's sink", id, want.Rule, want.Node)
		case fired[id] != 1:
			t.Errorf("incident %s (%s node=%s) fired %d times", id, want.Rule, want.Node, fired[id])
		case got.Status != want.Status || got.Rule != want.Rule || got.Node != want.Node:
			t.Errorf("incident %s: last change %s %s node=%s, want %s %s node=%s", id, got.Status, got.Rule, got.Node, want.Status, want.Rule, want.Node)
		}
	}
	// The correlators' state: every incident with every event counted once.
	for id, n := range exp.final {
		if got.final[id] != n {
			t.Errorf("incident %s: final count %d, want %d", id, got.final[id], n)
		}
	}
	for id, n := range got.final {
		if _, ok := exp.final[id]; !ok {
			t.Errorf("unexpected incident %s (count %d) in the correlators' state", id, n)
		}
	}
	nodesSeen := map[string]bool{}
	for _, in := range got.sinks["a"] {
		nodesSeen[in.Node] = true
	}
	if len(nodesSeen) != len(nodes) {
		t.Errorf("incidents of nodes %v, want all of %v", nodesSeen, nodes)
	}
}

// soRun runs the cluster: it appends the copies chunk by chunk, kills a
// NATS node after a third of them and correlator b (partition 1) after
// two thirds, and waits until everything is processed.
func soRun(t *testing.T, bin, rulesDir string, set *rules.Set, copies map[string][]string, exp soExpected) soOutcome {
	t.Helper()
	dir := t.TempDir()
	natsProcs, urls := soCluster(t, dir, soNATSServer(t))
	natsURL := strings.Join(urls, ",")
	logDir := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for n := range copies {
		if err := os.WriteFile(filepath.Join(logDir, n+".log"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range []string{"ingest", "correlate-a", "correlate-b"} {
				b, _ := os.ReadFile(filepath.Join(dir, name+".log"))
				if len(b) > 6000 {
					b = b[len(b)-6000:]
				}
				t.Logf("--- %s:\n%s", name, b)
			}
		}
	})
	write := func(name, text string) string {
		p := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	common := fmt.Sprintf("nats: {url: %q, replicas: 3}\nhttp: {listen: \"127.0.0.1:0\"}\nshutdown_timeout: 10s\n", natsURL)
	ingestCfg := write("ingest", common+fmt.Sprintf(`node: ingest-host
data_dir: %s
sources:
  nomad_log:
    - paths: [%q]
      read_from: beginning
      poll_interval: 50ms
correlator: {partitions: 2}
`, filepath.Join(dir, "ingest-data"), filepath.Join(logDir, "*.log")))
	corrCfg := func(name string, p int) string {
		return write("correlate-"+name, common+fmt.Sprintf(`data_dir: %s
rules_dir: %s
sinks:
  - {type: file, name: jsonl-%s, path: %q}
correlator:
  partitions: 2
  partition: %d
  snapshot_interval: 200ms
  update_interval: %s
  lateness: %s
`, filepath.Join(dir, "data-"+name), rulesDir, name, filepath.Join(dir, name+".jsonl"), p, soUpdateInterval, soLateness))
	}
	ing := soStart(t, dir, "ingest", bin, "ingest", "--config", ingestCfg, "--log-level", "debug")
	waitFor(t, 20*time.Second, "the ingester to start", func() bool {
		if ing.exited() {
			t.Fatalf("ingest exited:\n%s", ing.log())
		}
		return strings.Contains(ing.log(), "following file")
	})
	corrA := soStart(t, dir, "correlate-a", bin, "correlate", "--config", corrCfg("a", 0), "--log-level", "debug")
	corrB := soStart(t, dir, "correlate-b", bin, "correlate", "--config", corrCfg("b", 1), "--log-level", "debug")
	for _, c := range []struct {
		p    *soProc
		part int
	}{{corrA, 0}, {corrB, 1}} {
		waitFor(t, 20*time.Second, c.p.name+" to take its partition", func() bool {
			if c.p.exited() {
				t.Fatalf("%s exited:\n%s", c.p.name, c.p.log())
			}
			return strings.Contains(c.p.log(), fmt.Sprintf(`msg="partition taken" role=correlator partition=%d`, c.part))
		})
	}

	nc, js := soConnect(t, urls)
	defer nc.Close()
	appendChunk := func(c int) {
		for n, chunks := range copies {
			f, err := os.OpenFile(filepath.Join(logDir, n+".log"), os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(chunks[c]); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		time.Sleep(150 * time.Millisecond) // pacing of the replay, not a wait for a condition
	}
	c := 0
	for ; c < soChunks/3; c++ {
		appendChunk(c)
	}
	// A NATS node dies: every stream has two replicas left.
	stored := soStored(js)
	seq := soSnapshotSeq(js, "correlator-p1")
	natsProcs[1].kill()
	t.Logf("killed nats-server n2 after %d of %d chunks (%d events stored)", c, soChunks, stored)
	for ; c < 2*soChunks/3; c++ {
		appendChunk(c)
	}
	// Once the cluster serves again and correlator b, holding partition 1,
	// has snapshotted some of it after the NATS failure: kill it.
	bID := fmt.Sprintf("/%d/", corrB.cmd.Process.Pid)
	waitFor(t, 30*time.Second, "the cluster to serve again and correlator b to go on with partition 1", func() bool {
		return soStored(js) > stored && soSnapshotSeq(js, "correlator-p1") > seq && strings.Contains(soLease(js, 1), bID)
	})
	corrB.kill()
	t.Logf("killed correlator b (partition 1) after %d of %d chunks", c, soChunks)
	for ; c < soChunks; c++ {
		appendChunk(c)
	}

	// Everything is stored, both partitions processed and acked, and the
	// survivor's sink has delivered everything.
	waitFor(t, 20*time.Second, "correlator a to take partition 1 over", func() bool {
		return strings.Contains(corrA.log(), `msg="partition taken" role=correlator partition=1`)
	})
	var last string
	deadline := time.Now().Add(40 * time.Second)
	for !soDone(js, exp.events, &last) {
		if time.Now().After(deadline) {
			t.Fatalf("not everything stored, correlated and delivered within 40s: %s", last)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, bounded by the deadline
	}
	if corrA.exited() || ing.exited() {
		t.Fatalf("a process died: a exited=%v ingest exited=%v", corrA.exited(), ing.exited())
	}
	o := soOutcome{sinks: map[string][]correlate.Incident{}, final: map[string]int{}}
	o.sinks["a"] = readIncidents(t, filepath.Join(dir, "a.jsonl"))
	o.sinks["b"] = readIncidents(t, filepath.Join(dir, "b.jsonl"))
	for p := range 2 {
		for id, n := range soState(t, js, set, fmt.Sprintf("correlator-p%d", p)) {
			o.final[id] = n
		}
	}
	return o
}

// soDone reports whether every event is stored, both partitions' snapshots
// cover their last event, and the survivor's sink has delivered every
// incident change; last says what is missing.
func soDone(js jetstream.JetStream, events int, last *string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, natslayout.EventsStream)
	if err != nil {
		*last = err.Error()
		return false
	}
	if n := st.CachedInfo().State.Msgs; n != uint64(events) {
		*last = fmt.Sprintf("KLAXON_EVENTS holds %d events of %d", n, events)
		return false
	}
	for p := range 2 {
		m, err := st.GetLastMsgForSubject(ctx, natslayout.PartitionSubjects(p, 2))
		if err != nil {
			*last = fmt.Sprintf("partition %d: %v", p, err)
			return false
		}
		if seq := soSnapshotSeq(js, fmt.Sprintf("correlator-p%d", p)); seq < m.Sequence {
			*last = fmt.Sprintf("partition %d: snapshot covers seq %d of %d", p, seq, m.Sequence)
			return false
		}
	}
	return soDelivered(ctx, js, "jsonl-a", last)
}

// soDelivered reports whether the sink has delivered (acked) every
// incident change; last says what is missing.
func soDelivered(ctx context.Context, js jetstream.JetStream, sink string, last *string) bool {
	ci, err := js.Consumer(ctx, natslayout.IncidentsStream, sinks.ConsumerName(sink))
	if err != nil {
		*last = err.Error()
		return false
	}
	if info := ci.CachedInfo(); info.NumPending != 0 || info.NumAckPending != 0 {
		*last = fmt.Sprintf("sink %s: %d pending, %d unacked", sink, info.NumPending, info.NumAckPending)
		return false
	}
	return true
}

// soStored is the number of events in KLAXON_EVENTS (0 when unknown now).
func soStored(js jetstream.JetStream) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, natslayout.EventsStream)
	if err != nil {
		return 0
	}
	return st.CachedInfo().State.Msgs
}

// soLease is the holder of partition p's lease ("" when unknown now).
func soLease(js jetstream.JetStream, p int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, natslayout.LeasesBucket)
	if err != nil {
		return ""
	}
	e, err := kv.Get(ctx, fmt.Sprintf("partition-%d", p))
	if err != nil {
		return ""
	}
	return string(e.Value())
}

// soSnapshotSeq is the stream sequence a partition's snapshot covers (0
// when there is none or it cannot be read now).
func soSnapshotSeq(js jetstream.JetStream, key string) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, natslayout.StateBucket)
	if err != nil {
		return 0
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		return 0
	}
	var rec struct {
		Seq uint64 `json:"seq"`
	}
	_ = json.Unmarshal(e.Value(), &rec)
	return rec.Seq
}

// soState reads a partition's snapshot: incident id → count of its open
// incidents. Reading 10,000 nodes' state (the soak) takes seconds.
func soState(t *testing.T, js jetstream.JetStream, set *rules.Set, key string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kv, err := js.KeyValue(ctx, natslayout.StateBucket)
	if err != nil {
		t.Fatal(err)
	}
	corr := correlate.New(set, correlate.Options{})
	if _, err := checkpoint.Read(ctx, js, kv, key, corr); err != nil {
		t.Fatalf("checkpoint %s: %v", key, err)
	}
	out := map[string]int{}
	for _, in := range corr.Open() {
		out[in.ID] = in.Count
	}
	return out
}
