package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
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

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/correlate/checkpoint"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/internal/testkit"
	"github.com/klaxon-dev/klaxon/rules"
	"github.com/klaxon-dev/klaxon/sinks"
)

// captureDir is the real crash-loop capture (shared test data beside the repository).
var captureDir = filepath.Join("..", "..", "..", "shared", "testdata", "nomad", "captures", "crashloop-gc-checkrestart")

// shiftedCapture returns the records of the capture's agent log with their
// timestamps moved so that the last one is at end (the capture is replayed
// as if it had just been written), each record (a line and its
// continuation lines) as one string.
func shiftedCapture(t *testing.T, path string, end time.Time) []string {
	t.Helper()
	const layout = "2006-01-02T15:04:05.000Z07:00"
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	var stamps []time.Time
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		var ts time.Time
		if len(l) >= len("2006-01-02T15:04:05.000Z") {
			ts, _ = time.Parse(layout, l[:len("2006-01-02T15:04:05.000Z")])
		}
		lines = append(lines, l)
		stamps = append(stamps, ts)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var last time.Time
	for _, ts := range stamps {
		if ts.After(last) {
			last = ts
		}
	}
	if last.IsZero() {
		t.Fatalf("%s: no timestamps", path)
	}
	delta := end.Sub(last).Truncate(time.Millisecond)
	var recs []string
	for i, l := range lines {
		if stamps[i].IsZero() {
			if len(recs) == 0 {
				recs = append(recs, l)
			} else {
				recs[len(recs)-1] += "\n" + l
			}
			continue
		}
		recs = append(recs, stamps[i].Add(delta).UTC().Format(layout)+l[len("2006-01-02T15:04:05.000Z"):])
	}
	return recs
}

func freePort(t *testing.T) int { return testkit.FreePort(t) }

// captureRun runs the real binary over a growing copy of the capture.
type captureRun struct {
	t        *testing.T
	bin, dir string
	cfgPath  string
	logPath  string
	sinkPath string
	natsURL  string
	proc     *exec.Cmd
	done     chan struct{} // closed when proc exited
	starts   int
}

func newCaptureRun(t *testing.T, bin, name string) *captureRun {
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rulesDir, err := filepath.Abs("../../rules.d")
	if err != nil {
		t.Fatal(err)
	}
	r := &captureRun{t: t, bin: bin, dir: dir,
		cfgPath: filepath.Join(dir, "klaxon.yaml"), logPath: filepath.Join(dir, "nomad.log"), sinkPath: filepath.Join(dir, "incidents.jsonl")}
	port := freePort(t)
	r.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	// update_interval is longer than the capture, so that incident changes
	// depend only on the events and their order (not on when the
	// correlator's clock ticks); the final counts come with the flush at
	// the graceful stop.
	cfg := fmt.Sprintf(`
node: vm
http: {listen: "127.0.0.1:0"}
data_dir: %s
rules_dir: %s
nats: {listen: "127.0.0.1:%d"}
sources:
  nomad_log:
    - paths: [%q]
      read_from: beginning
      poll_interval: 20ms
sinks:
  - type: file
    name: jsonl
    path: %s
    send_timeout: 1s     # the sink consumer's ack wait is send_timeout + 30s
correlator:
  update_interval: 1h
  snapshot_interval: 100ms
`, filepath.Join(dir, "data"), rulesDir, port, r.logPath, r.sinkPath)
	if err := os.WriteFile(r.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.logPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.proc != nil {
			_ = r.proc.Process.Kill()
			<-r.done
		}
		if !t.Failed() {
			return
		}
		logs, _ := filepath.Glob(filepath.Join(dir, "klaxon-*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("--- %s/%s:\n%s", name, filepath.Base(l), b)
		}
	})
	return r
}

