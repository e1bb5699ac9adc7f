package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/internal/testkit"
	"github.com/klaxon-dev/klaxon/rules"
)

// The soak runs klaxon as a fleet feeds it: every simulated node's agent
// log is the real crash-loop capture (its own node name and ID) played
// KLAXON_SOAK_LOOPS times, each time 30 minutes later in event time,
// appended at a steady overall rate, every node a step at a time;
// `klaxon ingest` (edge filter on) tails them all and `klaxon correlate`
// correlates them, on a three-node cluster of Debian's nats-server with R3
// streams. Meanwhile the correlator is SIGKILLed and restarted
// KLAXON_SOAK_KILLS times and one NATS node is killed and later restarted.
// At the end the incidents at the sink equal those of an undisturbed
// in-process replay of the same input in the same steps (each fired as
// often, same last status, same final counts), KLAXON_EVENTS holds each
// event the edge keeps exactly once, and the processes' memory stayed
// flat: the correlator's time follows the events (lateness 5s, no idle
// sources), so each loop's windows expire and its incidents resolve once
// every node is into the next loop, and the state is what a fleet in its
// steady state keeps.
//
// make test runs a short version (100 nodes, 2 loops, 8,000 lines/s);
// make soak the full one (10,000 nodes, 2 loops at 40,000 lines/s:
// 26.4 M lines, 11 minutes).

// soakParams are the soak's size, from the environment.
type soakParams struct {
	nodes int           // simulated nodes
	rate  int           // lines per second over all nodes
	kills int           // correlator SIGKILLs
	loops int           // times each node plays the capture
	wait  time.Duration // for the end state after the last line
}

func soakParamsFromEnv(t *testing.T) soakParams {
	t.Helper()
	p := soakParams{nodes: 100, rate: 8000, kills: 2, loops: 2, wait: 2 * time.Minute}
	for name, dst := range map[string]*int{"KLAXON_SOAK_NODES": &p.nodes, "KLAXON_SOAK_RATE": &p.rate, "KLAXON_SOAK_KILLS": &p.kills, "KLAXON_SOAK_LOOPS": &p.loops} {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive number", name, v)
			}
			*dst = n
		}
	}
	if p.nodes > 1000 {
		p.wait = 10 * time.Minute
	}
	return p
}

// soakLoopShift is how much later in event time each loop of the capture
// plays: more than its span (3.5 min) plus the longest window (10 min), so
// that a loop's windows have expired once every node is into the next.
const soakLoopShift = 30 * time.Minute

// soakCapture is the capture's lines, each loop's with its times shifted,
// to be rewritten per node.
type soakCapture []string

// loadSoakCapture reads the capture and lays out loops plays of it.
func loadSoakCapture(t *testing.T, loops int) soakCapture {
	t.Helper()
	raw, err := os.ReadFile(soCapture)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(raw), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	out := make(soakCapture, 0, loops*len(lines))
	for k := range loops {
		for n, l := range lines {
			shifted, err := shiftLine(l, time.Duration(k)*soakLoopShift)
			if err != nil {
				t.Fatalf("%s:%d: %v", soCapture, n+1, err)
			}
			out = append(out, shifted)
		}
	}
	return out
}

// shiftLine moves the leading timestamp of an agent log line by d.
func shiftLine(line string, d time.Duration) (string, error) {
	if d == 0 {
		return line, nil
	}
	ts, rest, ok := strings.Cut(line, " ")
	if !ok {
		return "", fmt.Errorf("no timestamp: %q", line)
	}
	at, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return "", err
	}
	return at.Add(d).UTC().Format("2006-01-02T15:04:05.000Z07:00") + " " + rest, nil
}

func soakNode(i int) string { return fmt.Sprintf("node-%05d", i) }

// chunk returns node i's lines [lo, hi) of the capture, as its own.
func (c soakCapture) chunk(i, lo, hi int) string {
	text := strings.Join(c[min(lo, len(c)):min(hi, len(c))], "")
	text = strings.ReplaceAll(text, "node_name=vm", "node_name="+soakNode(i))
	return strings.ReplaceAll(text, soCaptureNodeID, fmt.Sprintf("%08x", i+1)+soCaptureNodeID[8:])
}

// soakReference is the undisturbed outcome of the nodes' logs, read as the
// soak writes them (a step of every node's log at a time) by a correlator
// configured as the soak's (lateness 5s, no idle sources) that sees what
// the edge filter keeps, its clock advanced after each step as the durable
// correlator's tick does.
func soakReference(t *testing.T, set *rules.Set, c soakCapture, nodes, step int) soExpected {
	t.Helper()
	r := newSoReplayer(set, correlate.Options{UpdateInterval: soUpdateInterval, Lateness: soakLateness, Idle: soakIdle})
	r.edge = true
	for k := 0; k*step < len(c); k++ {
		for i := range nodes {
			r.feed(soakNode(i), c.chunk(i, k*step, (k+1)*step))
		}
		r.advance(time.Now().Add(-soakLateness))
	}
	return r.result()
}

// The soak correlator's time: it follows the events (the wall clock is
// days ahead of the capture), held back by the slowest node.
const (
	soakLateness = 5 * time.Second
	soakIdle     = 1000 * time.Hour
)

func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS cluster and the klaxon binaries")
	}
	natsBin, err := exec.LookPath("nats-server")
	if err != nil {
		if os.Getenv("KLAXON_REQUIRE_EXTERNAL") == "1" {
			t.Fatal("Debian's nats-server is not installed (make deps)")
		}
		t.Skip("Debian's nats-server is not installed")
	}
	p := soakParamsFromEnv(t)
	bin := buildKlaxon(t)
	rulesDir, err := filepath.Abs("../../rules.d")
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.LoadDir(rulesDir)
	if err != nil {
		t.Fatal(err)
	}
	capture := loadSoakCapture(t, p.loops)
	step := max(1, p.rate*5/p.nodes) // the writer's: about 5 s of lines per round
	exp := soakReference(t, set, capture, p.nodes, step)
	if len(exp.final) < 3*p.nodes {
		t.Fatalf("reference: %d incidents open at the end, want the capture's 3 per node", len(exp.final))
	}
	lines := len(capture) * p.nodes
	t.Logf("%d nodes, %d lines at %d/s (%v); reference: %d events, %d kept at the edge, %d incidents",
		p.nodes, lines, p.rate, time.Duration(float64(lines)/float64(p.rate)*float64(time.Second)).Round(time.Second),
		exp.events, exp.kept, len(exp.final))

	dir := t.TempDir()
	natsProcs, urls := soCluster(t, dir, natsBin)
	logDir := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range p.nodes {
		if err := os.WriteFile(filepath.Join(logDir, soakNode(i)+".log"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name, text string) string {
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	common := fmt.Sprintf("nats: {url: %q, replicas: 3}\nhttp: {listen: \"127.0.0.1:0\"}\nshutdown_timeout: 10s\n", strings.Join(urls, ","))
	ingestCfg := write("ingest", common+fmt.Sprintf(`node: ingest-host
data_dir: %s
sources:
  edge_filter: true
  nomad_log:
    - paths: [%q]
      read_from: beginning
      poll_interval: 200ms
`, filepath.Join(dir, "ingest-data"), filepath.Join(logDir, "*.log")))
	corrCfg := write("correlate", common+fmt.Sprintf(`data_dir: %s
rules_dir: %s
sinks:
  - {type: file, name: jsonl, path: %q}
correlator:
  snapshot_interval: 1s
  update_interval: %s
  lateness: %s
  idle: %s
`, filepath.Join(dir, "data-correlate"), rulesDir, filepath.Join(dir, "sink.jsonl"), soUpdateInterval, soakLateness, soakIdle))
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "ingest.log"))
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("--- ingest:\n%s", b)
			// Every run of the correlator: its notices, warnings and errors.
			logs, _ := filepath.Glob(filepath.Join(dir, "correlate*.log"))
			for _, f := range logs {
				b, _ := os.ReadFile(f)
				var keep []string
				for _, line := range strings.Split(string(b), "\n") {
					if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") || strings.Contains(line, "state restored") || strings.Contains(line, "partition taken") {
						keep = append(keep, line)
					}
				}
				t.Logf("--- %s:\n%s", filepath.Base(f), strings.Join(keep, "\n"))
			}
		}
	})
	// Each start of the correlator logs to its own file; "correlate.log"
	// is the current one. A restart does not wait for it to take over
	// (its lease first expires: correlator.lease_ttl), so that the
	// disturbances keep their times.
	corrRuns := 0
	startCorr := func(wait bool) *soProc {
		corrRuns++
		name := "correlate"
		if corrRuns > 1 {
			_ = os.Rename(filepath.Join(dir, "correlate.log"), filepath.Join(dir, fmt.Sprintf("correlate-%d.log", corrRuns-1)))
		}
		c := soStart(t, dir, name, bin, "correlate", "--config", corrCfg)
		if !wait {
			return c
		}
		waitFor(t, time.Minute, "the correlator to start", func() bool {
			if c.exited() {
				t.Fatalf("correlate exited:\n%s", c.log())
			}
			return strings.Contains(c.log(), "state restored")
		})
		return c
	}
	corr := startCorr(true)
	ing := soStart(t, dir, "ingest", bin, "ingest", "--config", ingestCfg)
	// The edge filter has the correlator's rules before the first line:
	// until then it would publish everything.
	waitFor(t, time.Minute, "the ingester's edge filter to have the rules", func() bool {
		if ing.exited() {
			t.Fatalf("ingest exited:\n%s", ing.log())
		}
		return strings.Contains(ing.log(), "edge filter: rules updated")
	})

	// Memory: sampled every 2 s.
	var (
		memMu   sync.Mutex
		samples []soakSample
		curPID  = corr.cmd.Process.Pid
	)
	start := time.Now()
	stopMem := make(chan struct{})
	memDone := make(chan struct{})
	go func() {
		defer close(memDone)
		tk := time.NewTicker(2 * time.Second)
		defer tk.Stop()
		for {
			select {
			case <-stopMem:
				return
			case <-tk.C:
				memMu.Lock()
				samples = append(samples, soakSample{time.Since(start), testkit.ResidentMB(ing.cmd.Process.Pid), testkit.ResidentMB(curPID)})
				memMu.Unlock()
			}
		}
	}()

	// The writer: the capture in steps of `step` lines per node, a group
	// of nodes at a time, paced to the rate.
	const groups = 10
	rounds := (len(capture) + step - 1) / step
	total := time.Duration(float64(lines) / float64(p.rate) * float64(time.Second))
	writeErr := make(chan error, 1)
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		for r := range rounds {
			for g := range groups {
				for i := g; i < p.nodes; i += groups {
					f, err := os.OpenFile(filepath.Join(logDir, soakNode(i)+".log"), os.O_APPEND|os.O_WRONLY, 0o644)
					if err == nil {
						_, err = f.WriteString(capture.chunk(i, r*step, (r+1)*step))
						f.Close()
					}
					if err != nil {
						writeErr <- err
						return
					}
				}
				k := r*groups + g + 1
				time.Sleep(time.Until(start.Add(total * time.Duration(k) / time.Duration(rounds*groups))))
			}
		}
	}()

	// The disturbances, spread over the run: correlator kills at k/(kills+1),
	// NATS node n2 down from 40 % to 60 %.
	type disturbance struct {
		at   time.Duration
		what string
	}
	var plan []disturbance
	for k := 1; k <= p.kills; k++ {
		plan = append(plan, disturbance{total * time.Duration(k) / time.Duration(p.kills+1), "kill correlator"})
	}
	plan = append(plan, disturbance{total * 4 / 10, "kill nats"}, disturbance{total * 6 / 10, "restart nats"})
	slices.SortFunc(plan, func(a, b disturbance) int { return int(a.at - b.at) })
	for _, s := range plan {
		time.Sleep(time.Until(start.Add(s.at)))
		switch s.what {
		case "kill correlator":
			corr.kill()
			t.Logf("%v: SIGKILLed the correlator (run %d)", time.Since(start).Round(time.Second), corrRuns)
			corr = startCorr(false)
			memMu.Lock()
			curPID = corr.cmd.Process.Pid
			memMu.Unlock()
		case "kill nats":
			natsProcs[1].kill()
			t.Logf("%v: killed nats-server n2", time.Since(start).Round(time.Second))
		case "restart nats":
			natsProcs[1] = soStart(t, dir, "nats-n2-again", natsBin, "-c", filepath.Join(dir, "n2.conf"))
			t.Logf("%v: restarted nats-server n2", time.Since(start).Round(time.Second))
		}
	}
	<-writing
	select {
	case err := <-writeErr:
		t.Fatal(err)
	default:
	}
	wrote := time.Since(start)
	t.Logf("wrote %d lines in %v (%.0f lines/s)", lines, wrote.Round(time.Second), float64(lines)/wrote.Seconds())

	nc, js := soConnect(t, urls)
	defer nc.Close()
	var last string
	deadline := time.Now().Add(p.wait)
	for !soakDone(js, exp.kept, &last) {
		if time.Now().After(deadline) {
			t.Fatalf("not everything stored, correlated and delivered within %v of the last line: %s", p.wait, last)
		}
		if corr.exited() || ing.exited() {
			t.Fatalf("a process died: correlate exited=%v ingest exited=%v", corr.exited(), ing.exited())
		}
		time.Sleep(200 * time.Millisecond) // polling interval, bounded by the deadline
	}
	t.Logf("everything processed %v after the last line (%v in all: %.0f lines/s end to end)",
		time.Since(start.Add(wrote)).Round(time.Second), time.Since(start).Round(time.Second), float64(lines)/time.Since(start).Seconds())
	close(stopMem)
	<-memDone

	got := readIncidents(t, filepath.Join(dir, "sink.jsonl"))
	soakCompare(t, exp, got, soState(t, js, set, "correlator"))
	memMu.Lock()
	defer memMu.Unlock()
	soakMemory(t, samples)
}