// start runs klaxon and waits until its sources run (every role started).
func (r *captureRun) start() {
	r.t.Helper()
	r.starts++
	cmd := exec.Command(r.bin, "run", "--config", r.cfgPath, "--log-level", "debug")
	logPath := filepath.Join(r.dir, fmt.Sprintf("klaxon-%02d.log", r.starts))
	out, err := os.Create(logPath)
	if err != nil {
		r.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.proc = cmd
	done := make(chan struct{})
	r.done = done
	go func() { _ = cmd.Wait(); out.Close(); close(done) }()
	waitFor(r.t, 20*time.Second, "klaxon to start", func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "nomadlog: following file")
	})
}

// exited waits for the process to exit.
func (r *captureRun) exited(what string, d time.Duration) {
	r.t.Helper()
	select {
	case <-r.done:
	case <-time.After(d):
		r.t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

func (r *captureRun) kill() {
	r.t.Helper()
	if err := r.proc.Process.Signal(syscall.SIGKILL); err != nil {
		r.t.Fatal(err)
	}
	r.exited("the killed process to exit", 10*time.Second)
	r.proc = nil
}

func (r *captureRun) stop() {
	r.t.Helper()
	if err := r.proc.Process.Signal(syscall.SIGTERM); err != nil {
		r.t.Fatal(err)
	}
	r.exited("klaxon to stop on SIGTERM", 20*time.Second)
	if !r.proc.ProcessState.Success() {
		r.t.Errorf("klaxon exited with %v after SIGTERM", r.proc.ProcessState)
	}
	r.proc = nil
}

// js connects to the embedded server of the running process.
func (r *captureRun) js() (jetstream.JetStream, func()) {
	r.t.Helper()
	var nc *nats.Conn
	waitFor(r.t, 15*time.Second, "the embedded NATS server", func() bool {
		var err error
		nc, err = nats.Connect(r.natsURL, nats.Timeout(time.Second))
		return err == nil
	})
	js, err := jetstream.New(nc)
	if err != nil {
		r.t.Fatal(err)
	}
	return js, nc.Close
}

func (r *captureRun) appendRecords(recs []string) {
	r.t.Helper()
	appendLines(r.t, r.logPath, recs)
}

// streamState returns the last sequence of a stream and the ack floor of one of its consumers.
func streamState(js jetstream.JetStream, stream, consumer string) (last, msgs, floor, pending uint64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	si, err := st.Info(ctx)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	c, err := st.Consumer(ctx, consumer)
	if err != nil {
		return si.State.LastSeq, si.State.Msgs, 0, 0, err
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return si.State.LastSeq, si.State.Msgs, 0, 0, err
	}
	return si.State.LastSeq, si.State.Msgs, ci.AckFloor.Stream, ci.NumPending + uint64(ci.NumAckPending), nil
}

// checkpointed reports whether the tailer's checkpoint covers the whole log.
func (r *captureRun) checkpointed() bool {
	fi, err := os.Stat(r.logPath)
	if err != nil {
		return false
	}
	b, err := os.ReadFile(filepath.Join(r.dir, "data", "checkpoints.json"))
	if err != nil {
		return false
	}
	var cps map[string]struct {
		Path   string `json:"path"`
		Offset int64  `json:"offset"`
	}
	if json.Unmarshal(b, &cps) != nil {
		return false
	}
	for _, c := range cps {
		if c.Offset == fi.Size() {
			return true
		}
	}
	return false
}

// result is what one run ends with.
type result struct {
	events  uint64                // in KLAXON_EVENTS
	state   map[string]finalState // open incidents in the correlator's snapshot
	changes []string              // change ids in KLAXON_INCIDENTS, sorted
	sink    []correlate.Incident  // the JSONL sink's lines
}

// finish waits until every record is in KLAXON_EVENTS and covered by a
// correlator snapshot and the sink delivered every incident change, reads
// what the run ends with, and stops klaxon gracefully.
func (r *captureRun) finish() result {
	r.t.Helper()
	js, closeNC := r.js()
	defer closeNC()
	waitFor(r.t, 20*time.Second, "the log checkpointed to its end", r.checkpointed)
	var res result
	var lastEvent uint64
	waitFor(r.t, 20*time.Second, "a correlator snapshot covering every event", func() bool {
		last, msgs, floor, _, err := streamState(js, natslayout.EventsStream, "correlator")
		res.events, lastEvent = msgs, last
		return err == nil && last > 0 && floor == last
	})
	res.state = r.snapshotState(js, lastEvent)
	// A change delivered to a process just before its SIGKILL waits for the
	// sink consumer's ack wait (40 s) to be delivered again: allow for it.
	began := time.Now()
	waitFor(r.t, 60*time.Second, "the sink to deliver every incident change", func() bool {
		last, _, floor, pending, err := streamState(js, natslayout.IncidentsStream, sinks.ConsumerName("jsonl"))
		return err == nil && last > 0 && floor == last && pending == 0
	})
	if d := time.Since(began); d > 5*time.Second {
		r.t.Logf("%s: the sink took %v to deliver the last changes (a change in flight at a kill waits for the ack wait)", filepath.Base(r.dir), d.Round(time.Second))
	}
	res.changes = r.streamChanges(js)
	res.sink = readIncidents(r.t, r.sinkPath)
	r.stop()
	return res
}

// snapshotState reads the correlator's checkpoint from KLAXON_STATE through
// the correlator itself (checkpoint.Read, Open): the open incidents and
// their counts.
func (r *captureRun) snapshotState(js jetstream.JetStream, lastEvent uint64) map[string]finalState {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, natslayout.StateBucket)
	if err != nil {
		r.t.Fatal(err)
	}
	set, err := rules.LoadDir("../../rules.d")
	if err != nil {
		r.t.Fatal(err)
	}
	c := correlate.New(set, correlate.Options{})
	seq, err := checkpoint.Read(ctx, js, kv, "correlator", c)
	if err != nil {
		r.t.Fatalf("correlator checkpoint: %v", err)
	}
	if seq != lastEvent {
		r.t.Errorf("checkpoint covers seq %d, want %d", seq, lastEvent)
	}
	out := map[string]finalState{}
	for _, in := range c.Open() {
		out[in.ID] = finalState{in.Status, in.Count}
	}
	return out
}

// streamChanges returns the change ids stored in KLAXON_INCIDENTS, sorted,
// and reports one stored twice.
func (r *captureRun) streamChanges(js jetstream.JetStream) []string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	oc, err := js.OrderedConsumer(ctx, natslayout.IncidentsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		r.t.Fatal(err)
	}
	seen := map[string]bool{}
	var ids []string
	for {
		msg, err := oc.Next(jetstream.FetchMaxWait(500 * time.Millisecond))
		if err != nil {
			break // timed out: no more
		}
		var in correlate.Incident
		if err := json.Unmarshal(msg.Data(), &in); err != nil {
			r.t.Fatalf("undecodable incident change: %v", err)
		}
		if seen[in.ChangeID()] {
			r.t.Errorf("incident change %s stored twice in KLAXON_INCIDENTS", in.ChangeID())
		}
		seen[in.ChangeID()] = true
		ids = append(ids, in.ChangeID())
	}
	sort.Strings(ids)
	return ids
}