// soakCompare checks the sink's incidents and the final state against
// the reference.
func soakCompare(t *testing.T, exp soExpected, got []correlate.Incident, final map[string]int) {
	t.Helper()
	seen := map[string]bool{}
	fired := map[string]int{}
	last := map[string]correlate.Incident{}
	for _, in := range got {
		if seen[in.ChangeID()] {
			t.Errorf("change %s (%s %s) delivered twice", in.ChangeID(), in.Rule, in.Node)
		}
		seen[in.ChangeID()] = true
		if _, ok := exp.final[in.ID]; !ok {
			t.Errorf("unexpected incident %s: %s %s node=%s count=%d", in.ID, in.Status, in.Rule, in.Node, in.Count)
		}
		if in.Status == correlate.StatusFiring {
			fired[in.ID]++
		}
		last[in.ID] = in
	}
	bad := 0
	for id, want := range exp.incidents {
		g, ok := last[id]
		switch {
		case !ok:
			t.Errorf("incident %s (%s node=%s) lost: not at the sink", id, want.Rule, want.Node)
		case fired[id] != exp.fired[id]:
			t.Errorf("incident %s (%s node=%s) fired %d times, want %d", id, want.Rule, want.Node, fired[id], exp.fired[id])
		case g.Status != want.Status || g.Rule != want.Rule || g.Node != want.Node:
			t.Errorf("incident %s: last change %s %s node=%s, want %s %s node=%s", id, g.Status, g.Rule, g.Node, want.Status, want.Rule, want.Node)
		default:
			continue
		}
		if bad++; bad > 20 {
			t.Fatal("too many differences")
		}
	}
	for id, n := range exp.final {
		if final[id] != n {
			t.Errorf("incident %s: final count %d, want %d", id, final[id], n)
		}
	}
	if len(final) != len(exp.final) {
		t.Errorf("the correlator's state has %d open incidents, want %d", len(final), len(exp.final))
	}
	t.Logf("sink: %d changes of %d incidents, as the reference", len(got), len(exp.incidents))
}

// soakSample is the resident memory of the ingester and the running
// correlator at a time of the run.
type soakSample struct {
	at          time.Duration
	ingest, cor float64 // MB
}

// soakMemory checks that memory stayed flat: each process's resident set
// in the last third of the run peaks within 1.5× (plus 32 MB for the
// ingester, 64 MB for the correlator) of its peak in the middle third (the
// state of a loop is released as the next fills; the correlator is
// restarted several times meanwhile, and takes up the backlog of its
// downtime after each start).
func soakMemory(t *testing.T, samples []soakSample) {
	t.Helper()
	if len(samples) < 6 {
		t.Logf("memory: %d samples, too few to judge", len(samples))
		return
	}
	ingest := func(s soakSample) float64 { return s.ingest }
	cor := func(s soakSample) float64 { return s.cor }
	var series []string
	for i := 0; i < len(samples); i += max(1, len(samples)/12) {
		s := samples[i]
		series = append(series, fmt.Sprintf("%v: ingest %.0f MB, correlate %.0f MB", s.at.Round(time.Second), s.ingest, s.cor))
	}
	t.Logf("memory (resident):\n  %s", strings.Join(series, "\n  "))
	if a, b := testkit.MidEndPeaks(samples, ingest); testkit.Grew(a, b, 32) {
		t.Errorf("the ingester's memory grew: peak %.0f MB in the middle third, %.0f MB in the last", a, b)
	}
	if a, b := testkit.MidEndPeaks(samples, cor); testkit.Grew(a, b, 64) {
		t.Errorf("the correlator's memory grew: peak %.0f MB in the middle third, %.0f MB in the last", a, b)
	}
}

// soakDone reports whether KLAXON_EVENTS holds every event the edge keeps
// exactly once, the correlator's checkpoint covers the last of them, and
// the sink has delivered every incident change; last says what is missing.
func soakDone(js jetstream.JetStream, kept int, last *string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, natslayout.EventsStream)
	if err != nil {
		*last = err.Error()
		return false
	}
	info := st.CachedInfo().State
	if info.Msgs != uint64(kept) {
		*last = fmt.Sprintf("KLAXON_EVENTS holds %d events of %d", info.Msgs, kept)
		return false
	}
	if seq := soSnapshotSeq(js, "correlator"); seq < info.LastSeq {
		*last = fmt.Sprintf("the checkpoint covers seq %d of %d", seq, info.LastSeq)
		return false
	}
	return soDelivered(ctx, js, "jsonl", last)
}