type finalState struct {
	Status string
	Count  int
}

// sinkChanges returns the sorted change ids of the sink's lines and
// reports one written twice.
func sinkChanges(t *testing.T, name string, ins []correlate.Incident) []string {
	t.Helper()
	seen := map[string]bool{}
	var ids []string
	for _, in := range ins {
		cid := in.ChangeID()
		if seen[cid] {
			t.Errorf("%s: incident change %s (%s %s seq %d) written twice", name, cid, in.Rule, in.Status, in.Seq)
			continue
		}
		seen[cid] = true
		ids = append(ids, cid)
	}
	sort.Strings(ids)
	return ids
}

// TestKillDuringCaptureReplay is issue 5's kill test with the real binary:
// the real crash-loop capture is written to a tailed log in six parts while
// `klaxon run` is SIGKILLed four times at different points (before the part
// is read, while it is being correlated, after its snapshot) and restarted.
// The incidents at the end (id, final status, count) and the incident
// change ids in the JSONL sink equal those of an uninterrupted run over the
// same input, and no change is written twice.
func TestKillDuringCaptureReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	if _, err := os.Stat(filepath.Join(captureDir, "nomad.log")); err != nil {
		t.Skipf("capture not available: %v", err)
	}
	bin := buildKlaxon(t)
	recs := shiftedCapture(t, filepath.Join(captureDir, "nomad.log"), time.Now().Add(-10*time.Second))
	const parts = 6
	var chunks [][]string
	for i := range parts {
		chunks = append(chunks, recs[i*len(recs)/parts:(i+1)*len(recs)/parts])
	}

	// Uninterrupted.
	// The first part is in the log before klaxon starts: a log shorter than
	// the tailer's fingerprint (256 bytes) at first sight gets another
	// event-id prefix after a crash that came before its first checkpoint.
	// Both runs go at the same time (the killed one mostly waits: a sink
	// change whose acknowledgement the killed embedded server had not yet
	// persisted comes again only after the ack wait).
	var want, got result
	killed := 0
	var starts int
	t.Run("runs", func(t *testing.T) {
		t.Run("uninterrupted", func(t *testing.T) {
			t.Parallel()
			ref := newCaptureRun(t, bin, "uninterrupted")
			ref.appendRecords(chunks[0])
			ref.start()
			for _, c := range chunks[1:] {
				ref.appendRecords(c)
			}
			want = ref.finish()
		})
		t.Run("killed", func(t *testing.T) {
			t.Parallel()
			// After part i, wait kills[i] (negative: no kill), then SIGKILL and restart.
			kills := []time.Duration{-1, 0, 40 * time.Millisecond, -1, 150 * time.Millisecond, 700 * time.Millisecond}
			run := newCaptureRun(t, bin, "killed")
			run.appendRecords(chunks[0])
			run.start()
			for i, c := range chunks {
				if i > 0 {
					run.appendRecords(c)
				}
				if kills[i] < 0 {
					continue
				}
				if kills[i] > 0 {
					time.Sleep(kills[i]) // the point of the kill, not a wait for a result
				}
				run.kill()
				killed++
				run.start()
			}
			got = run.finish()
			starts = run.starts
		})
	})
	if t.Failed() {
		return
	}
	t.Logf("%d records, %d events; %d open incidents, %d changes; %d kills, %d starts", len(recs), got.events, len(got.state), len(got.changes), killed, starts)

	if got.events != want.events {
		t.Errorf("KLAXON_EVENTS holds %d events after the kills, %d without", got.events, want.events)
	}
	rules := map[string]bool{}
	for _, in := range want.sink {
		rules[in.Rule] = true
	}
	for _, r := range []string{"nomad.client.gc_pressure", "nomad.task.crash_loop", "nomad.task.unhealthy_restarts"} {
		if !rules[r] {
			t.Errorf("the uninterrupted run has no %s incident (rules: %v)", r, rules)
		}
	}
	if len(want.state) == 0 {
		t.Error("the uninterrupted run ends with no open incident")
	}
	for id, w := range want.state {
		if g, ok := got.state[id]; !ok {
			t.Errorf("incident %s (%+v) missing after the kills", id, w)
		} else if g != w {
			t.Errorf("incident %s ends %+v after the kills, %+v without", id, g, w)
		}
	}
	for id, g := range got.state {
		if _, ok := want.state[id]; !ok {
			t.Errorf("incident %s (%+v) only after the kills", id, g)
		}
	}
	if strings.Join(got.changes, " ") != strings.Join(want.changes, " ") {
		t.Errorf("KLAXON_INCIDENTS differs:\nkilled:        %v\nuninterrupted: %v", got.changes, want.changes)
	}
	wantSink, gotSink := sinkChanges(t, "uninterrupted", want.sink), sinkChanges(t, "killed", got.sink)
	if strings.Join(gotSink, " ") != strings.Join(wantSink, " ") {
		t.Errorf("the JSONL sink differs:\nkilled:        %v\nuninterrupted: %v", gotSink, wantSink)
	}
	if strings.Join(wantSink, " ") != strings.Join(want.changes, " ") {
		t.Errorf("the JSONL sink %v does not hold every change of KLAXON_INCIDENTS %v", wantSink, want.changes)
	}
}
